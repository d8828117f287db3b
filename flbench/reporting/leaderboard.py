"""The leaderboard: one row per run record, derived (never hand-edited) and byte-deterministic.

Columns, in order:

    model, split ("P,Q" or "centralized"), defense, noise_sigma, relative, snr, epsilon, delta, finetune_steps,
    attack, attack_data, attack_n, token_accuracy, token_accuracy_ci_low, token_accuracy_ci_high, rouge_l,
    pii_recovery, <other attack metrics, sorted>, task, task_n, utility, u_<utility metric> (sorted),
    utility_ref, dcs, pareto, wire_bytes, seconds, config_hash, commit

`utility` is the task's primary metric; `commit` carries a "-dirty" suffix when the record was produced
from a working tree with uncommitted changes. The record's date is left out on purpose: the same records
always give the same bytes, and a rerun of identical cells changes only what actually changed. Attack
metrics given as {"mean", "ci_low", "ci_high"} contribute their mean (and, for token_accuracy, the CI bounds).

Wall-clock columns: only `seconds` (the record's `timings.total_s`, the whole cell's wall time on the machine
that ran it, including work shared between the cell's attacks). It varies from machine to machine and run
to run; every other column is a deterministic function of the configuration and seeds (given the same
library versions).

The defense columns come from the defense itself: the registered class, built with the record's parameters,
says its noise scale (`noise_sigma`, σ per coordinate; dp-forward: z·C) and its unit (`relative`: σ is a
multiple of RMS(h_A)), and its family (the undefended reference below is the family "none"). A record
whose defense this installation does not know (or whose parameters it refuses) falls back to the record's
own `noise_sigma` / `relative` / `family` fields. `snr`, `epsilon` and `delta` are measurements of the run
and always come from the record. The attack's primary metric (AP below) is the record's `attack.primary` (which the runner takes from the
attack class's `primary_metric`), else the registered class's `primary_metric`; `df.attrs["primary_metric"]`
maps each attack to it for the plots. Records of schema 1 and 2
are read alike (only the top-level blocks defense/attack/task/finetune/wire/timings and `config` are used).

DCS, the Defense Capability Score of VFLAIR (Zou et al., "VFLAIR: A Research Library and Benchmark for
Vertical Federated Learning", ICLR 2024, arXiv 2310.09827) as used by VFLAIR-LLM (Gu, Fan, Sun, Liu, Ye,
"VFLAIR-LLM: A Comprehensive Framework and Benchmark for Split Learning of LLMs", KDD 2025,
arXiv 2508.03097, doi:10.1145/3711896.3737411):

    DCS = 1 / (1 + sqrt((1 - β)(AP - AP*)² + β(MP - MP*)²)),  β = 0.5, AP* = 0,

AP = the attack's primary metric (recovery, in [0, 1]), MP = the task utility, MP* = `utility_ref` = the
undefended utility: the mean utility of the records with the same model, split, task config, fine-tuning
config and seed and a defense of the family "none"; if the sweep has no such record, the centralized reference (split null)
of the same model, task config, fine-tuning config and seed. DCS is NaN (empty in the CSV) when any of AP,
MP, MP* is missing: a record without an attack, without a task, or without any undefended reference.
DCS ∈ (0, 1]; 1 means the attack recovers nothing and utility is untouched.

Pareto flag: within each (model, task, attack, attack_data) group, a row is on the front if no other row
of the group has utility ≥ and attack recovery (AP) ≤ with at least one strict. Rows without utility or
AP are never on the front.
"""
from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from flbench.core.errors import FlbenchError
from flbench.experiments import records as rec
from flbench.reporting.tables import markdown_table
from splits.partition import split_sort_key

BETA = 0.5
AP_STAR = 0.0
FLOAT_FORMAT = "%.6g"
FIXED_ATTACK_METRICS = ("token_accuracy", "rouge_l", "pii_recovery")
HEAD_COLUMNS = ["model", "split", "defense", "noise_sigma", "relative", "snr", "epsilon", "delta",
                "finetune_steps", "attack", "attack_data", "attack_n", "token_accuracy", "token_accuracy_ci_low",
                "token_accuracy_ci_high", "rouge_l", "pii_recovery"]
TAIL_COLUMNS = ["utility_ref", "dcs", "pareto", "wire_bytes", "seconds", "config_hash", "commit"]
INT_COLUMNS = ("finetune_steps", "attack_n", "task_n", "wire_bytes")
MD_COLUMNS = ["model", "split", "defense", "noise_sigma", "snr", "epsilon", "attack", "token_accuracy",
              "pii_recovery", "task", "utility", "dcs", "pareto"]
