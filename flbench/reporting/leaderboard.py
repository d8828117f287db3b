"""The leaderboard, derived (never hand-edited) from the run records and byte-deterministic, in three views.

View "records" (`flbench leaderboard`, results/leaderboard.csv): one row per run record, i.e. per (cell,
attack). Columns, in order:

    model, split ("P,Q" or "centralized"), defense, noise_sigma, relative, snr, epsilon, delta, finetune_steps,
    attack, attack_data, attack_n, recovery_metric, recovery, recovery_ci_low, recovery_ci_high,
    token_accuracy, token_accuracy_ci_low, token_accuracy_ci_high, rouge_l, pii_recovery,
    <other attack metrics, sorted>,
    task, task_n, utility, utility_ci_low, utility_ci_high, chance, baseline, baseline_kind, beats_baseline,
    u_<utility metric> (sorted),
    utility_ref, relative_utility, score, dcs, pareto, wire_bytes, seconds, cell, config_hash, commit

View "worst-case" (`flbench leaderboard --view worst-case`, results/leaderboard_worst_case.csv): one row per
cell without its attacks — (model, split, defense and its parameters, task config, fine-tuning config, seed,
wire dtype) = the `cell` column — whose privacy is the strongest attack's: columns

    model, split, defense, noise_sigma, relative, snr, epsilon, delta, finetune_steps, task, task_n, utility,
    utility_ci_low, utility_ci_high, chance, baseline, baseline_kind, beats_baseline, utility_ref,
    relative_utility, worst_recovery, worst_recovery_ci_low, worst_recovery_ci_high, worst_attack,
    worst_metric, attacks, score, dcs, pareto, cell

`worst_recovery` = the MAXIMUM of `recovery` over every attack record of the cell (all attacks, attack
parameters and victim sets run on it), `worst_attack` / `worst_metric` the attack that reached it and its
primary metric, the CI that attack's CI (ties: the first attack by name); `attacks` lists the attacks compared
(";"-separated). `snr` is that attack's record's. `candidate_recall` (only when some record has one): the
lowest, over the cell's attacks that search a pruned candidate set, share of positions whose true token was
among the candidates scored (map-inversion's pruning); below 1 the worst case is a lower bound set by the
search, not by the defense — also when another attack reached the maximum, since the searched attack's true
recovery could exceed it. Cells without attack records keep empty worst_* columns.

Recovery. `recovery` is the attack's primary metric (`recovery_metric`): the record's `attack.primary` (the
runner writes the attack class's `primary_metric` there), else the registered class's `primary_metric`; with
its 95% CI when the record gives the metric as {"mean", "ci_low", "ci_high"}. `df.attrs["primary_metric"]` maps
each attack to it for the plots.

Utility. `utility` is the task's primary metric (the registered task's `primary`, else the record's), with its
95% bootstrap CI over the eval examples from the record's `task.ci` (empty for records that carry none, e.g.
schema 1), and `task_n` examples. Baselines of the primary metric on the same examples, from the record's
`task.baselines`: `chance` (uniform random choice; for records without baselines the registered task's
data-free chance level, e.g. 1/2 for a two-choice task; empty for generative tasks), `baseline` the strongest
trivial baseline (the maximum of chance, majority label / most frequent answer, lead) and `baseline_kind` its
name; `beats_baseline` whether this row's utility beats it beyond the CI (CI low > baseline; the point
without a CI) — on the undefended rows it flags tasks the model has not learned.

Reference and score (formulas and their justification: flbench.reporting.score). `utility_ref` = U_ref, the
mean utility of the records with the same model, split, task config, fine-tuning config and seed and a
defense of the family "none"; if there is none, the centralized reference (split null) of the same model,
task config, fine-tuning config and seed. Then

    relative_utility = (utility − B) / (utility_ref − B)    B = baseline (else chance, else 0); NaN if utility_ref ≤ B
    score            = min(relative_utility, 1) × (1 − R)   only if relative_utility ≥ 0.5 and utility > chance
    dcs              = 1 / (1 + sqrt(0.5·max(R, 0)² + 0.5·max(1 − max(relative_utility, 0), 0)²))

with R = `recovery` in the records view and `worst_recovery` in the worst-case view. `dcs` is VFLAIR's
Defense Capability Score with the one-sided terms of its reference implementation, on the normalised terms
(MP = relative utility, MP* = 1, AP = R, AP* = 0). Rows failing the gate have no score and are never on a
Pareto front.

Pareto flag: within each (model, task, attack, attack_data) group (records view) or (model, task) group
(worst-case view), a row is on the front if it passes the gate and no other such row is at least as good
on both axes (utility, R) and better beyond the 95% CIs on one of them (flbench.reporting.score).

The defense columns come from the defense itself: the registered class, built with the record's parameters,
says its noise scale (`noise_sigma`, σ per coordinate; dp-forward: z·C) and its unit (`relative`: σ is a
multiple of RMS(h_A)), and its family (the undefended reference is the family "none"). A record whose defense
this installation does not know (or whose parameters it refuses) falls back to the record's own
`noise_sigma` / `relative` / `family` fields. `snr`, `epsilon` and `delta` are measurements of the run and
always come from the record. `snr` = RMS(h_A) / σ_eff over every released coordinate (for a per-call relative
σ that is 1/σ by construction); `snr_token`, present when some record measured it, is the typical token's SNR
(median over real rows of ||h_t|| / (σ_eff·√d), padding excluded), which an attention-sink row cannot inflate:
the number to compare across split depths.

Gradient defense (`--grad-defense`, on the dL/dh_B the client's tail sends during fine-tuning): when some record
has one, both views gain `grad_defense`, `grad_noise_sigma` (asked from the registered class, as above) and
`grad_epsilon` (the record's accounting over the epochs trained) after `finetune_steps`; rows without one hold
empty cells there. A cell is undefended (a utility reference) only without a defense on either edge. Records
without a gradient defense give the same columns and bytes as before the gradient edge existed.

View "claims" (`flbench leaderboard --view claims`, results/leaderboard_claims.csv): the paper's claim tested on
the worst-case view — per split and defense family, the best utility among the levels whose worst-case
recovery is below 10 % (1 %), against the centralized utility (flbench.reporting.claims).

`commit` carries a "-dirty" suffix when the record was produced from a working tree with uncommitted changes.
The record's date is left out on purpose: the same records always give the same bytes. Wall-clock columns:
only `seconds` (the record's `timings.total_s`, the whole cell's wall time on the machine that ran it,
including work shared between the cell's attacks; records view only). Every other column is a deterministic
function of the configuration and seeds (given the same library versions). Records of schema 1 and 2 are read
alike (only the top-level blocks defense/attack/task/finetune/wire/timings and `config` are used).
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
from flbench.reporting import score as S
from flbench.reporting.score import BETA, AP_STAR, dcs, pareto_flags  # noqa: F401  (re-exported)
from flbench.reporting.tables import markdown_table
from splits.partition import split_sort_key

FLOAT_FORMAT = "%.6g"
VIEWS = ("records", "worst-case", "claims")
FIXED_ATTACK_METRICS = ("token_accuracy", "rouge_l", "pii_recovery")
DEFENSE_COLUMNS = ["model", "split", "defense", "noise_sigma", "relative", "snr", "epsilon", "delta", "finetune_steps"]
HEAD_COLUMNS = DEFENSE_COLUMNS + [
    "attack", "attack_data", "attack_n", "recovery_metric", "recovery", "recovery_ci_low", "recovery_ci_high",
    "token_accuracy", "token_accuracy_ci_low", "token_accuracy_ci_high", "rouge_l", "pii_recovery"]
UTILITY_COLUMNS = ["task", "task_n", "utility", "utility_ci_low", "utility_ci_high", "chance", "baseline",
                   "baseline_kind", "beats_baseline"]
TAIL_COLUMNS = ["utility_ref", "relative_utility", "score", "dcs", "pareto", "wire_bytes", "seconds", "cell",
                "config_hash", "commit"]
WORST_COLUMNS = DEFENSE_COLUMNS + UTILITY_COLUMNS + [
    "utility_ref", "relative_utility", "worst_recovery", "worst_recovery_ci_low", "worst_recovery_ci_high",
    "worst_attack", "worst_metric", "attacks", "score", "dcs", "pareto", "cell"]
INT_COLUMNS = ("finetune_steps", "attack_n", "task_n", "wire_bytes", "levels_tested")
BOOL_COLUMNS = ("relative", "beats_baseline")
TEXT_COLUMNS = ("model", "split", "defense", "grad_defense", "attack", "attacker", "attack_data", "recovery_metric", "task", "baseline_kind",
                "cell", "config_hash", "commit", "worst_attack", "worst_metric", "attacks", "verdict")
MD_COLUMNS = ["model", "split", "defense", "noise_sigma", "snr", "epsilon", "attack", "recovery", "pii_recovery",
              "task", "task_n", "utility", "baseline", "relative_utility", "score", "dcs", "pareto"]
WORST_MD_COLUMNS = ["model", "split", "defense", "noise_sigma", "snr", "epsilon", "finetune_steps", "task", "task_n",
                    "utility", "baseline", "relative_utility", "worst_recovery", "worst_attack", "score", "dcs",
                    "pareto"]
# The gradient defense (on dL/dh_B during fine-tuning, `--grad-defense`): these columns follow finetune_steps in
# both views only when some record has one, so leaderboards of records without it keep their bytes.
GRAD_COLUMNS = ["grad_defense", "grad_noise_sigma", "grad_epsilon"]
# The typical token's SNR (median over real rows of ||h_t|| / (σ_eff·√d), `defenses.base.NoiseStats`): follows
# `snr` only when some record measured it (records before it was recorded keep their leaderboards' bytes).
SNR_TOKEN = "snr_token"
# The head the attacker ran when it was not the public one (`attacker` in the config, e.g. "surrogate head (seed
# 1)"): follows `attack` only when some record has one; in the worst-case view the attack's name carries it.
ATTACKER = "attacker"
RESERVED = frozenset(HEAD_COLUMNS + UTILITY_COLUMNS + TAIL_COLUMNS + WORST_COLUMNS + GRAD_COLUMNS
                     + [SNR_TOKEN, ATTACKER])
CELL_FREE_KEYS = ("attacks", "attack_params", "victims", "attacker")  # what differs between the attacks of one cell
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


def _registered_chance(name) -> dict[str, float]:
    """The registered task's data-free chance level ({} for unknown tasks or none)."""
    if not name:
        return {}
    try:
        from flbench.tasks.base import get_task

        return get_task(name).static_chance()
    except Exception:  # a task this installation does not know
        return {}


