"""Sweeps: a YAML grid of benchmark cells, expanded deterministically, sharded, resumable, kill-safe.

Spec (read with `yaml.safe_load` only, never executed; every key is checked):

    name: default                       # optional; never part of a cell's hash
    model: [smollm2-135m]               # a name or a list
    splits: ["1,1", "2,2", "4,4"]       # "P,Q" strings (quote them: YAML reads 1,1 unquoted as a string too,
                                        # but [1,1] is a list of numbers)
    defenses:                           # default [{name: none}]; every list-valued parameter is expanded
      - none                            # shorthand for {name: none}
      - {name: gaussian, relative: true, sigma: [0.5, 1, 2, 4]}
      - {name: dp-forward, clip: 5.0, noise_multiplier: [1.0, 4.0]}
    attacks: [embedding-nn, learned-inversion, output-inversion]   # default []
    attack_params: {learned-inversion: {steps: 200}}               # optional, passed through, not expanded
    tasks: [sst2, {name: xsum, limit: 20}]                          # default []; a name or {name, limit}
    finetune: null                      # or a mapping passed to the cell runner, e.g. {steps: 50}
    victims: {data: private-records, limit: 50}   # keys: data | data_file, limit, aux_data, aux_limit,
                                        # max_length; data, limit and aux_data [xsum, sst2] are filled in
    centralized_reference: true         # default false: add one cell per (model, task, seed) with split null,
                                        # defense none, no attacks
    seed: 0                             # an int or a list of ints (expanded)

A cell is a plain JSON-able dict:

    {"model", "split" ("P,Q" | None), "defense": {"name", "params"}, "task": {"name", "limit"} | None,
     "finetune": dict | None, "attacks": [sorted names], "attack_params": {attack: params},
     "victims": dict | None (None when the cell has no attack), "seed": int}

Its `config_hash` does not depend on the order of lists in the YAML, on key order, or on number spelling
(1 == 1.0); defaults are not filled in, so `{name: gaussian, sigma: 1}` and the same with `relative: false`
are different cells.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from flbench.experiments import records as rec
from flbench.core.errors import FlbenchError

TOP_KEYS = ("name", "model", "splits", "defenses", "attacks", "attack_params", "tasks", "finetune", "victims",
            "centralized_reference", "seed")
VICTIM_KEYS = ("data", "data_file", "aux_data", "aux_limit", "limit", "max_length")
TASK_KEYS = ("name", "limit")
# the same defaults `flbench run` writes into its cell, so a run and a sweep cell hash alike
DEFAULT_VICTIMS = {"data": "private-records", "limit": 50, "aux_data": ["xsum", "sst2"]}
_SPLIT_RE = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*$")
_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Spec:
    """A validated sweep spec; `expand(spec)` gives its cells."""

    name: str
    models: tuple[str, ...]
    splits: tuple[str, ...]
    defenses: tuple[dict, ...]          # expanded: {"name", "params"} with scalar params
    attacks: tuple[str, ...]
    attack_params: dict
    tasks: tuple[dict, ...]             # {"name", "limit"}
    finetune: dict | None
    victims: dict
    centralized_reference: bool
    seeds: tuple[int, ...]
    source: str = "spec"


# ------------------------------------------------------------------------------------------ parsing

def _kind(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, bool, int, float))


class _Ctx:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, msg: str) -> FlbenchError:
        return FlbenchError(f"{self.source}: {where}: {msg}".replace("\n", " "))


def _as_list(v: Any) -> list:
    return list(v) if isinstance(v, list) else [v]


def _json_data(ctx: _Ctx, where: str, v: Any) -> Any:
    """Check that v is plain JSON data (what YAML gives for mappings/lists/scalars), with string keys."""
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise ctx.fail(where, f"key {k!r} is not accepted; keys must be strings")
            _json_data(ctx, f"{where}.{k}", x)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _json_data(ctx, f"{where}[{i}]", x)
    elif isinstance(v, float) and not math.isfinite(v):
        raise ctx.fail(where, f"{v!r} is not accepted; use a finite number")
    elif not _is_scalar(v):
        raise ctx.fail(where, f"{v!r} ({_kind(v)}) is not accepted; expected plain YAML data")
    return v


def _pos_int(ctx: _Ctx, where: str, v: Any, allow_none: bool = False, allow_zero: bool = False) -> int | None:
    if v is None and allow_none:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or v < (0 if allow_zero else 1):
        lo = "a non-negative" if allow_zero else "a positive"
        raise ctx.fail(where, f"{v!r} is not accepted; expected {lo} integer" + (" or null" if allow_none else ""))
    return v


def _name(ctx: _Ctx, where: str, v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ctx.fail(where, f"{v!r} is not accepted; expected a name (string)")
    return v.strip()


def _registry(kind: str):
    if kind == "defense":
        from defenses import defenses as reg
    elif kind == "attack":
        from attacks import attacks as reg
    else:
        from flbench.tasks import tasks as reg
    return reg


def _check_registered(ctx: _Ctx, where: str, kind: str, name: str) -> Any:
    reg = _registry(kind)
    if name not in reg:
        raise ctx.fail(where, f"unknown {kind} {name!r}; known: {', '.join(reg.names())}")
    return reg.get(name)


def _check_params(ctx: _Ctx, where: str, kind: str, name: str, cls: Any, params: Iterable[str]) -> None:
    if not dataclasses.is_dataclass(cls):
        return
    accepted = [f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")]
    for p in params:
        if p not in accepted:
            raise ctx.fail(f"{where}.{p}", f"{kind} {name!r} takes no parameter {p!r}; "
                                            f"accepted: {', '.join(accepted) or '(none)'}")


def _parse_defenses(ctx: _Ctx, raw: Any, check_names: bool) -> list[dict]:
    if raw is None:
        raw = [{"name": "none"}]
    if not isinstance(raw, list) or not raw:
        raise ctx.fail("defenses", f"{raw!r} is not accepted; expected a non-empty list of "
                                   "{name: ..., <param>: value or [values]} entries")
    out: list[dict] = []
    for i, entry in enumerate(raw):
        where = f"defenses[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or "name" not in entry:
            raise ctx.fail(where, f"{entry!r} is not accepted; expected a name or a mapping with 'name'")
        name = _name(ctx, f"{where}.name", entry["name"])
        params = {k: v for k, v in entry.items() if k != "name"}
        for k, v in params.items():
            if not isinstance(k, str):
                raise ctx.fail(where, f"parameter {k!r} is not accepted; parameter names are strings")
            values = _as_list(v)
            if not values:
                raise ctx.fail(f"{where}.{k}", "[] is not accepted; give a value or a non-empty list of values")
            for x in values:
                if not _is_scalar(x) or isinstance(x, float) and not math.isfinite(x):
                    raise ctx.fail(f"{where}.{k}", f"{x!r} is not accepted; expected a finite number, "
                                                   "boolean, string or null, or a list of them")
        if check_names:
            cls = _check_registered(ctx, f"{where}.name", "defense", name)
            _check_params(ctx, where, "defense", name, cls, params)
        keys = sorted(params)
        for combo in itertools.product(*(_as_list(params[k]) for k in keys)):
            out.append({"name": name, "params": rec.normalize_numbers(dict(zip(keys, combo)))})
    return out


def _parse_tasks(ctx: _Ctx, raw: Any, check_names: bool) -> list[dict]:
    if raw is None:
        return []
    out = []
    for i, entry in enumerate(_as_list(raw)):
        where = f"tasks[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or "name" not in entry:
            raise ctx.fail(where, f"{entry!r} is not accepted; expected a task name or {{name, limit}}")
        for k in entry:
            if k not in TASK_KEYS:
                raise ctx.fail(f"{where}.{k}", f"unknown key; accepted: {', '.join(TASK_KEYS)}")
        name = _name(ctx, f"{where}.name", entry["name"])
        if check_names:
            _check_registered(ctx, f"{where}.name", "task", name)
        out.append({"name": name, "limit": _pos_int(ctx, f"{where}.limit", entry.get("limit"), allow_none=True)})
    return out


def _parse_splits(ctx: _Ctx, raw: Any) -> list[str]:
    if raw is None:
        raise ctx.fail("splits", 'missing; expected a list of "P,Q" strings, e.g. ["1,1", "2,2"]')
    values = _as_list(raw)
    if not values:
        raise ctx.fail("splits", '[] is not accepted; expected a non-empty list of "P,Q" strings')
    out = []
    for i, s in enumerate(values):
        m = _SPLIT_RE.match(s) if isinstance(s, str) else None
        if not m:
            raise ctx.fail(f"splits[{i}]", f'{s!r} is not accepted; expected a quoted "P,Q" string of two '
                                          'non-negative integers, e.g. "2,2"')
        out.append(f"{int(m.group(1))},{int(m.group(2))}")
    return out


def _parse_victims(ctx: _Ctx, raw: Any) -> dict:
    """Victim settings with the defaults filled in (data, limit, aux_data), as `flbench run` does."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ctx.fail("victims", f"{raw!r} is not accepted; expected a mapping with keys {', '.join(VICTIM_KEYS)}")
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k not in VICTIM_KEYS:
            raise ctx.fail(f"victims.{k}", f"unknown key; accepted: {', '.join(VICTIM_KEYS)}")
        if k in ("limit", "aux_limit", "max_length"):
            out[k] = _pos_int(ctx, f"victims.{k}", v, allow_none=(k == "limit"))
        elif k == "aux_data":
            vals = _as_list(v)
            if not vals or not all(isinstance(x, str) and x for x in vals):
                raise ctx.fail("victims.aux_data", f"{v!r} is not accepted; expected a dataset name or a list of them")
            out[k] = list(dict.fromkeys(vals))  # order kept: it may decide which auxiliary texts are used
        else:
            out[k] = _name(ctx, f"victims.{k}", v)
    if "data" in out and "data_file" in out:
        raise ctx.fail("victims", "give either data or data_file, not both")
    defaults = {k: v for k, v in DEFAULT_VICTIMS.items() if not (k == "data" and "data_file" in out)}
    return {**copy.deepcopy(defaults), **out}


