"""The paper's central claim, tested from the records (`flbench leaderboard --view claims`).

FL-LLaMA (arXiv 2505.15683) claims split fine-tuning with noise on the wire is private and "comparable to
centralized". The question this view answers, for each (model, task, fine-tuning config, seed, split, defense
family) and each recovery threshold t (default 0.10 and 0.01 of the private tokens):

    among the defended cells whose WORST-CASE recovery (the maximum over every attack run on the cell, the
    worst-case view) is below t, the one with the highest utility — how far is its utility from the
    centralized model's (same model, task config, fine-tuning config and seed)?

"Below t" means the upper end of the worst case's 95% CI is below t (the point when the record has no CI), so
that a lucky draw of victims cannot make a setting look private. Ties in utility go to the lower noise level.
When no tested level of the family gets below t, the row still appears, filled from the level with the lowest
worst-case recovery and with the verdict "none below t" — the honest answer is then "not at any level
tested", and `max_noise_tested` says how far the grid went.

Columns, in order:

    model, task, task_n, finetune_steps, split, defense, threshold, noise_sigma, relative, worst_recovery,
    worst_recovery_ci_low, worst_recovery_ci_high, worst_attack, candidate_recall, attacks, utility, utility_ci_low,
    utility_ci_high, baseline, centralized, centralized_ci_low, centralized_ci_high, gap, relative_utility,
    levels_tested, max_noise_tested, verdict, cell

`gap` = utility − centralized utility (negative: the split loses utility). `relative_utility` is the worst-case
view's (utility over the undefended split's, both above the trivial baseline; flbench.reporting.score).
`verdict`, in this order of precedence:

    "none below t"          no tested level of this defense reaches worst-case recovery < t
    "task lost"             the chosen level's utility does not beat the trivial baseline beyond its CI, or its
                            relative utility is below 0.5 (the score's gate): private only by destroying the task
    "comparable"            the utility's 95% CI overlaps the centralized utility's
    "below centralized"     both CIs exist, they do not overlap and the split is lower
    "above centralized"     ... and the split is higher
    "no reference"          no centralized record of the same model, task, fine-tuning config and seed

When an attack of the cell searched a pruned candidate set and the true token was among its candidates at
fewer than RECALL_OK = 0.9 of the positions (`candidate_recall`, map-inversion; the lowest over the cell's
attacks, whichever reached the maximum), "below t" was set by the search, not established for the defense: the
verdict says "recovery a lower bound".

The overlap rule is a coarse comparison of two independent 95% intervals (it is conservative toward
"comparable"); the per-example paired difference is not in the records.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

from flbench.reporting import leaderboard as lb

THRESHOLDS = (0.10, 0.01)
RECALL_OK = 0.9  # below this candidate recall the worst case is a search-limited lower bound
CLAIMS_COLUMNS = [
    "model", "task", "task_n", "finetune_steps", "split", "defense", "threshold", "noise_sigma", "relative",
    "worst_recovery", "worst_recovery_ci_low", "worst_recovery_ci_high", "worst_attack", "candidate_recall",
    "attacks", "utility", "utility_ci_low", "utility_ci_high", "baseline", "centralized", "centralized_ci_low",
    "centralized_ci_high", "gap", "relative_utility", "levels_tested", "max_noise_tested", "verdict", "cell"]
CLAIMS_MD_COLUMNS = ["task", "task_n", "finetune_steps", "split", "defense", "threshold", "noise_sigma",
                     "worst_recovery", "worst_attack", "candidate_recall", "utility", "centralized", "gap", "relative_utility",
                     "max_noise_tested", "verdict"]


def _fin(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(float(x))


def _upper(row: dict) -> float:
    """The worst case's 95% upper bound (the point without a CI; +inf without any recovery)."""
    hi = row.get("worst_recovery_ci_high")
    if _fin(hi):
        return float(hi)
    return float(row["worst_recovery"]) if _fin(row.get("worst_recovery")) else math.inf