CENTRALIZED = "centralized"
NAN = float("nan")


def _f(v: Any) -> float:
    """A metric value as float: plain numbers, {"mean": ...} dicts; anything else is NaN."""
    if isinstance(v, dict):
        v = v.get("mean")
    if isinstance(v, bool) or v is None:
        return NAN
    try:
        return float(v)
    except (TypeError, ValueError):
        return NAN


def _ci(v: Any, key: str) -> float:
    return _f(v.get(key)) if isinstance(v, dict) else NAN


def _int(v: Any) -> int | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) else None


def _finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def dcs(ap: float, mp: float, mp_star: float, beta: float = BETA, ap_star: float = AP_STAR) -> float:
    """VFLAIR's Defense Capability Score (see the module docstring); NaN if an input is missing."""
    if not all(_finite(float(x)) for x in (ap, mp, mp_star)):
        return NAN
    return 1.0 / (1.0 + math.sqrt((1.0 - beta) * (ap - ap_star) ** 2 + beta * (mp - mp_star) ** 2))


@functools.lru_cache(maxsize=None)
def _defense_view(name: str, params_json: str) -> tuple[str, float, bool] | None:
    """(family, σ, relative) as the registered defense class says, or None if it cannot say."""
    from defenses import make_defense

    try:
        d = make_defense(name, **json.loads(params_json))
        scale = d.noise_scale()
    except (FlbenchError, NotImplementedError):  # unknown defense, refused params, or no noise scale
        return None
    return d.family, float(scale.value), scale.relative


def describe_defense(name: str, block: dict) -> dict[str, Any]:
    """{"family", "noise_sigma", "relative"} of a record's defense block: asked from the registered defense
    class built with the block's params; the record's own fields when the class cannot answer."""
    view = _defense_view(name, json.dumps(block.get("params") or {}, sort_keys=True))
    if view is not None:
        return {"family": view[0], "noise_sigma": view[1], "relative": view[2]}
    relative = block.get("relative")
    return {"family": block.get("family"), "noise_sigma": _f(block.get("noise_sigma")),
            "relative": relative if isinstance(relative, bool) else None}


def defense_family(name: Any) -> str | None:
    """The family a registered defense class declares ("none", "additive-noise", "dp", ...), else None."""
    from defenses import defenses

    return defenses.get(name).family if isinstance(name, str) and name in defenses else None


@functools.lru_cache(maxsize=None)
def attack_primary(name: Any, recorded: str | None = None) -> str:
    """The attack's primary metric: the record's `attack.primary` (the runner writes the attack class's
    `primary_metric` there), else what the registered attack class declares, else token_accuracy. The class
    is asked only when the record is silent: importing the attacks loads torch and transformers (seconds)."""
    if recorded:
        return recorded
    from attacks import attacks

    if isinstance(name, str) and name in attacks:
        return attacks.get(name).primary_metric
    return "token_accuracy"


def _registered_primary(name, metrics: dict) -> str | None:
    """The task's primary metric as the registry defines it now (records written before a task declared
    its primary metric may carry another one); None for unknown tasks."""
    if not name:
        return None
    try:
        from flbench.tasks.base import primary_metric

        p = primary_metric(name)
    except Exception:  # a task this installation does not know: fall back to the record
        return None
    return p if p in metrics else None


