"""The worst-case view: one row per cell (without its attacks), the maximum recovery over EVERY attack record
of the cell, the attack that reached it with its CI; the CLI view; the Pareto front on the worst case."""
from __future__ import annotations

import random

import pytest

from synth_records import record

from flbench.experiments.records import write_record
from flbench.experiments.sweep import make_cell
from flbench.reporting import leaderboard as lb

# (attack, its primary metric): the worst case compares each attack on its own primary metric
ATTACKS = (("learned-inversion", "token_accuracy"), ("embedding-nn", "token_accuracy"),
           ("output-inversion", "rouge_l"))
SETTINGS = [("1,1", 0.0), ("1,1", 1.0), ("1,1", 2.0), ("2,2", 0.0), ("2,2", 1.0), ("2,2", 4.0)]


def _defense(sigma: float) -> dict:
    return {"name": "none", "params": {}} if sigma == 0 else {"name": "gaussian",
                                                              "params": {"sigma": sigma, "relative": True}}


def fake_records(seed: int = 0) -> tuple[list[dict], dict]:
    """Each setting: one cell with all three attacks on private-records, plus a second cell with the same model,
    split, defense, task and seed but other victims and one attack (the same cell without its attacks).
    Returns the records and {(split, σ): [(recovery, attack, ci_low, ci_high), ...]}."""
    rng = random.Random(seed)
    recs, truth = [], {}
    for split, sigma in SETTINGS:
        util = 0.9 - 0.05 * sigma
        cell = make_cell("m", split, _defense(sigma), {"name": "sst2", "limit": 100}, None,
                         [a for a, _ in ATTACKS], {}, {"data": "private-records"}, 0)
        for attack, primary in ATTACKS:
            ap = round(rng.random(), 4)
            recs.append(record(cell, attack, utility=util, ap=ap, primary=primary, ap_ci=0.01))
            truth.setdefault((split, sigma), []).append((ap, attack, max(ap - 0.01, 0.0), min(ap + 0.01, 1.0)))
        other = make_cell("m", split, _defense(sigma), {"name": "sst2", "limit": 100}, None, ["learned-inversion"],
                          {"learned-inversion": {"steps": 600}}, {"data": "enron"}, 0)
        ap = round(rng.random(), 4)
        recs.append(record(other, "learned-inversion", utility=util, ap=ap, ap_ci=0.01))
        truth[(split, sigma)].append((ap, "learned-inversion", max(ap - 0.01, 0.0), min(ap + 0.01, 1.0)))
    return recs, truth


@pytest.mark.parametrize("seed", range(5))
def test_worst_case_is_the_max_over_every_attack_of_a_cell(seed):
    recs, truth = fake_records(seed)
    w = lb.build_worst_case(recs)
    assert len(w) == len(SETTINGS)  # the second cell of each setting is merged into the first
    for _, row in w.iterrows():
        rows = truth[(row["split"], row["noise_sigma"])]
        best = max(r[0] for r in rows)
        assert row["worst_recovery"] == best
        hit = [r for r in rows if r[0] == best][0]
        assert row["worst_attack"] == hit[1]
        assert (row["worst_recovery_ci_low"], row["worst_recovery_ci_high"]) == pytest.approx(hit[2:])
        assert row["attacks"] == "embedding-nn;learned-inversion;output-inversion"
        assert row["worst_metric"] == dict(ATTACKS)[hit[1]]
    # the records view keeps one row per record, each with its own primary metric as `recovery`
    df = lb.build(recs)
    assert len(df) == len(recs)
    oi = df[df["attack"] == "output-inversion"]
    assert (oi["recovery_metric"] == "rouge_l").all() and (oi["recovery"] == oi["rouge_l"]).all()
    assert (oi["recovery"] != oi["token_accuracy"]).all()
    # the same view from the records view frame (as `flbench plot` builds it)
    assert lb.to_csv(lb.build_worst_case(df)) == lb.to_csv(w)