def parse_spec(data: Any, source: str = "spec", check_names: bool = True) -> Spec:
    """Validate a spec already loaded from YAML (a mapping). `check_names` checks defense/attack/task names
    and parameter names against the registries (imports torch); it never changes the cells or their hashes."""
    ctx = _Ctx(source)
    if not isinstance(data, dict):
        raise FlbenchError(f"{source}: the spec must be a YAML mapping (key: value lines), got {_kind(data)}")
    for k in data:
        if k not in TOP_KEYS:
            raise ctx.fail(str(k), f"unknown key; accepted: {', '.join(TOP_KEYS)}")
    _json_data(ctx, "spec", data)

    name = data.get("name", Path(source).stem if source != "spec" else "sweep")
    name = _name(ctx, "name", str(name) if _is_number(name) else name)
    if "model" not in data:
        raise ctx.fail("model", "missing; expected a model name or a list of them, e.g. [smollm2-135m]")
    models = [_name(ctx, f"model[{i}]", m) for i, m in enumerate(_as_list(data["model"]))]
    if not models:
        raise ctx.fail("model", "[] is not accepted; expected at least one model name")
    splits = _parse_splits(ctx, data.get("splits"))
    defenses = _parse_defenses(ctx, data.get("defenses"), check_names)

    attacks_raw = data.get("attacks") or []
    attacks = [_name(ctx, f"attacks[{i}]", a) for i, a in enumerate(_as_list(attacks_raw))]
    for i, a in enumerate(attacks):
        if check_names:
            _check_registered(ctx, f"attacks[{i}]", "attack", a)
    attacks = sorted(set(attacks))

    ap_raw = data.get("attack_params") or {}
    if not isinstance(ap_raw, dict):
        raise ctx.fail("attack_params", f"{ap_raw!r} is not accepted; expected {{attack: {{param: value}}}}")
    attack_params: dict[str, dict] = {}
    for a, params in ap_raw.items():
        if a not in attacks:
            raise ctx.fail(f"attack_params.{a}", f"not one of the sweep's attacks; accepted: {', '.join(attacks) or '(none)'}")
        if not isinstance(params, dict):
            raise ctx.fail(f"attack_params.{a}", f"{params!r} is not accepted; expected a mapping of parameters")
        if check_names:
            _check_params(ctx, f"attack_params.{a}", "attack", a, _registry("attack").get(a), params)
        attack_params[a] = rec.normalize_numbers(params)

    tasks = _parse_tasks(ctx, data.get("tasks"), check_names)

    finetune = data.get("finetune")
    if finetune is not None:
        if not isinstance(finetune, dict):
            raise ctx.fail("finetune", f"{finetune!r} is not accepted; expected null or a mapping, e.g. {{steps: 50}}")
        if "steps" in finetune:
            _pos_int(ctx, "finetune.steps", finetune["steps"])
        finetune = rec.normalize_numbers(finetune)

    victims = _parse_victims(ctx, data.get("victims"))
    central = data.get("centralized_reference", False)
    if not isinstance(central, bool):
        raise ctx.fail("centralized_reference", f"{central!r} is not accepted; expected true or false")
    seeds_raw = _as_list(data.get("seed", 0))
    if not seeds_raw:
        raise ctx.fail("seed", "[] is not accepted; expected an integer or a list of integers")
    seeds = sorted({_pos_int(ctx, "seed", s, allow_zero=True) for s in seeds_raw})
    if not attacks and not tasks:
        raise ctx.fail("attacks", "the sweep runs nothing: give at least one attack or one task")

    return Spec(name=name, models=tuple(dict.fromkeys(models)), splits=tuple(dict.fromkeys(splits)),
                defenses=tuple(defenses), attacks=tuple(attacks), attack_params=attack_params,
                tasks=tuple(tasks), finetune=finetune, victims=victims, centralized_reference=central,
                seeds=tuple(seeds), source=source)