def _row(r: dict) -> tuple[dict, dict]:
    """(visible columns, hidden keys used for references, sorting and grouping) of one record."""
    cfg = r.get("config") or {}
    model = (r.get("model") or {}).get("name") or cfg.get("model")
    split = r["split"] if "split" in r else cfg.get("split")
    d = r.get("defense") or {}
    dname = d.get("name") or (cfg.get("defense") or {}).get("name") or "none"
    if "params" not in d and isinstance(cfg.get("defense"), dict):
        d = {**d, "params": cfg["defense"].get("params") or {}}
    dview = describe_defense(dname, d)
    ft = r.get("finetune") if r.get("finetune") is not None else cfg.get("finetune")
    a = r.get("attack") or {}
    am = a.get("metrics") or {}
    t = r.get("task") or {}
    tm = t.get("metrics") or {}
    primary_u = _registered_primary(t.get("name"), tm) or t.get("primary") or (
        next(iter(sorted(tm))) if len(tm) == 1 else None)
    commit = r.get("commit")
    row: dict[str, Any] = {
        "model": model,
        "split": CENTRALIZED if split is None else str(split),
        "defense": dname,
        "noise_sigma": dview["noise_sigma"],
        "relative": dview["relative"],
        "snr": _f(d.get("snr")),
        "epsilon": _f(d.get("epsilon")),
        "delta": _f(d.get("delta")),
        "finetune_steps": _int((ft or {}).get("steps")) if ft else 0,
        "attack": a.get("name"),
        "attack_data": a.get("data"),
        "attack_n": _int(a.get("n")),
        "token_accuracy": _f(am.get("token_accuracy")),
        "token_accuracy_ci_low": _ci(am.get("token_accuracy"), "ci_low"),
        "token_accuracy_ci_high": _ci(am.get("token_accuracy"), "ci_high"),
        "rouge_l": _f(am.get("rouge_l")),
        "pii_recovery": _f(am.get("pii_recovery")),
        "task": t.get("name"),
        "task_n": _int(t.get("n")),
        "utility": _f(tm.get(primary_u)) if primary_u else NAN,
        "wire_bytes": _int((r.get("wire") or {}).get("bytes_total")),
        "seconds": _f((r.get("timings") or {}).get("total_s")),
        "config_hash": r.get("config_hash"),
        "commit": None if commit is None else commit + ("-dirty" if r.get("dirty") else ""),
    }
    for m, v in am.items():
        if m not in FIXED_ATTACK_METRICS:
            row[m] = _f(v)
    for m, v in tm.items():
        row[f"u_{m}"] = _f(v)
    ap_name = attack_primary(a.get("name"), a.get("primary")) if a else None
    hidden = {
        "family": dview["family"],
        "ap": _f(am.get(ap_name)) if a else NAN,
        "ap_name": ap_name,
        "task_key": rec.canonical_json(cfg.get("task")) if "task" in cfg else rec.canonical_json(t.get("name")),
        "ft_key": rec.canonical_json(rec.normalize_numbers(cfg.get("finetune"))),
        "seed": rec.canonical_json(cfg.get("seed", (r.get("seeds") or {}).get("seed"))),
        "attack_metrics": [m for m in am if m not in FIXED_ATTACK_METRICS],
        "utility_metrics": [f"u_{m}" for m in tm],
    }
    return row, hidden


def _nan_key(x: Any) -> tuple:
    if isinstance(x, float) and math.isnan(x) or x is None:
        return (1, 0.0)
    return (0, float(x))


def _sort_key(pair: tuple[dict, dict]) -> tuple:
    row, hidden = pair
    return (str(row["model"] or ""), str(row["task"] or ""), str(row["attack"] or ""), str(row["attack_data"] or ""),
            split_sort_key(row["split"]), (hidden["family"] != "none", row["defense"]), str(row["relative"]),
            _nan_key(row["noise_sigma"]), _nan_key(row["epsilon"]), _nan_key(row["finetune_steps"]),
            str(row["config_hash"] or ""))


def pareto_flags(utility: Sequence[float], recovery: Sequence[float]) -> list[bool]:
    """True where no other point has utility >= and recovery <= with at least one strict (NaN: False)."""
    pts = [(u, a) for u, a in zip(utility, recovery)]
    out = []
    for i, (u, a) in enumerate(pts):
        if not (_finite(u) and _finite(a)):
            out.append(False)
            continue
        dominated = any(j != i and _finite(u2) and _finite(a2) and u2 >= u and a2 <= a and (u2 > u or a2 < a)
                        for j, (u2, a2) in enumerate(pts))
        out.append(not dominated)
    return out