def _baselines(t: dict, primary: str | None) -> dict[str, Any]:
    """chance, baseline, baseline_kind of the primary metric from a record's task block (see docstring)."""
    out: dict[str, Any] = {"chance": NAN, "baseline": NAN, "baseline_kind": None}
    if not primary:
        return out
    found = {}
    for name, b in (t.get("baselines") or {}).items():
        v = _f(((b or {}).get("metrics") or {}).get(primary))
        if _finite(v):
            found[name] = v
    if not t.get("baselines"):  # a record written before tasks reported baselines: the data-free chance level
        v = _registered_chance(t.get("name")).get(primary)
        if v is not None:
            found["chance"] = float(v)
    out["chance"] = found.get("chance", NAN)
    if found:
        kind = min(found, key=lambda k: (-found[k], k))
        out["baseline"], out["baseline_kind"] = found[kind], kind
    return out


def insert_after(columns: Sequence[str], anchor: str, new: Sequence[str]) -> list[str]:
    """`columns` with `new` right after `anchor` (unchanged when `anchor` is absent)."""
    columns = list(columns)
    if anchor not in columns:
        return columns
    i = columns.index(anchor) + 1
    return columns[:i] + list(new) + columns[i:]


def with_grad_columns(columns: list[str], grad: bool) -> list[str]:
    """`columns` with GRAD_COLUMNS after finetune_steps when `grad` (some row has a gradient defense)."""
    return insert_after(columns, "finetune_steps", GRAD_COLUMNS) if grad else list(columns)