def load_spec(path: str | os.PathLike, check_names: bool = True) -> Spec:
    """Read and validate a sweep spec with `yaml.safe_load` (YAML tags such as !!python/object are refused)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FlbenchError(f"sweep spec {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FlbenchError(f"sweep spec {path} cannot be read: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        if "constructor" in problem and "tag" in problem:
            problem += " (YAML tags are refused: the spec is read with yaml.safe_load, never executed)"
        raise FlbenchError(f"{path}: not a valid sweep spec: {where}{problem}".replace("\n", " ")) from None
    return parse_spec(data, source=str(path), check_names=check_names)


# ---------------------------------------------------------------------------------------- expansion

def _split_key(split: str | None) -> tuple[int, int]:
    if split is None:
        return (-1, -1)
    p, q = split.split(",")
    return (int(p), int(q))


def _value_key(v: Any) -> tuple:
    if _is_number(v):
        return (0, float(v), "")
    return (1, 0.0, rec.canonical_json(v))


def cell_sort_key(cell: dict) -> tuple:
    """Natural, YAML-order-independent order: model, task, split (centralized first), defense, params, ..."""
    d = cell["defense"]
    return (
        cell["model"],
        rec.canonical_json(cell["task"]) if cell["task"] is not None else "",
        _split_key(cell["split"]),
        (d["name"] != "none", d["name"]),
        tuple((k, _value_key(v)) for k, v in sorted(d["params"].items())),
        rec.canonical_json(cell["finetune"]),
        cell["seed"],
        rec.canonical_json(cell["attacks"]),
        rec.canonical_json(cell["victims"]),
        rec.canonical_json(cell["attack_params"]),
    )


def make_cell(model: str, split: str | None, defense: dict, task: dict | None, finetune: dict | None,
              attacks: Iterable[str], attack_params: dict, victims: dict | None, seed: int) -> dict:
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


def expand(spec: Spec) -> list[dict]:
    """The grid of cells of a spec, deduplicated by config hash, in `cell_sort_key` order."""
    cells: dict[str, dict] = {}
    tasks: list[dict | None] = list(spec.tasks) or [None]
    for model, split, defense, task, seed in itertools.product(spec.models, spec.splits, spec.defenses, tasks,
                                                               spec.seeds):
        c = make_cell(model, split, defense, task, spec.finetune, spec.attacks, spec.attack_params,
                      spec.victims, seed)
        cells.setdefault(rec.config_hash(c), c)
    if spec.centralized_reference:
        for model, task, seed in itertools.product(spec.models, spec.tasks, spec.seeds):
            c = make_cell(model, None, {"name": "none", "params": {}}, task, spec.finetune, [], {}, None, seed)
            cells.setdefault(rec.config_hash(c), c)
    return sorted(cells.values(), key=cell_sort_key)


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 1 <= I <= N."""
    m = _SHARD_RE.match(text) if isinstance(text, str) else None
    i, n = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    if not m or n < 1 or not 1 <= i <= n:
        raise FlbenchError(f"--shard {text!r} is not accepted; expected I/N with 1 <= I <= N, e.g. 1/4")
    return i, n


