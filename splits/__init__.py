"""The FL-LLaMA split: partition spec, parts, wire, parties, training strategies and KV-cached inference.

Names are imported lazily, so `from splits.partition import parse_split` does not pull in torch."""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"SplitSpec": "splits.partition", "parse_split": "splits.partition", "split_sort_key": "splits.partition",
            "build_split": "splits.partition", "SplitRuntime": "splits.runtime"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'splits' has no attribute {name!r}")