def with_optional_columns(columns: list[str], rows: list[dict]) -> list[str]:
    """`columns` with the columns only some leaderboards have: GRAD_COLUMNS when a row has a gradient defense,
    SNR_TOKEN after `snr` (else after `noise_sigma`) when a row has a finite one."""
    out = with_grad_columns(columns, any(r.get("grad_defense") for r in rows))
    if SNR_TOKEN not in out and any(_finite(r.get(SNR_TOKEN, NAN)) for r in rows):
        out = insert_after(out, "snr" if "snr" in out else "noise_sigma", [SNR_TOKEN])
    if ATTACKER not in out and any(r.get(ATTACKER) for r in rows):
        out = insert_after(out, "attack", [ATTACKER])
    return out


def attacker_label(cfg: dict) -> str | None:
    """The attacker's head when it is not the public one (config `attacker`), for tables; None for public."""
    a = cfg.get("attacker") or {}
    if a.get("head", "public") == "public":
        return None
    return f"{a['head']} head (seed {a.get('seed')}" + (f", {a['task']}" if a.get("task") else "") + ")"


def attack_label(row: dict) -> str:
    """The attack as the worst-case view names it: with the attacker's head when that was not the public one."""
    return str(row["attack"]) + (f" [{row[ATTACKER]}]" if row.get(ATTACKER) else "")