def shard(cells: list[dict], spec: str) -> list[dict]:
    """The cells of shard I of N: those whose index in `cells` is congruent to I-1 modulo N."""
    i, n = parse_shard(spec)
    return [c for k, c in enumerate(cells) if k % n == i - 1]


_shard_cells = shard  # run_sweep's `shard` argument shadows the function


def cell_label(cell: dict) -> str:
    """A short human description of a cell for logs."""
    d = cell["defense"]
    params = ",".join(f"{k}={v}" for k, v in sorted(d["params"].items()))
    parts = [cell["model"], f"split {cell['split']}" if cell["split"] else "centralized",
             d["name"] + (f"({params})" if params else "")]
    if cell.get("task"):
        parts.append(cell["task"]["name"])
    if cell.get("attacks"):
        parts.append("+".join(cell["attacks"]))
    return " ".join(parts)


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


def _cells_from(spec_or_cells: Spec | list[dict] | str | os.PathLike) -> list[dict]:
    if isinstance(spec_or_cells, Spec):
        return expand(spec_or_cells)
    if isinstance(spec_or_cells, (str, os.PathLike)):
        return expand(load_spec(spec_or_cells))
    cells = [rec.normalize_numbers(c) for c in spec_or_cells]
    for c in cells:
        if not isinstance(c, dict):
            raise FlbenchError(f"a sweep cell must be a dict, got {type(c).__name__}")
    return cells