def build(records: Iterable[dict]):
    """One row per record (see the module docstring for columns, DCS and the Pareto flag), sorted."""
    import pandas as pd

    pairs = [_row(r) for r in records]
    pairs.sort(key=_sort_key)
    rows = [p[0] for p in pairs]
    hidden = [p[1] for p in pairs]

    # MP*: undefended utility at the same split, else the centralized reference.
    undefended: dict[tuple, list[float]] = {}
    central: dict[tuple, list[float]] = {}
    for row, h in zip(rows, hidden):
        if not _finite(row["utility"]) or row["task"] is None:
            continue
        base = (row["model"], h["task_key"], h["ft_key"], h["seed"])
        if row["split"] == CENTRALIZED:
            central.setdefault(base, []).append(row["utility"])
        elif h["family"] == "none":
            undefended.setdefault((row["split"], *base), []).append(row["utility"])
    for row, h in zip(rows, hidden):
        base = (row["model"], h["task_key"], h["ft_key"], h["seed"])
        refs = undefended.get((row["split"], *base)) or central.get(base)
        row["utility_ref"] = sum(refs) / len(refs) if refs and row["task"] is not None else NAN
        row["dcs"] = dcs(h["ap"], row["utility"], row["utility_ref"])

    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        row["pareto"] = False
        if row["attack"] is not None and row["task"] is not None:
            groups.setdefault((row["model"], row["task"], row["attack"], row["attack_data"]), []).append(i)
    for idx in groups.values():
        for i, flag in zip(idx, pareto_flags([rows[i]["utility"] for i in idx], [hidden[i]["ap"] for i in idx])):
            rows[i]["pareto"] = flag

    other_attack = sorted({m for h in hidden for m in h["attack_metrics"]})
    other_attack = [m for m in other_attack if m not in HEAD_COLUMNS and m not in TAIL_COLUMNS]
    u_cols = sorted({m for h in hidden for m in h["utility_metrics"]})
    columns = HEAD_COLUMNS + other_attack + ["task", "task_n", "utility"] + u_cols + TAIL_COLUMNS
    df = pd.DataFrame([{c: row.get(c, NAN) for c in columns} for row in rows], columns=columns)
    for c in INT_COLUMNS:
        df[c] = pd.array([_int(v) for v in df[c]], dtype="Int64")
    df["relative"] = pd.array([v if isinstance(v, bool) else None for v in df["relative"]], dtype="boolean")
    df["pareto"] = df["pareto"].astype(bool)
    float_cols = [c for c in columns if c not in INT_COLUMNS and c not in (
        "model", "split", "defense", "relative", "attack", "attack_data", "task", "pareto", "config_hash", "commit")]
    for c in float_cols:
        df[c] = df[c].astype("float64")
    for c in ("model", "split", "defense", "attack", "attack_data", "task", "config_hash", "commit"):
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    df = df.reset_index(drop=True)
    # Not a column (the CSV's bytes stay what they are): each attack's primary metric, for the plots.
    df.attrs["primary_metric"] = {row["attack"]: h["ap_name"] for row, h in zip(rows, hidden) if row["attack"]}
    return df


def to_csv(df) -> str:
    """Byte-deterministic CSV: floats as %.6g, integers exact, missing values empty, LF line endings."""
    return df.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n", na_rep="")


def to_markdown(df, columns: Sequence[str] | None = None) -> str:
    """A compact GitHub Markdown table (pandas `to_markdown`, see `flbench.reporting.tables`); numbers with
    3 significant digits, `token_accuracy` with its 95% CI as "0.500 [0.480, 0.520]"."""
    import pandas as pd

    from flbench.reporting.tables import MISSING, cell

    missing = [c for c in (columns or []) if c not in df.columns]
    if missing:
        raise FlbenchError(f"leaderboard has no column {missing[0]!r}; columns: {', '.join(df.columns)}")
    cols = [c for c in (columns or MD_COLUMNS) if c in df.columns]
    body = pd.DataFrame({c: [cell(v) for v in df[c]] for c in cols}, columns=cols)
    if "token_accuracy" in cols and "token_accuracy_ci_low" in df.columns:
        def with_ci(v, lo, hi) -> str:
            if MISSING in (cell(v), cell(lo), cell(hi)):
                return cell(v)
            return f"{float(v):.3f} [{float(lo):.3f}, {float(hi):.3f}]"

        body["token_accuracy"] = [with_ci(*t) for t in zip(df["token_accuracy"], df["token_accuracy_ci_low"],
                                                              df["token_accuracy_ci_high"])]
    return markdown_table(body)


def render(df, fmt: str = "csv", columns: Sequence[str] | None = None) -> str:
    if fmt == "csv":
        if columns:
            df = df[[c for c in columns]]
        return to_csv(df)
    if fmt == "md":
        return to_markdown(df, columns)
    raise FlbenchError(f"--format {fmt!r} is not accepted; accepted: csv, md")


def write_leaderboard(records_dir: str | os.PathLike, out: str | os.PathLike, fmt: str = "csv",
                      columns: Sequence[str] | None = None) -> Path:
    """Read the records under `records_dir`, write the leaderboard (csv or md) atomically to `out`."""
    if fmt not in ("csv", "md"):
        raise FlbenchError(f"--format {fmt!r} is not accepted; accepted: csv, md")
    records = rec.read_records(records_dir)
    if not records:
        raise FlbenchError(f"no records under {records_dir}; run `flbench sweep` or `flbench run` first")
    return rec.atomic_write_text(out, render(build(records), fmt, columns))
