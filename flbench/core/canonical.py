"""Canonical JSON, number normalisation, config hashes and strict JSON output (no NaN/Infinity)."""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from flbench.core.errors import FlbenchError

# --------------------------------------------------------------------------------------------- hashing

def canonical_json(obj: Any) -> str:
    """One canonical text for a JSON-able object: sorted keys, no whitespace, UTF-8 kept, floats as repr.

    NaN and ±inf are refused (they have no JSON spelling and would make hashes ambiguous).
    """
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as e:
        raise FlbenchError(f"cannot hash a config holding NaN or infinity ({e}); use null instead") from None
    except TypeError as e:
        raise FlbenchError(f"config is not plain JSON data: {e}") from None


def normalize_numbers(obj: Any) -> Any:
    """Recursively turn integral floats into ints (1.0 -> 1) so that 1 and 1.0 hash the same.

    Booleans stay booleans; tuples become lists; other values are returned unchanged.
    """
    if isinstance(obj, bool):
        return obj
    if isinstance(obj, float) and math.isfinite(obj) and obj.is_integer() and abs(obj) < 2**53:
        return int(obj)
    if isinstance(obj, dict):
        return {str(k): normalize_numbers(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [normalize_numbers(v) for v in obj]
    return obj


def config_hash(config: dict) -> str:
    """sha256 of the canonical JSON of the (number-normalised) config, first 16 hex characters."""
    return hashlib.sha256(canonical_json(normalize_numbers(config)).encode("utf-8")).hexdigest()[:16]


def content_key(inputs: Any) -> str:
    """The name of a cache entry (fitted attacker, fine-tuned client) whose inputs are `inputs`: sha256 of their
    canonical JSON, first 32 hex characters. Callers normalise numbers first where 1 and 1.0 must agree."""
    return hashlib.sha256(canonical_json(inputs).encode("utf-8")).hexdigest()[:32]


def finite_or_null(x: Any) -> Any:
    """Strict JSON data: every non-finite float (NaN, ±inf; e.g. the SNR of a noiseless run) becomes None,
    recursively through dicts, lists and tuples."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite_or_null(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_null(v) for v in x]
    return x


def strict_json(obj: Any, **kwargs: Any) -> str:
    """`json.dumps` that never prints NaN/Infinity (they become null): what `--json` and result files print."""
    return json.dumps(finite_or_null(obj), allow_nan=False, **kwargs)