def _check_cell_records(cell: dict, h: str, records: Any) -> list[dict]:
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise FlbenchError(f"run_cell must return a list of record dicts, got {type(records).__name__}")
    out = []
    for r in records:
        r = dict(r)
        r.setdefault("config", cell)
        r.setdefault("config_hash", h)
        if r["config_hash"] != h or rec.config_hash(r["config"]) != h:
            raise FlbenchError(f"a record of cell {h} carries another config (hash {rec.config_hash(r['config'])}); "
                               "records must hold the cell config unchanged")
        out.append(r)
    want = set(cell.get("attacks") or []) or {rec.NO_ATTACK}
    got = [rec.record_attack(r) for r in out]
    if sorted(got) != sorted(want):
        raise FlbenchError(f"cell {h} returned records for attacks {sorted(got)}; expected one each for {sorted(want)}")
    return out


def run_sweep(spec_or_cells: Spec | list[dict] | str | os.PathLike, out_dir: str | os.PathLike,
              run_cell: Callable[[dict], list[dict]], resume: bool = True, shard: str | None = None,
              progress: bool = True) -> SweepSummary:
    """Run every cell not yet done; write each cell's records atomically, then its `.done` marker.

    `run_cell(cell)` gets a copy of the cell and returns its records: one per attack in `cell["attacks"]`
    (one with `attack: None` when the cell has no attack), each holding `config` == the cell. A cell that
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
    done = rec.done_hashes(out) if resume else set()
    hashes = [rec.config_hash(c) for c in cells]
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
                records = _check_cell_records(cell, h, run_cell(copy.deepcopy(cell)))
                rec.write_cell(records, out, h)
            except Exception as e:  # one bad cell must not stop the sweep; KeyboardInterrupt still does
                msg = f"{type(e).__name__}: {e}".replace("\n", " ")
                summary.failed.append({"config_hash": h, "cell": cell, "error": msg,
                                       "traceback": traceback.format_exc()})
                line = f"flbench sweep: cell {h} ({cell_label(cell)}) failed: {msg}"
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
