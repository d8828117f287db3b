"""The corpus registry: victim corpora (private data whose leakage is scored) and auxiliary public corpora
(what the attacker may train on). `load_corpus(name, ...)` is the one entry point for both."""
from __future__ import annotations

import inspect
import os
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from flbench.data.records import Record
from flbench.core.errors import FlbenchError
from flbench.core.registry import Registry

Role = Literal["victim", "aux"]


class SmallCorpusWarning(UserWarning):
    """More records were asked for than the corpus holds; all of them are returned."""


@dataclass(frozen=True)
class CorpusEntry:
    role: Role
    description: str
    # load(limit, seed, data_dir, **options) -> records; may return more than `limit` (load_corpus cuts)
    load: Callable[..., list[Record]]
    files: tuple[str, ...] = ()  # paths under the data directory that the loader reads
    hub_id: str | None = None  # the same data on the Hugging Face hub (provenance)

    @property
    def is_victim(self) -> bool:
        return self.role == "victim"

    def options(self) -> list[str]:
        """Keyword options the loader accepts beyond limit/seed/data_dir."""
        params = inspect.signature(self.load).parameters
        return [n for n, p in params.items() if n not in ("limit", "seed", "data_dir") and p.kind == p.KEYWORD_ONLY]


datasets: Registry[CorpusEntry] = Registry("dataset")


def corpus(name: str, role: Role, description: str, files: tuple[str, ...] = (), hub_id: str | None = None):
    """Decorator: register a loader function under `name`."""

    def deco(fn: Callable[..., list[Record]]) -> Callable[..., list[Record]]:
        datasets.register(name)(CorpusEntry(role, description, fn, files, hub_id))
        return fn

    return deco


def victim_names() -> list[str]:
    return [n for n, e in datasets.items() if e.is_victim]


def aux_names() -> list[str]:
    return [n for n, e in datasets.items() if not e.is_victim]


def shuffled(records: list[Record], seed: int) -> list[Record]:
    out = list(records)
    random.Random(seed).shuffle(out)
    return out


def load_corpus(name: str, limit: int | None = None, seed: int = 0,
                data_dir: str | os.PathLike | None = None, **options) -> list[Record]:
    """Up to `limit` records of corpus `name` (all when `limit` is None), chosen deterministically by `seed`.

    When the corpus holds fewer than `limit` records, all of them are returned and a `SmallCorpusWarning`
    is emitted through `warnings` (the CLI can show it; tests can catch it). Missing files raise a
    FlbenchError naming the expected file and how to point flbench at it (--data-dir / FLBENCH_DATA_DIR).
    """
    entry = datasets.get(name)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise FlbenchError(f"limit must be a positive integer, got {limit!r}")
    unknown = sorted(set(options) - set(entry.options()))
    if unknown:
        raise FlbenchError(f"dataset {name!r} has no option {', '.join(unknown)}; "
                           f"accepted: {', '.join(entry.options()) or 'none'}")
    records = entry.load(limit=limit, seed=seed, data_dir=data_dir, **options)
    if limit is not None and len(records) < limit:
        warnings.warn(f"dataset {name!r} has {len(records)} records, fewer than the {limit} asked for; "
                      f"using all {len(records)}", SmallCorpusWarning, stacklevel=2)
    return records if limit is None else records[:limit]