def _grad_view(r: dict, cfg: dict) -> dict[str, Any]:
    """grad_defense, grad_noise_sigma, grad_epsilon of a record (None / NaN without a gradient defense): the
    noise scale from the registered class as for the h_A defense, ε from the record's own measurement."""
    g = r.get("grad_defense") or cfg.get("grad_defense") or {}
    name = g.get("name")
    if not name or name == "none":
        return {"grad_defense": None, "grad_noise_sigma": NAN, "grad_epsilon": NAN}
    return {"grad_defense": name, "grad_noise_sigma": describe_defense(name, g)["noise_sigma"],
            "grad_epsilon": _f(g.get("epsilon"))}


def cell_key(r: dict) -> str:
    """The cell without its attacks: the hash of the record's config minus attacks, attack params and victims
    (records of one cell, or of cells that differ only in what they attack, share it)."""
    cfg = r.get("config") or {}
    return rec.config_hash({k: v for k, v in cfg.items() if k not in CELL_FREE_KEYS})


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
    ap_name = attack_primary(a.get("name"), a.get("primary")) if a else None
    t = r.get("task") or {}
    tm = t.get("metrics") or {}
    primary_u = _registered_primary(t.get("name"), tm) or t.get("primary") or (
        next(iter(sorted(tm))) if len(tm) == 1 else None)
    u_ci = (t.get("ci") or {}).get(primary_u) if primary_u else None
    commit = r.get("commit")
    utility = _f(tm.get(primary_u)) if primary_u else NAN
    row: dict[str, Any] = {
        "model": model,
        "split": CENTRALIZED if split is None else str(split),
        "defense": dname,
        "noise_sigma": dview["noise_sigma"],
        "relative": dview["relative"],
        "snr": _f(d.get("snr")),
        SNR_TOKEN: _f(d.get(SNR_TOKEN)),
        "epsilon": _f(d.get("epsilon")),
        "delta": _f(d.get("delta")),
        "finetune_steps": _int((ft or {}).get("steps")) if ft else 0,
        **_grad_view(r, cfg),
        "attack": a.get("name"),
        ATTACKER: attacker_label(cfg) if a else None,
        "attack_data": a.get("data"),
        "attack_n": _int(a.get("n")),
        "recovery_metric": ap_name,
        "recovery": _f(am.get(ap_name)) if a else NAN,
        "recovery_ci_low": _ci(am.get(ap_name), "ci_low") if a else NAN,
        "recovery_ci_high": _ci(am.get(ap_name), "ci_high") if a else NAN,
        "token_accuracy": _f(am.get("token_accuracy")),
        "token_accuracy_ci_low": _ci(am.get("token_accuracy"), "ci_low"),
        "token_accuracy_ci_high": _ci(am.get("token_accuracy"), "ci_high"),
        "rouge_l": _f(am.get("rouge_l")),
        "pii_recovery": _f(am.get("pii_recovery")),
        "task": t.get("name"),
        "task_n": _int(t.get("n")),
        "utility": utility,
        "utility_ci_low": _ci(u_ci, "ci_low"),
        "utility_ci_high": _ci(u_ci, "ci_high"),
        **_baselines(t, primary_u),
        "wire_bytes": _int((r.get("wire") or {}).get("bytes_total")),
        "seconds": _f((r.get("timings") or {}).get("total_s")),
        "cell": cell_key(r),
        "config_hash": r.get("config_hash"),
        "commit": None if commit is None else commit + ("-dirty" if r.get("dirty") else ""),
    }
    row["beats_baseline"] = _beats(row)
    recall = ((a.get("diagnostics") or {}).get("candidate_recall")) if a else None
    if recall is not None:  # a search attack's candidate recall (map-inversion): < 1 means pruning limited it
        row["candidate_recall"] = _f(recall)
    for m, v in am.items():
        if m not in row and m not in RESERVED:  # an attack metric never overwrites a column of its own name
            row[m] = _f(v)
    for m, v in tm.items():
        row[f"u_{m}"] = _f(v)
    hidden = {
        "family": dview["family"],
        "ap_name": ap_name,
        "task_key": rec.canonical_json(cfg.get("task")) if "task" in cfg else rec.canonical_json(t.get("name")),
        "ft_key": rec.canonical_json(rec.normalize_numbers(cfg.get("finetune"))),
        "seed": rec.canonical_json(cfg.get("seed", (r.get("seeds") or {}).get("seed"))),
        "attack_metrics": [m for m in am if m not in FIXED_ATTACK_METRICS and m not in RESERVED]
        + (["candidate_recall"] if "candidate_recall" in row else []),
        "utility_metrics": [f"u_{m}" for m in tm],
    }
    return row, hidden