def _verdict(row: dict, reached: bool) -> str:
    if not reached:
        return f"none below {row['threshold']:g}"
    rel = row.get("relative_utility")
    if row.get("beats_baseline") is False or (_fin(rel) and rel < 0.5):
        return "task lost"
    c, lo, hi = row.get("centralized"), row.get("centralized_ci_low"), row.get("centralized_ci_high")
    if not _fin(c):
        return "no reference"
    u_lo, u_hi = row.get("utility_ci_low"), row.get("utility_ci_high")
    if not all(_fin(v) for v in (lo, hi, u_lo, u_hi)):
        return "comparable" if row["utility"] == c else ("below centralized" if row["utility"] < c
                                                          else "above centralized")
    if u_hi >= lo and hi >= u_lo:
        return "comparable"
    return "below centralized" if row["utility"] < c else "above centralized"


def build_claims(records: Iterable[dict], thresholds: Sequence[float] = THRESHOLDS):
    """The claims view (see the module docstring) of `records`, sorted by model, task, split, defense and
    threshold (descending)."""
    records = list(records)
    rows, hidden = lb._scored_rows(records)
    key_of = {row["cell"]: (row["model"], h["task_key"], h["ft_key"], h["seed"]) for row, h in zip(rows, hidden)}
    worst = lb._rows_of_frame(lb.build_worst_case(records))
    central = {key_of[w["cell"]]: w for w in worst if w["split"] == lb.CENTRALIZED and _fin(w["utility"])}
    groups: dict[tuple, list[dict]] = {}
    for w in worst:
        if w["split"] == lb.CENTRALIZED or w["_family"] in ("none", None) or w["task"] is None:
            continue
        if not _fin(w["worst_recovery"]) or not _fin(w["utility"]):
            continue
        groups.setdefault((key_of[w["cell"]], w["split"], w["_family"]), []).append(w)
    out = []
    for (key, split, _family), members in groups.items():
        ref = central.get(key)
        sigmas = [m["noise_sigma"] for m in members if _fin(m["noise_sigma"])]
        for t in thresholds:
            ok = [m for m in members if _upper(m) < t]
            reached = bool(ok)
            if reached:
                pick = max(ok, key=lambda m: (m["utility"], -(m["noise_sigma"] if _fin(m["noise_sigma"]) else 0.0)))
            else:
                pick = min(members, key=lambda m: (m["worst_recovery"], -m["utility"]))
            row = {c: pick.get(c) for c in ("model", "task", "task_n", "finetune_steps", "split", "defense",
                                             "noise_sigma", "relative", "worst_recovery", "worst_recovery_ci_low",
                                             "worst_recovery_ci_high", "worst_attack", "attacks", "utility",
                                             "utility_ci_low", "utility_ci_high", "baseline", "relative_utility",
                                             "beats_baseline", "cell", "candidate_recall")}
            row["threshold"] = float(t)
            row["centralized"] = ref["utility"] if ref else math.nan
            row["centralized_ci_low"] = ref["utility_ci_low"] if ref else math.nan
            row["centralized_ci_high"] = ref["utility_ci_high"] if ref else math.nan
            row["gap"] = row["utility"] - row["centralized"] if ref else math.nan
            row["levels_tested"] = len(members)
            row["max_noise_tested"] = max(sigmas) if sigmas else math.nan
            row["verdict"] = _verdict(row, reached)
            recall = row.get("candidate_recall")
            if reached and _fin(recall) and recall < RECALL_OK:
                row["verdict"] += f"; recovery a lower bound (candidate recall {recall:.2f})"
            out.append(row)
    out.sort(key=lambda r: (str(r["model"]), str(r["task"]), lb.split_sort_key(r["split"]), str(r["defense"]),
                            -r["threshold"], r["cell"]))
    return lb._frame(out, CLAIMS_COLUMNS)
