"""The leaderboard's score: VFLAIR's one-sided DCS checked against hand-computed values, relative utility, the
gate that keeps "destroy the task" rows off the Pareto front and out of the top half, CI-aware dominance."""
from __future__ import annotations

import math

import pytest

from synth_records import record

from flbench.experiments.sweep import make_cell
from flbench.reporting import leaderboard as lb
from flbench.reporting import score as S

NAN = float("nan")


# ------------------------------------------------------------------------------------------ DCS by hand
# Each expected value was worked out by hand from VFLAIR's cal_dcs (FLAIR-THU/VFLAIR src/metrics/data_process.py):
# d_ap = max(AP - 0, 0), d_mp = max(MP* - MP, 0), DCS = 1 / (1 + sqrt(0.5 d_ap² + 0.5 d_mp²)).

@pytest.mark.parametrize("ap,mp,mp_star,expected", [
    (0.3, 0.6, 0.8, 0.7968438762784606),   # sqrt(0.5·0.09 + 0.5·0.04) = sqrt(0.065) = 0.2549510
    (0.2, 0.9, 0.8, 0.8761006569007046),   # utility above the reference: d_mp = 0, sqrt(0.02) = 0.1414214
    (0.2, 0.8, 0.8, 0.8761006569007046),   # ... exactly as at the reference (the one-sided clamp)
    (-0.1, 0.6, 0.8, 0.8761006569007046),  # recovery below AP* = 0 earns nothing either: d_ap = 0
    (0.0, 0.8, 0.8, 1.0),
    (0.012, 0.0, 1.0, 0.585768968647277),  # normalised terms, task destroyed: sqrt(0.5·0.000144 + 0.5)
    (0.91, 1.0, 1.0, 0.6084697143446399),  # normalised terms, undefended: sqrt(0.5·0.8281) = 0.6434672
])
def test_dcs_matches_hand_computed_values(ap, mp, mp_star, expected):
    assert S.dcs(ap, mp, mp_star) == pytest.approx(expected, abs=1e-12)


def test_dcs_is_not_symmetric_like_the_old_one():
    # the old symmetric DCS gave 1 / (1 + sqrt(0.5·0.04 + 0.5·0.01)) = 0.8634729 for utility above the reference
    assert S.dcs(0.2, 0.9, 0.8) != pytest.approx(0.8634729405041857, abs=1e-6)
    assert math.isnan(S.dcs(NAN, 0.5, 0.8)) and math.isnan(S.normalised_dcs(0.5, NAN))
    # normalised: a relative utility below the baseline costs the full unit, not more
    assert S.normalised_dcs(0.0, -3.0) == pytest.approx(1 / (1 + math.sqrt(0.5)))


def test_destroyed_task_no_longer_scores_like_a_good_defense():
    """The audit's case: CoQA F1 0.125 → 0 at recovery 0.012. Raw terms gave DCS 0.9187 (by hand:
    sqrt(0.5·0.012² + 0.5·0.124573²) = 0.0884920); normalised terms give 0.5858, below the undefended row's
    0.6085, and the row has no score at all."""
    raw = S.dcs(0.012, 0.0, 0.124573)
    assert raw == pytest.approx(0.9187003823559269, abs=1e-12)
    rel = S.relative_utility(0.0, 0.124573, NAN)
    assert rel == 0.0
    assert S.normalised_dcs(0.012, rel) == pytest.approx(0.585768968647277, abs=1e-12)
    assert S.normalised_dcs(0.012, rel) < S.normalised_dcs(0.91, 1.0)
    assert math.isnan(S.score(rel, 0.012, S.eligible(0.0, rel, NAN)))


# ---------------------------------------------------------------------------------- relative utility

def test_relative_utility_by_hand():
    assert S.relative_utility(0.58, 0.62, 0.5) == pytest.approx(0.08 / 0.12)  # (U - B) / (U_ref - B)
    assert S.relative_utility(0.234, 0.125, NAN) == pytest.approx(1.872)  # no baseline known: B = 0
    assert S.relative_utility(0.5, 0.62, 0.5) == 0.0  # at the baseline: nothing kept
    assert S.relative_utility(0.45, 0.62, 0.5) == pytest.approx(-0.05 / 0.12)
    assert math.isnan(S.relative_utility(0.6, 0.48, 0.5))  # the reference does not beat the baseline
    assert math.isnan(S.relative_utility(0.6, 0.5, 0.5)) and math.isnan(S.relative_utility(NAN, 0.6, 0.5))


def test_score_and_gate_by_hand():
    assert S.score(1.872, 0.375, True) == pytest.approx(0.625)  # min(rel, 1) · (1 - R)
    assert S.score(2 / 3, 0.1, True) == pytest.approx(0.6)
    assert math.isnan(S.score(0.9, 0.1, False)) and math.isnan(S.score(0.9, NAN, True))
    assert S.eligible(0.58, 0.6667, 0.5)
    assert not S.eligible(0.58, 0.49, 0.5)  # relative utility < 0.5
    assert not S.eligible(0.5, 0.8, 0.5)  # at chance (whatever the relative utility says)
    assert not S.eligible(NAN, 0.8, 0.5) and not S.eligible(0.6, NAN, 0.5)


# --------------------------------------------------------------------------------- Pareto with CIs