def _beats(row: dict) -> bool | None:
    """The utility beats the baseline beyond its CI (the point without a CI); None when either is unknown."""
    u, b = row["utility"], row["baseline"]
    if not (_finite(u) and _finite(b)):
        return None
    lo = row["utility_ci_low"]
    return bool((lo if _finite(lo) else u) > b)


def _nan_key(x: Any) -> tuple:
    if isinstance(x, float) and math.isnan(x) or x is None:
        return (1, 0.0)
    return (0, float(x))


def _defense_sort(row: dict, family: str | None) -> tuple:
    return (split_sort_key(row["split"]), (family != "none", row["defense"]), str(row["relative"]),
            _nan_key(row["noise_sigma"]), _nan_key(row["epsilon"]), _nan_key(row["finetune_steps"]),
            str(row.get("grad_defense") or ""), _nan_key(row.get("grad_noise_sigma")))


def _sort_key(pair: tuple[dict, dict]) -> tuple:
    row, hidden = pair
    return (str(row["model"] or ""), str(row["task"] or ""), str(row["attack"] or ""), str(row[ATTACKER] or ""),
            str(row["attack_data"] or ""), *_defense_sort(row, hidden["family"]), str(row["config_hash"] or ""))


def _score_row(row: dict, recovery: float) -> None:
    """relative_utility, score and dcs of one row (flbench.reporting.score), in place."""
    rel = S.relative_utility(row["utility"], row["utility_ref"],
                             row["baseline"] if _finite(row["baseline"]) else row["chance"])
    row["relative_utility"] = rel
    row["_eligible"] = S.eligible(row["utility"], rel, row["chance"])
    row["score"] = S.score(rel, recovery, row["_eligible"])
    row["dcs"] = S.normalised_dcs(recovery, rel)


