"""Sweeps: the grid of a validated spec (flbench.experiments.spec), expanded deterministically, sharded,
resumable, kill-safe.

A cell is a `flbench.pipeline.config.RunConfig` (frozen): the same config `flbench run` builds, so a run and
a sweep cell with the same settings hash alike (`RunConfig.hash`, over the resolved config). The order of
cells does not depend on the order of lists in the YAML, on key order or on number spelling (1 == 1.0).
"""
from __future__ import annotations

import copy
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flbench.core.errors import FlbenchError
from flbench.experiments import records as rec
from flbench.experiments.spec import MAX_SPEC_BYTES, SweepSpec, load_spec, parse_spec  # noqa: F401 (re-exported)
from flbench.pipeline.config import RunConfig, validate

Spec = SweepSpec  # the validated spec
_SHARD_RE = __import__("re").compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


# ---------------------------------------------------------------------------------------- expansion

def _split_key(split: str | None) -> tuple[int, int]:
    if split is None:
        return (-1, -1)
    p, q = split.split(",")
    return (int(p), int(q))


def _value_key(v: Any) -> tuple:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, rec.canonical_json(v))


def cell_sort_key(cell: RunConfig) -> tuple:
    """Natural, YAML-order-independent order: model, task, split (centralized first), defense, params, ..."""
    c = cell.resolved()
    d = c["defense"]
    return (
        c["model"],
        rec.canonical_json(c["task"]) if c["task"] is not None else "",
        _split_key(c["split"]),
        (d["name"] != "none", d["name"]),
        tuple((k, _value_key(v)) for k, v in sorted(d["params"].items())),
        rec.canonical_json(c["finetune"]),
        c["seed"],
        rec.canonical_json(c["attacks"]),
        rec.canonical_json(c["victims"]),
        rec.canonical_json(c["attack_params"]),
        rec.canonical_json(c),
    )


def make_cell(model: str, split: str | None, defense: dict, task: dict | None, finetune: dict | None,
              attacks: Iterable[str], attack_params: dict, victims: dict | None, seed: int) -> dict:
    """A plain, unvalidated cell dict in the shape of a schema-1 record's config (synthetic records in tests).
    New code builds a `RunConfig`, whose `resolved()` is what records store."""
    attacks = sorted(set(attacks))
    return rec.normalize_numbers({
        "model": model,
        "split": split,
        "defense": {"name": defense["name"], "params": dict(defense.get("params") or {})},
        "task": None if task is None else {"name": task["name"], "limit": task.get("limit")},
        "finetune": copy.deepcopy(finetune),
        "attacks": attacks,
        "attack_params": {a: copy.deepcopy(attack_params[a]) for a in attacks if a in attack_params},
        "victims": copy.deepcopy(victims) if attacks else None,
        "seed": int(seed),
    })