def test_worst_case_score_and_front_use_the_strongest_attack():
    """A defense that stops two attacks but not the third is judged by the third."""
    def cell(sigma, attacks):
        return make_cell("m", "2,2", _defense(sigma), {"name": "sst2", "limit": 100}, None, [a for a, _ in attacks],
                         {}, {"data": "private-records"}, 0)

    recs = []
    for sigma, util, aps in ((0.0, 0.90, (0.9, 0.5, 0.2)), (1.0, 0.85, (0.02, 0.01, 0.60)),
                             (2.0, 0.85, (0.10, 0.05, 0.08))):
        c = cell(sigma, ATTACKS)
        recs += [record(c, a, utility=util, ap=ap, primary=p, ap_ci=0.01) for (a, p), ap in zip(ATTACKS, aps)]
    w = lb.build_worst_case(recs).set_index("noise_sigma")
    assert w.loc[1.0, "worst_recovery"] == 0.60 and w.loc[1.0, "worst_attack"] == "output-inversion"
    # by hand: relative utility (0.85 - 0.5) / (0.90 - 0.5) = 0.875, score 0.875 · (1 - 0.60)
    assert w.loc[1.0, "score"] == pytest.approx(0.875 * 0.4)
    assert w.loc[2.0, "score"] == pytest.approx(0.875 * 0.9)
    assert w.loc[2.0, "pareto"] and not w.loc[1.0, "pareto"]  # σ = 2 dominates σ = 1 beyond the CIs
    # per attack, σ = 1 looks best against learned-inversion and embedding-nn
    df = lb.build(recs)
    li = df[df["attack"] == "learned-inversion"].set_index("noise_sigma")
    assert li.loc[1.0, "pareto"]


def test_worst_case_cli_csv_and_markdown(cli, tmp_path):
    recs, _ = fake_records(0)
    for r in recs:
        write_record(r, tmp_path / "runs")
    code, out, err = cli("leaderboard", "--records", str(tmp_path / "runs"), "--view", "worst-case", "--stdout")
    assert code == 0, err
    assert out == lb.to_csv(lb.build_worst_case(recs))
    assert out.splitlines()[0] == ",".join(lb.WORST_COLUMNS)
    code, out, err = cli("leaderboard", "--records", str(tmp_path / "runs"), "--view", "worst-case",
                         "--format", "md", "--stdout")
    assert code == 0, err
    head = [c.strip() for c in out.splitlines()[0].strip("|").split("|")]
    assert head == lb.WORST_MD_COLUMNS
    code, out, err = cli("leaderboard", "--records", str(tmp_path / "runs"), "--view", "worst-case",
                         "--out", str(tmp_path / "w.csv"))
    assert code == 0, err and (tmp_path / "w.csv").read_text() == lb.to_csv(lb.build_worst_case(recs))
    code, out, err = cli("leaderboard", "--records", str(tmp_path / "runs"), "--view", "worst-case",
                         "--attack", "embedding-nn", "--stdout")
    assert code == 2 and "--attack does not apply to --view worst-case" in err
    code, out, err = cli("leaderboard", "--records", str(tmp_path / "runs"), "--view", "best-case")
    assert code == 2 and "best-case" in err


def test_leaderboard_merges_the_surrogate_into_its_cell_under_its_own_name():
    """The adaptive attacker (`attacker: surrogate`) is part of its cell's worst case, named apart."""
    cell = make_cell("m", "2,2", {"name": "nopeek", "params": {"weight": 1.0}}, None, {"name": "sst2", "limit": 10},
                     ["map-inversion"], {}, {"data": "private-records"}, 0)
    cell["finetune"] = {"steps": 60}
    adaptive = {**cell, "attacker": {"head": "surrogate", "seed": 1, "task": None}}
    public = record(cell, "map-inversion", utility=0.73, ap=0.30)
    surrogate = record(adaptive, "map-inversion", utility=0.73, ap=0.89)
    rows = lb.build([public, surrogate])
    assert list(rows.columns)[list(rows.columns).index("attack") + 1] == "attacker"
    assert sorted(rows["attacker"].fillna("").tolist()) == ["", "surrogate head (seed 1)"]
    (w,) = lb._rows_of_frame(lb.build_worst_case([public, surrogate]))
    assert w["worst_recovery"] == 0.89 and w["worst_attack"] == "map-inversion [surrogate head (seed 1)]"
    assert w["attacks"] == "map-inversion;map-inversion [surrogate head (seed 1)]"
    assert "attacker" not in lb.build([public]).columns  # records without one keep their columns


def test_a_search_limited_attack_makes_the_worst_case_a_lower_bound_even_when_another_attack_is_higher():
    cell = make_cell("m", "2,2", {"name": "gaussian", "params": {"sigma": 8.0, "relative": True}}, None,
                     {"name": "sst2", "limit": 10}, ["map-inversion", "output-inversion"], {},
                     {"data": "private-records"}, 0)
    searched = record(cell, "map-inversion", utility=0.5, ap=0.015)
    searched["attack"]["diagnostics"] = {"candidate_recall": 0.25}  # its true recovery could be far higher
    other = record(cell, "output-inversion", utility=0.5, ap=0.016)
    (w,) = lb._rows_of_frame(lb.build_worst_case([searched, other]))
    assert w["worst_attack"] == "output-inversion" and w["candidate_recall"] == 0.25  # the claims view reads this
    (alone,) = lb._rows_of_frame(lb.build_worst_case([other]))
    assert "candidate_recall" not in alone  # no search attack in the cell: nothing to qualify