def _mark_pareto(rows: list[dict], group_cols: Sequence[str], recovery: str) -> None:
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        row["pareto"] = False
        if row["task"] is not None and _finite(row[recovery]):
            groups.setdefault(tuple(row[c] for c in group_cols), []).append(i)
    for idx in groups.values():
        flags = S.pareto_flags([rows[i]["utility"] for i in idx], [rows[i][recovery] for i in idx],
                               [(rows[i]["utility_ci_low"], rows[i]["utility_ci_high"]) for i in idx],
                               [(rows[i][f"{recovery}_ci_low"], rows[i][f"{recovery}_ci_high"]) for i in idx],
                               [rows[i]["_eligible"] for i in idx])
        for i, flag in zip(idx, flags):
            rows[i]["pareto"] = flag


def _frame(rows: list[dict], columns: list[str]):
    import pandas as pd

    df = pd.DataFrame([{c: row.get(c, NAN) for c in columns} for row in rows], columns=columns)
    for c in columns:
        if c in INT_COLUMNS:
            df[c] = pd.array([_int(v) for v in df[c]], dtype="Int64")
        elif c in BOOL_COLUMNS:
            df[c] = pd.array([v if isinstance(v, bool) else None for v in df[c]], dtype="boolean")
        elif c == "pareto":
            df[c] = df[c].astype(bool)
        elif c in TEXT_COLUMNS:
            df[c] = df[c].astype(object).where(df[c].notna(), None)
        else:
            df[c] = df[c].astype("float64")
    return df.reset_index(drop=True)


def _scored_rows(records: Iterable[dict]) -> tuple[list[dict], list[dict]]:
    """Rows of the records view (sorted, with utility_ref) and their hidden keys."""
    pairs = [_row(r) for r in records]
    pairs.sort(key=_sort_key)
    rows = [p[0] for p in pairs]
    hidden = [p[1] for p in pairs]
    # U_ref: undefended utility at the same split, else the centralized reference.
    undefended: dict[tuple, list[float]] = {}
    central: dict[tuple, list[float]] = {}
    for row, h in zip(rows, hidden):
        if not _finite(row["utility"]) or row["task"] is None:
            continue
        base = (row["model"], h["task_key"], h["ft_key"], h["seed"])
        if row["split"] == CENTRALIZED:
            central.setdefault(base, []).append(row["utility"])
        elif h["family"] == "none" and not row.get("grad_defense"):  # undefended on both edges
            undefended.setdefault((row["split"], *base), []).append(row["utility"])
    for row, h in zip(rows, hidden):
        base = (row["model"], h["task_key"], h["ft_key"], h["seed"])
        row["_ref_key"] = rec.canonical_json(list(base))
        refs = undefended.get((row["split"], *base)) or central.get(base)
        row["utility_ref"] = sum(refs) / len(refs) if refs and row["task"] is not None else NAN
        row["_family"] = h["family"]
    return rows, hidden


def build(records: Iterable[dict]):
    """The records view: one row per record (see the module docstring), sorted."""
    rows, hidden = _scored_rows(records)
    for row in rows:
        _score_row(row, row["recovery"])
    _mark_pareto(rows, ("model", "task", "attack", ATTACKER, "attack_data"), "recovery")
    other_attack = sorted({m for h in hidden for m in h["attack_metrics"]})
    u_cols = sorted({m for h in hidden for m in h["utility_metrics"]})
    columns = with_optional_columns(HEAD_COLUMNS, rows) + other_attack + UTILITY_COLUMNS + u_cols + TAIL_COLUMNS
    df = _frame(rows, columns)
    # Not columns (the CSV's bytes stay what they are): each attack's primary metric, and each cell's reference key,
    # for the plots.
    df.attrs["primary_metric"] = {row["attack"]: h["ap_name"] for row, h in zip(rows, hidden) if row["attack"]}
    df.attrs[REFERENCE_KEY] = _reference_keys(rows)
    return df