def expand(spec: SweepSpec) -> list[RunConfig]:
    """The cells of a spec (every one validated), deduplicated by config hash, in `cell_sort_key` order."""
    cells: dict[str, RunConfig] = {}
    for c in spec.cells():
        cells.setdefault(c.hash, c)
    return sorted(cells.values(), key=cell_sort_key)


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 1 <= I <= N."""
    m = _SHARD_RE.match(text) if isinstance(text, str) else None
    i, n = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    if not m or n < 1 or not 1 <= i <= n:
        raise FlbenchError(f"--shard {text!r} is not accepted; expected I/N with 1 <= I <= N, e.g. 1/4")
    return i, n


def shard(cells: list, spec: str) -> list:
    """The cells of shard I of N: those whose index in `cells` is congruent to I-1 modulo N."""
    i, n = parse_shard(spec)
    return [c for k, c in enumerate(cells) if k % n == i - 1]


_shard_cells = shard  # run_sweep's `shard` argument shadows the function


_HASH_PREFIX_RE = __import__("re").compile(r"^[0-9a-f]{4,}$")


def select_cells(cells: list, text: str) -> list:
    """The cells named by `text`, a comma-separated list of config hashes or unique prefixes of them (at
    least 4 hex digits, as `--dry-run` prints them), in the order given: a resumable sweep can run the cells
    that decide a verdict first without editing its spec, and the cells keep their hashes (their records are
    those of the full grid). A name matching no cell or several, or named twice, is a one-line error."""
    names = [t.strip().lower() for t in text.split(",")] if isinstance(text, str) else []
    if not names or not all(names):
        raise FlbenchError(f"--cells {text!r} is not accepted; expected comma-separated cell hashes as "
                           "--dry-run prints them, e.g. d2a1727a,07fd7dd8")
    chosen: list = []
    for name in names:
        if not _HASH_PREFIX_RE.match(name):
            raise FlbenchError(f"--cells: {name!r} is not a cell hash; expected at least 4 hex digits of a "
                               "hash that --dry-run prints")
        hits = [c for c in cells if c.hash.startswith(name)]
        if len(hits) != 1:
            what = "matches no cell of this spec" if not hits else f"matches {len(hits)} cells; give more digits"
            raise FlbenchError(f"--cells: {name!r} {what} (list them with --dry-run)")
        if any(c is hits[0] for c in chosen):
            raise FlbenchError(f"--cells: cell {hits[0].hash} is named twice")
        chosen.append(hits[0])
    return chosen


def check_splits(spec: SweepSpec, cells: Iterable[RunConfig], n_blocks: Callable[[str], int]) -> None:
    """Every split of `cells` fits its model (`n_blocks(model)`: the model's block count, e.g. from the
    loaded model): a split the model cannot take is one line naming the spec key, before any cell runs."""
    from splits.partition import parse_split

    for model, split in sorted({(c.model, c.split) for c in cells if c.split is not None}):
        try:
            parse_split(split).validate(n_blocks(model))
        except FlbenchError as e:
            i = spec.splits.index(split) if split in spec.splits else None
            where = f"splits[{i}]" if i is not None else "splits"
            raise FlbenchError(f"{spec.source}: {where}: {split!r} does not fit model {model!r}: {e}") from None


def legacy_done(out_dir: str | os.PathLike) -> set[str]:
    """Cells finished by schema-1 records (written before configs were resolved), as today's hashes.

    A schema-1 record's config holds only what its run spelled out, so its hash differs from today's cell
    hash. Its config resolved today, with the defense and attack parameters the record says it really ran
    with, is the cell it is; a resumed sweep skips that cell instead of running it again beside the old
    records. Unreadable files and configs that no longer validate are ignored (those cells run again)."""
    out = Path(out_dir)
    done = rec.done_hashes(out)
    cells: dict[str, list[dict]] = {}
    for p in sorted(out.glob(f"*{rec.RECORD_SUFFIX}")) if out.is_dir() else []:
        if rec.is_temp(p.name) or p.name.split("__")[0] not in done:
            continue
        try:
            r = rec.read_record(p)
        except FlbenchError:
            continue
        if r["schema"] == 1:
            cells.setdefault(r["config_hash"], []).append(r)
    hashes = set()
    for rs in cells.values():
        cfg = dict(rs[0]["config"])
        cfg["defense"] = {"name": rs[0]["defense"].get("name"), "params": rs[0]["defense"].get("params") or {}}
        cfg["attack_params"] = {r["attack"]["name"]: r["attack"].get("params") or {} for r in rs if r["attack"]}
        try:
            hashes.add(validate(RunConfig, cfg).hash)
        except FlbenchError:
            continue
    return hashes


def finished(out_dir: str | os.PathLike) -> set[str]:
    """Hashes of the finished cells in `out_dir`: marker and records present (`records.done_hashes`), plus
    the cells of schema-1 records (`legacy_done`)."""
    return rec.done_hashes(out_dir) | legacy_done(out_dir)


def cell_label(cell: RunConfig) -> str:
    """A short human description of a cell for logs."""
    return cell.label()


# ------------------------------------------------------------------------------------------- running

@dataclass
class SweepSummary:
    out_dir: str
    total: int                  # cells in this (shard of the) sweep
    skipped: int = 0            # already done before this run (resume)
    ran: int = 0                # finished in this run
    records: int = 0            # record files written in this run
    failed: list[dict] = field(default_factory=list)   # {"config_hash", "cell", "error", "traceback"}
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style access to `to_dict()` fields (failed entries there hold config_hash, cell, error)."""
        return self.to_dict().get(key, default)

    def to_dict(self) -> dict:
        return {"out_dir": self.out_dir, "total": self.total, "skipped": self.skipped, "ran": self.ran,
                "records": self.records, "seconds": round(self.seconds, 3), "ok": self.ok,
                "failed": [{k: f[k] for k in ("config_hash", "cell", "error")} for f in self.failed]}