def test_pareto_respects_cis():
    # B's point is worse on both axes, but its utility CI overlaps A's and its recovery CI overlaps too
    u, r = [0.80, 0.78], [0.10, 0.12]
    overlap_u = [(0.75, 0.85), (0.73, 0.83)]
    overlap_r = [(0.08, 0.12), (0.10, 0.14)]
    assert S.pareto_flags(u, r, overlap_u, overlap_r) == [True, True]
    assert S.pareto_flags(u, r) == [True, False]  # without CIs: classic dominance
    # separated recovery CIs: A is better beyond the CI on recovery and no worse on utility
    apart_r = [(0.08, 0.11), (0.115, 0.14)]
    assert S.pareto_flags(u, r, overlap_u, apart_r) == [True, False]
    # an ineligible row is never on the front and dominates no one
    assert S.pareto_flags([0.9, 0.7], [0.0, 0.5], eligible=[False, True]) == [False, True]


# --------------------------------------------------- fake records: "destroy the task" never wins

def _coqa_like(rows: list[tuple[str, float, float, float]], task: str = "coqa", **kw) -> list[dict]:
    """(split, σ, utility, recovery) → records of one task (learned-inversion), undefended rows σ = 0."""
    out = []
    for split, sigma, util, ap in rows:
        d = {"name": "none", "params": {}} if sigma == 0 else {"name": "gaussian", "params": {"sigma": sigma,
                                                                                              "relative": True}}
        cell = make_cell("m", split, d, {"name": task, "limit": 16}, None, ["learned-inversion"], {},
                         {"data": "private-records"}, 0)
        out.append(record(cell, "learned-inversion", utility=util, ap=ap, **kw))
    return out


DESTROY = [("1,1", 0, 0.125, 0.910), ("1,1", 0.5, 0.125, 0.795), ("1,1", 1, 0.0, 0.539), ("1,1", 2, 0.0, 0.149),
           ("1,1", 4, 0.0, 0.012), ("4,4", 0, 0.125, 0.752), ("4,4", 0.5, 0.234, 0.375), ("4,4", 1, 0.016, 0.063),
           ("4,4", 2, 0.007, 0.042), ("4,4", 4, 0.0, 0.033),
           ("2,2", 0, 0.125, 0.877), ("2,2", 0.5, 0.12, 0.699), ("2,2", 0.75, 0.09, 0.5)]


def test_destroyed_rows_are_never_on_the_front_nor_in_the_top_half():
    for view in ("records", "worst-case"):
        df = lb.build_view(_coqa_like(DESTROY), view)
        r = "recovery" if view == "records" else "worst_recovery"
        destroyed = df["relative_utility"] < 0.5
        assert destroyed.sum() == 6  # σ ≥ 1 at both splits
        # the old score would have ranked them first: raw-term DCS 0.92 at recovery 0.012
        old = [S.dcs(a, u, 0.125) for u, a in zip(df["utility"], df[r])]
        assert max(old) == pytest.approx(old[df.index[(df["utility"] == 0) & (df[r] == 0.012)][0]])
        assert not df.loc[destroyed, "pareto"].any() and df.loc[destroyed, "score"].isna().all()
        # unscored rows rank below every scored one; here more than half the rows keep utility, so the top
        # half by score holds none of the destroyed rows
        ranked = df.sort_values("score", ascending=False, na_position="last").reset_index(drop=True)
        assert (~destroyed).sum() >= len(df) / 2
        top = ranked.iloc[: len(ranked) // 2]
        assert (top["relative_utility"] >= 0.5).all() and top["score"].notna().all()
        assert df.loc[df["pareto"], "noise_sigma"].tolist() == [0.5]  # 4,4 σ = 0.5 keeps utility, halves recovery


def test_rows_at_or_below_chance_are_never_on_the_front():
    # sst2: chance 1/2 (the task's data-free level); majority 0.55 from the records' baselines
    rows = [("2,2", 0, 0.85, 0.9), ("2,2", 0.5, 0.80, 0.5), ("2,2", 1, 0.71, 0.2), ("2,2", 2, 0.50, 0.01),
            ("2,2", 4, 0.45, 0.001), ("2,2", 8, 0.55, 0.0005)]
    df = lb.build(_coqa_like(rows, task="sst2", baselines={"chance": 0.5, "majority": 0.55}))
    assert (df["chance"] == 0.5).all() and (df["baseline"] == 0.55).all() and (df["baseline_kind"] == "majority").all()
    by_sigma = df.set_index("noise_sigma")
    assert by_sigma.loc[8, "relative_utility"] == 0.0  # at the majority baseline
    for s in (2, 4, 8):
        assert not by_sigma.loc[s, "pareto"] and math.isnan(by_sigma.loc[s, "score"])
    assert by_sigma.loc[1, "relative_utility"] == pytest.approx(0.16 / 0.30)  # (0.71 - 0.55) / (0.85 - 0.55)
    assert by_sigma.loc[1, "score"] == pytest.approx(0.16 / 0.30 * 0.8) and by_sigma.loc[1, "pareto"]
    assert by_sigma.loc[0, "beats_baseline"] and not by_sigma.loc[4, "beats_baseline"]


def test_beats_baseline_uses_the_ci():
    rows = [("2,2", 0, 0.60, 0.9)]
    df = lb.build(_coqa_like(rows, task="sst2", baselines={"chance": 0.5, "majority": 0.55}, u_ci=(0.52, 0.68)))
    assert not df["beats_baseline"].iloc[0]  # 0.60 > 0.55, but the CI reaches down to 0.52
    df = lb.build(_coqa_like(rows, task="sst2", baselines={"chance": 0.5, "majority": 0.55}, u_ci=(0.56, 0.64)))
    assert df["beats_baseline"].iloc[0]
    assert df["utility_ci_low"].iloc[0] == 0.56 and df["utility_ci_high"].iloc[0] == 0.64
    md = lb.to_markdown(df)
    assert "0.600 [0.560, 0.640]" in md
