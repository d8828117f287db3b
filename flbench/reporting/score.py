"""The privacy–utility score of the leaderboard: relative utility, an eligibility gate, the score, VFLAIR's DCS
on normalised terms, and Pareto dominance that respects the 95% CIs. Pure functions of numbers (NaN = missing);
`flbench.reporting.leaderboard` documents where each input comes from.

Relative utility (normalised between the trivial baseline and the undefended reference):

    relative_utility = (U − B) / (U_ref − B)

U = the row's utility (the task's primary metric), U_ref = the undefended reference of the same cell (same model,
split, task config, fine-tuning config and seed, defense family "none"; else the centralized reference),
B = the strongest trivial baseline of the task on the same examples (the maximum of chance, majority label or
most frequent answer, lead; the task's data-free chance level for records without baselines; 0 when nothing
is known, i.e. the metric's own floor). 1 = the reference's utility, 0 = what a model-free guess achieves, < 0 =
worse than the guess. It is NaN when U_ref ≤ B: a reference that does not beat the baseline has no utility to
keep, so no trade-off can be measured on that task. Why not U / U_ref: a chance-level classifier keeps 0.5/0.62
= 81 % of a zero-shot SST-2 reference, and a defense that wipes out a generative task keeps "0 %" of a metric
whose floor is not 0 (LEAD ROUGE); the ratio rewards doing nothing useful. Normalising by the baseline makes
"destroy the task" score 0 whatever the metric's scale.

Recovery R is absolute: the attack's primary metric in [0, 1] (the fraction of private tokens / PII / text
recovered; AP* = 0 means nothing recovered), or in the worst-case view the maximum over every attack run on
the cell. Not relative to the undefended attack: a leak of 30 % of the tokens is as bad after a weak
undefended attack as after a strong one, and a relative scale would make a defense look good wherever the
attack was already weak.

Eligibility gate (the part that cannot be gamed): a row is eligible when relative_utility ≥ 0.5 and U is above
the task's chance level. Ineligible rows have no score (NaN: they rank below every scored row) and are never
on a Pareto front, whatever their recovery.

    score = min(relative_utility, 1) × (1 − R)      for eligible rows, else NaN

(the fraction of the reference's utility kept, capped at 1 so that beating the reference by noise earns
nothing, times the fraction of the private text that stays private.)

DCS, the Defense Capability Score of VFLAIR (Zou et al., "VFLAIR: A Research Library and Benchmark for
Vertical Federated Learning", ICLR 2024, arXiv 2310.09827; used by VFLAIR-LLM, KDD 2025, arXiv 2508.03097),
as its reference implementation `cal_dcs` (FLAIR-THU/VFLAIR, src/metrics/data_process.py) defines it, with
one-sided terms:

    DCS = 1 / (1 + sqrt((1 − β)·max(AP − AP*, 0)² + β·max(MP* − MP, 0)²)),   β = 0.5, AP* = 0

computed on normalised terms: AP = R, MP = max(relative_utility, 0), MP* = 1. Utility above the reference is
not rewarded and not penalised (the one-sided clamp), utility at or below the baseline costs the full unit.
DCS ∈ [1/(1 + 1), 1]; it is a column only: with β = 0.5 a defense that destroys the task (MP = 0) and stops
the attack (AP = 0) still gets DCS 0.586, which is why ranking uses `score` and its gate.

Pareto front with CIs: row A dominates row B when A is no worse on both axes (U_A ≥ U_B and R_A ≤ R_B) and
better beyond the 95% CIs on at least one (U_A's CI low > U_B's CI high, or R_A's CI high < R_B's CI low); a
missing CI is the point itself, which gives classic Pareto dominance. A row is on the front when it is
eligible and no eligible row of its group dominates it. Overlapping CIs therefore keep both rows on the front:
the data cannot tell them apart.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

BETA = 0.5
AP_STAR = 0.0
MIN_RELATIVE_UTILITY = 0.5
NAN = float("nan")


def finite(x: Any) -> bool:
    try:
        return not isinstance(x, bool) and x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def relative_utility(utility: float, reference: float, baseline: float) -> float:
    """(U − B) / (U_ref − B); B = 0 when the baseline is unknown; NaN when U_ref ≤ B or an input is missing."""
    b = float(baseline) if finite(baseline) else 0.0
    if not (finite(utility) and finite(reference)) or float(reference) <= b:
        return NAN
    return (float(utility) - b) / (float(reference) - b)


def eligible(utility: float, rel: float, chance: float) -> bool:
    """relative_utility ≥ 0.5 and the utility above the chance level (when the task has one)."""
    if not (finite(utility) and finite(rel)) or rel < MIN_RELATIVE_UTILITY:
        return False
    return not (finite(chance) and utility <= chance)


def score(rel: float, recovery: float, is_eligible: bool) -> float:
    """min(relative_utility, 1) × (1 − R) for eligible rows with a recovery; NaN otherwise."""
    if not (is_eligible and finite(rel) and finite(recovery)):
        return NAN
    return min(float(rel), 1.0) * (1.0 - float(recovery))


def dcs(ap: float, mp: float, mp_star: float, beta: float = BETA, ap_star: float = AP_STAR) -> float:
    """VFLAIR's DCS with its one-sided terms (module docstring); NaN if an input is missing."""
    if not all(finite(x) for x in (ap, mp, mp_star)):
        return NAN
    d_ap = max(float(ap) - ap_star, 0.0)
    d_mp = max(float(mp_star) - float(mp), 0.0)
    return 1.0 / (1.0 + math.sqrt((1.0 - beta) * d_ap ** 2 + beta * d_mp ** 2))


def normalised_dcs(recovery: float, rel: float) -> float:
    """DCS on normalised terms: AP = R, MP = max(relative_utility, 0), MP* = 1."""
    if not (finite(recovery) and finite(rel)):
        return NAN
    return dcs(recovery, max(float(rel), 0.0), 1.0)


def _bounds(point: float, ci: tuple[float, float] | None) -> tuple[float, float]:
    lo, hi = ci if ci is not None else (NAN, NAN)
    return (float(lo) if finite(lo) else point, float(hi) if finite(hi) else point)


def pareto_flags(utility: Sequence[float], recovery: Sequence[float],
                 utility_ci: Sequence[tuple[float, float] | None] | None = None,
                 recovery_ci: Sequence[tuple[float, float] | None] | None = None,
                 eligible: Sequence[bool] | None = None) -> list[bool]:
    """True where the row is on the Pareto front (module docstring): eligible (default: all rows), utility and
    recovery known, and not dominated beyond the CIs by another eligible row. CIs are (low, high) pairs."""
    n = len(utility)
    ok = [finite(utility[i]) and finite(recovery[i]) and (eligible is None or bool(eligible[i])) for i in range(n)]
    pts = []
    for i in range(n):
        u, r = (float(utility[i]), float(recovery[i])) if ok[i] else (NAN, NAN)
        pts.append((u, r, *_bounds(u, utility_ci[i] if utility_ci else None),
                    *_bounds(r, recovery_ci[i] if recovery_ci else None)))

    def dominates(a, b) -> bool:
        ua, ra, ua_lo, _, _, ra_hi = a
        ub, rb, _, ub_hi, rb_lo, _ = b
        return ua >= ub and ra <= rb and (ua_lo > ub_hi or ra_hi < rb_lo)

    return [ok[i] and not any(ok[j] and j != i and dominates(pts[j], pts[i]) for j in range(n)) for i in range(n)]