def _cells_from(spec_or_cells: SweepSpec | list | str | os.PathLike) -> list[RunConfig]:
    if isinstance(spec_or_cells, SweepSpec):
        return expand(spec_or_cells)
    if isinstance(spec_or_cells, (str, os.PathLike)):
        return expand(load_spec(spec_or_cells))
    return [c if isinstance(c, RunConfig) else validate(RunConfig, c, source="sweep cell") for c in spec_or_cells]


def _check_cell_records(cell: RunConfig, h: str, records: Any) -> list[dict]:
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise FlbenchError(f"run_cell must return a list of record dicts, got {type(records).__name__}")
    out = []
    for r in records:
        r = dict(r)
        r.setdefault("config", cell.resolved())
        r.setdefault("config_hash", h)
        if r["config_hash"] != h or rec.config_hash(r["config"]) != h:
            raise FlbenchError(f"a record of cell {h} carries another config (hash {rec.config_hash(r['config'])}); "
                               "records must hold the cell's resolved config unchanged")
        out.append(r)
    want = set(cell.attacks) or {rec.NO_ATTACK}
    got = [rec.record_attack(r) for r in out]
    if sorted(got) != sorted(want):
        raise FlbenchError(f"cell {h} returned records for attacks {sorted(got)}; expected one each for {sorted(want)}")
    return out


def run_sweep(spec_or_cells: SweepSpec | list | str | os.PathLike, out_dir: str | os.PathLike,
              run_cell: Callable[[RunConfig], list[dict]], resume: bool = True, shard: str | None = None,
              progress: bool = True) -> SweepSummary:
    """Run every cell not yet done; write each cell's records atomically, then its `.done` marker.

    The whole spec is validated (every cell) before the first cell runs. `run_cell(cell)` gets the cell (a
    frozen RunConfig) and returns its records: one per attack in `cell.attacks` (one with `attack: None` when
    the cell has no attack), each holding `config` == `cell.resolved()`. A cell that
    raises (or returns bad records) is logged in one line on stderr, reported in `summary.failed`, and the
    sweep goes on. Killing the process at any moment loses no finished cell: a cell is skipped on resume
    only when its marker and all its records are on disk; an unfinished cell is run again and its record
    files are overwritten. `resume=False` runs every cell again (overwriting).
    """
    from tqdm import tqdm

    start = time.monotonic()
    cells = _cells_from(spec_or_cells)
    if shard is not None:
        cells = _shard_cells(cells, shard)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rec.clean_temp(out)
    done = finished(out) if resume else set()
    hashes = [c.hash for c in cells]
    todo = [(h, c) for h, c in zip(hashes, cells) if h not in done]
    summary = SweepSummary(out_dir=str(out), total=len(cells), skipped=len(cells) - len(todo))

    bar = tqdm(total=len(cells), initial=summary.skipped, unit="cell", desc="sweep", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    bar.set_postfix(left=len(todo), failed=0)
    try:
        for k, (h, cell) in enumerate(todo):
            bar.set_description(f"sweep {h[:8]}")
            rec.unmark(h, out)
            try:
                records = _check_cell_records(cell, h, run_cell(cell))
                rec.write_cell(records, out, h)
            except Exception as e:  # one bad cell must not stop the sweep; KeyboardInterrupt still does
                msg = f"{type(e).__name__}: {e}".replace("\n", " ")
                summary.failed.append({"config_hash": h, "cell": cell.resolved(), "error": msg,
                                       "traceback": traceback.format_exc()})
                line = f"flbench sweep: cell {h} ({cell.label()}) failed: {msg}"
                if progress:
                    bar.write(line, file=sys.stderr)
                else:
                    print(line, file=sys.stderr, flush=True)
            else:
                summary.ran += 1
                summary.records += len(records)
            bar.update(1)
            bar.set_postfix(left=len(todo) - k - 1, failed=len(summary.failed))
    finally:
        bar.close()
        summary.seconds = time.monotonic() - start
    return summary