REFERENCE_KEY = "reference_key"


def _reference_keys(rows) -> dict[str, str]:
    """cell → the key a utility reference must share with it (model, task config, fine-tuning config, seed): the
    key `utility_ref` is matched on, kept for the plots' reference lines."""
    return {row["cell"]: row["_ref_key"] for row in rows if "_ref_key" in row}


def _rows_of_frame(df) -> list[dict]:
    """Rows of a records-view frame as the builders hold them (NA → None/NaN, the defense family asked)."""
    import pandas as pd

    rows = []
    for r in df.to_dict("records"):
        row = {k: (None if v is None or v is pd.NA else v) for k, v in r.items()}
        for c in ("utility", "utility_ci_low", "utility_ci_high", "chance", "baseline", "utility_ref", "recovery",
                  "recovery_ci_low", "recovery_ci_high", "noise_sigma", "snr", "epsilon", "delta"):
            row[c] = _f(row.get(c))
        fam = defense_family(row["defense"])
        row["_family"] = fam if fam is not None else ("none" if row["defense"] == "none" else None)
        rows.append(row)
    return rows


def build_worst_case(data):
    """The worst-case view: one row per cell without its attacks, with the maximum recovery over every attack
    record of the cell (see the module docstring), sorted like the records view. `data`: records, or the
    records view (a frame from `build`, e.g. filtered)."""
    import pandas as pd

    rows = _rows_of_frame(data) if isinstance(data, pd.DataFrame) else _scored_rows(data)[0]
    keys = dict(data.attrs.get(REFERENCE_KEY, {})) if isinstance(data, pd.DataFrame) else _reference_keys(rows)
    cells: dict[str, list[dict]] = {}
    for row in rows:
        cells.setdefault(row["cell"], []).append(row)
    out = []
    for members in cells.values():
        first = members[0]
        attacked = [m for m in members if m["attack"] is not None and _finite(m["recovery"])]
        worst = max(sorted(attacked, key=attack_label), key=lambda m: m["recovery"], default=None)
        row = {c: first.get(c) for c in DEFENSE_COLUMNS + GRAD_COLUMNS + [SNR_TOKEN] + UTILITY_COLUMNS
               + ["utility_ref", "cell", "_family"]}
        if worst is not None:
            recalls = [m["candidate_recall"] for m in attacked if _finite(m.get("candidate_recall", NAN))]
            if recalls:  # any search-limited attack makes the maximum a lower bound
                row["candidate_recall"] = min(recalls)
            # the h_A SNR of the cell: the worst attack's, or (a gradient attack's record has none) another's
            snr_of = [worst] + [m for m in attacked if m is not worst]
            row.update(snr=next((m["snr"] for m in snr_of if _finite(m["snr"])), worst["snr"]),
                       snr_token=next((m.get(SNR_TOKEN) for m in snr_of if _finite(m.get(SNR_TOKEN, NAN))), NAN),
                       worst_recovery=worst["recovery"], worst_recovery_ci_low=worst["recovery_ci_low"],
                       worst_recovery_ci_high=worst["recovery_ci_high"], worst_attack=attack_label(worst),
                       worst_metric=worst["recovery_metric"], attacks=";".join(sorted({attack_label(m) for m in attacked})))
        else:
            row.update(worst_recovery=NAN, worst_recovery_ci_low=NAN, worst_recovery_ci_high=NAN, worst_attack=None,
                       worst_metric=None, attacks=None)
        _score_row(row, row["worst_recovery"])
        out.append(row)
    out.sort(key=lambda r: (str(r["model"] or ""), str(r["task"] or ""), *_defense_sort(r, r["_family"]), r["cell"]))
    _mark_pareto(out, ("model", "task"), "worst_recovery")
    columns = with_optional_columns(WORST_COLUMNS, out)
    if any("candidate_recall" in r for r in out):  # after worst_metric; absent for records without search attacks
        columns = insert_after(columns, "worst_metric", ["candidate_recall"])
    df = _frame(out, columns)
    df.attrs[REFERENCE_KEY] = keys
    return df


def build_view(records: Iterable[dict], view: str = "records"):
    if view == "records":
        return build(records)
    if view == "worst-case":
        return build_worst_case(records)
    if view == "claims":
        from flbench.reporting.claims import build_claims

        return build_claims(records)
    raise FlbenchError(f"--view {view!r} is not accepted; accepted: {', '.join(VIEWS)}")


def to_csv(df) -> str:
    """Byte-deterministic CSV: floats as %.6g, integers exact, missing values empty, LF line endings."""
    return df.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n", na_rep="")


def to_markdown(df, columns: Sequence[str] | None = None) -> str:
    """A compact GitHub Markdown table (pandas `to_markdown`, see `flbench.reporting.tables`); numbers with
    3 significant digits; a column with `<column>_ci_low` / `_ci_high` beside it (utility, recovery,
    token_accuracy, worst_recovery) with its 95% CI as "0.500 [0.480, 0.520]", or "0.500 [–]" when the
    record carries no CI. Default columns: MD_COLUMNS
    for the records view, WORST_MD_COLUMNS for the worst-case view, claims.CLAIMS_MD_COLUMNS for the claims view."""
    import pandas as pd

    from flbench.reporting.tables import MISSING, cell

    missing = [c for c in (columns or []) if c not in df.columns]
    if missing:
        raise FlbenchError(f"leaderboard has no column {missing[0]!r}; columns: {', '.join(df.columns)}")
    if "verdict" in df.columns:
        from flbench.reporting.claims import CLAIMS_MD_COLUMNS as default
    else:
        default = WORST_MD_COLUMNS if "worst_recovery" in df.columns else MD_COLUMNS
    if "grad_defense" in df.columns:  # after the h_A defense's columns
        default = insert_after(default, "epsilon", ["grad_defense", "grad_noise_sigma"])
    if ATTACKER in df.columns:
        default = insert_after(default, "attack", [ATTACKER])
    if SNR_TOKEN in df.columns:
        default = insert_after(default, "snr", [SNR_TOKEN])
    cols = [c for c in (columns or default) if c in df.columns]
    body = pd.DataFrame({c: [cell(v) for v in df[c]] for c in cols}, columns=cols)

    def with_ci(v, lo, hi) -> str:
        if cell(v) == MISSING:
            return MISSING
        if MISSING in (cell(lo), cell(hi)):
            return f"{float(v):.3f} [{MISSING}]"  # a value whose record carries no CI
        return f"{float(v):.3f} [{float(lo):.3f}, {float(hi):.3f}]"

    for c in cols:
        if f"{c}_ci_low" in df.columns and f"{c}_ci_high" in df.columns:
            body[c] = [with_ci(*t) for t in zip(df[c], df[f"{c}_ci_low"], df[f"{c}_ci_high"])]
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
                      columns: Sequence[str] | None = None, view: str = "records") -> Path:
    """Read the records under `records_dir`, write the leaderboard view (csv or md) atomically to `out`."""
    if fmt not in ("csv", "md"):
        raise FlbenchError(f"--format {fmt!r} is not accepted; accepted: csv, md")
    if view not in VIEWS:
        raise FlbenchError(f"--view {view!r} is not accepted; accepted: {', '.join(VIEWS)}")
    records = rec.read_records(records_dir)
    if not records:
        raise FlbenchError(f"no records under {records_dir}; run `flbench sweep` or `flbench run` first")
    return rec.atomic_write_text(out, render(build_view(records, view), fmt, columns))
