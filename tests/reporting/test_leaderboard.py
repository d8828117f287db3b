"""Leaderboard: columns, DCS (VFLAIR-LLM), Pareto flags, byte-deterministic CSV, Markdown."""
from __future__ import annotations

import math
import random

import pandas as pd
import pytest

from synth_records import grid, record

from flbench.reporting import leaderboard as lb
from flbench.core.errors import FlbenchError
from flbench.experiments.records import write_record
from flbench.experiments.sweep import make_cell


def test_columns_in_order():
    df = lb.build(grid())
    cols = list(df.columns)
    assert cols[:len(lb.HEAD_COLUMNS)] == lb.HEAD_COLUMNS
    assert cols[len(lb.HEAD_COLUMNS):] == ["bleu", *lb.UTILITY_COLUMNS, "u_accuracy", "u_f1", *lb.TAIL_COLUMNS]
    assert lb.UTILITY_COLUMNS[:5] == ["task", "task_n", "utility", "utility_ci_low", "utility_ci_high"]
    assert "date" not in cols
    assert len(df) == 1 + 2 * (1 + 4 + 2)
    w = lb.build_worst_case(grid())
    assert list(w.columns) == lb.WORST_COLUMNS and len(w) == len(df)  # one attack per cell: one row per record


def test_reference_relative_utility_and_dcs_column():
    df = lb.build(grid())
    row = df[(df["split"] == "2,2") & (df["defense"] == "gaussian") & (df["noise_sigma"] == 2)].iloc[0]
    none = df[(df["split"] == "2,2") & (df["defense"] == "none")].iloc[0]
    assert row["utility_ref"] == none["utility"]  # U_ref = undefended utility at the same split
    # sst2 records without baselines: the task's data-free chance level 1/2 is the baseline
    assert row["chance"] == 0.5 and row["baseline"] == 0.5 and row["baseline_kind"] == "chance"
    # by hand: U = 0.85 - 0.05·2 - 0.01·2 = 0.73, U_ref = 0.83 → (0.73 - 0.5) / (0.83 - 0.5)
    assert row["relative_utility"] == pytest.approx(0.23 / 0.33)
    assert row["dcs"] == pytest.approx(lb.dcs(row["recovery"], row["relative_utility"], 1.0))
    assert row["score"] == pytest.approx(0.23 / 0.33 * (1 - row["recovery"]))
    assert none["relative_utility"] == 1.0 and none["recovery"] == none["token_accuracy"]
    central = df[df["split"] == "centralized"].iloc[0]
    assert math.isnan(central["dcs"]) and central["attack"] is None and not central["pareto"]
    assert math.isnan(central["score"]) and central["utility_ci_low"] != central["utility_ci_low"]  # no CI: NaN


def test_reference_falls_back_to_centralized_then_nan():
    recs = [r for r in grid() if r["defense"]["name"] != "none" or r["split"] is None]
    df = lb.build(recs)
    assert (df.loc[df["split"] != "centralized", "utility_ref"] == 0.9).all()
    df = lb.build([r for r in recs if r["split"] is not None])
    assert df["utility_ref"].isna().all() and df["dcs"].isna().all() and df["score"].isna().all()


def test_pareto_flags_and_gate():
    assert lb.pareto_flags([0.9, 0.8, 0.7, 0.7], [0.9, 0.5, 0.6, 0.6]) == [True, True, False, False]
    assert lb.pareto_flags([0.5, 0.5], [0.2, 0.2]) == [True, True]  # ties: neither dominates
    assert lb.pareto_flags([float("nan"), 0.5], [0.1, 0.2]) == [False, True]
    df = lb.build(grid())
    g = df[df["attack"].notna()]
    eligible = g["score"].notna()
    for _, r in g.iterrows():  # brute force: eligible and not dominated beyond the CIs by an eligible row
        others = g[(g["config_hash"] != r["config_hash"]) & eligible]
        dom = ((others["utility"] >= r["utility"]) & (others["recovery"] <= r["recovery"])
               & ((others["utility"] > r["utility"]) | (others["recovery_ci_high"] < r["recovery_ci_low"]))).any()
        assert r["pareto"] == (bool(eligible[_]) and not dom)
    # the undefended 2,2 row is dominated by the undefended 1,1 row in the synthetic data
    assert not g[(g["split"] == "2,2") & (g["defense"] == "none")]["pareto"].iloc[0]
    # σ = 4: U = 0.65 - 0.01·P, relative utility (0.64 - 0.5) / (0.84 - 0.5) = 0.41 < 0.5: never on the front
    low = g[g["noise_sigma"] == 4]
    assert (low["relative_utility"] < 0.5).all() and not low["pareto"].any() and low["score"].isna().all()
    assert g["pareto"].any()


def test_csv_is_byte_deterministic_and_order_independent(tmp_path):
    recs = grid(tasks=("sst2", "boolq"), attacks=("learned-inversion", "embedding-nn"))
    a = lb.to_csv(lb.build(recs))
    shuffled = recs[:]
    random.Random(1).shuffle(shuffled)
    assert lb.to_csv(lb.build(shuffled)) == a
    assert "\r" not in a and a.endswith("\n")
    head, first = a.splitlines()[:2]
    assert head.startswith("model,split,defense,noise_sigma,relative,snr,")
    assert ",4718784," in first  # integers exact, not %.6g
    # through files: write, read back, rebuild
    for r in recs:
        write_record(r, tmp_path / "runs")
    out = lb.write_leaderboard(tmp_path / "runs", tmp_path / "lb.csv")
    assert out.read_bytes() == a.encode() == lb.write_leaderboard(tmp_path / "runs", tmp_path / "lb2.csv").read_bytes()


def test_volatile_fields_do_not_change_the_csv():
    recs = grid()
    other = [{**r, "date": "2031-05-05T05:05:05+00:00", "versions": {"flbench": "9"}} for r in recs]
    assert lb.to_csv(lb.build(recs)) == lb.to_csv(lb.build(other))


def test_missing_pieces_and_odd_values():
    cell = make_cell("m", "1,1", {"name": "gaussian", "params": {"sigma": 0}}, None, None, ["x"], {},
                     {"data": "private-records"}, 0)
    r = record(cell, "x", utility=None, ap=0.5, snr=float("inf"))
    r["commit"], r["dirty"] = "abc", True
    r["wire"] = {}
    df = lb.build([r])
    row = df.iloc[0]
    assert row["task"] is None and math.isnan(row["utility"]) and math.isnan(row["dcs"]) and not row["pareto"]
    assert row["recovery_metric"] == "token_accuracy" and row["recovery"] == 0.5 and row["beats_baseline"] is pd.NA
    assert row["commit"] == "abc-dirty" and row["snr"] == float("inf")
    csv = lb.to_csv(df)
    assert ",inf," in csv
    md = lb.to_markdown(df)
    assert "∞" in md and "0.500 [0.480, 0.520]" in md


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_markdown_table():
    """pandas' to_markdown (tabulate, GitHub format): padded columns, one row per leaderboard row."""
    df = lb.build(grid())
    md = lb.to_markdown(df)
    lines = md.splitlines()
    assert _cells(lines[0]) == lb.MD_COLUMNS
    assert set(lines[1]) == {"|", "-"} and lines[1].count("|") == len(lb.MD_COLUMNS) + 1
    assert len(lines) == 2 + len(df)
    assert all(line.count("|") == len(lb.MD_COLUMNS) + 1 for line in lines)
    assert len({len(line) for line in lines}) == 1  # aligned columns
    rows = [_cells(line) for line in lines[2:]]
    assert ["1,1", "none"] in [r[1:3] for r in rows] and any("✓" in r for r in rows)
    first = rows[0]
    assert first[lb.MD_COLUMNS.index("split")] == "centralized" and first[lb.MD_COLUMNS.index("dcs")] == "–"
    small = lb.to_markdown(df, columns=["split", "dcs"])
    assert _cells(small.splitlines()[0]) == ["split", "dcs"]
    with pytest.raises(FlbenchError, match="no column 'nope'"):
        lb.to_markdown(df, columns=["nope"])


def test_write_leaderboard_errors(tmp_path):
    with pytest.raises(FlbenchError, match="no records under"):
        lb.write_leaderboard(tmp_path, tmp_path / "x.csv")
    with pytest.raises(FlbenchError, match="accepted: csv, md"):
        lb.write_leaderboard(tmp_path, tmp_path / "x.csv", fmt="xlsx")


def test_regenerates_the_committed_leaderboard_byte_identically():
    """`flbench leaderboard` on the committed records gives the committed results/leaderboard.csv, and
    `--view worst-case` results/leaderboard_worst_case.csv, `--view claims` results/leaderboard_claims.csv (a fresh
    build compared with the files)."""
    from pathlib import Path

    from flbench.experiments.records import read_records

    root = Path(__file__).resolve().parents[2] / "results"
    recs = read_records(root / "runs")
    assert lb.to_csv(lb.build(recs)).encode() == (root / "leaderboard.csv").read_bytes()
    assert lb.to_csv(lb.build_worst_case(recs)).encode() == (root / "leaderboard_worst_case.csv").read_bytes()
    assert lb.to_csv(lb.build_view(recs, "claims")).encode() == (root / "leaderboard_claims.csv").read_bytes()


def test_defense_columns_are_asked_from_the_defense_class():
    recs = grid(splits=("1,1",), sigmas=(2,), zs=(4.0,))
    for r in recs:  # records whose own σ fields disagree with the class: the class wins
        if r["defense"]["name"] != "none":
            r["defense"] = {**r["defense"], "noise_sigma": 123.0, "relative": None}
    df = lb.build(recs)
    got = {(row["defense"], row["noise_sigma"], row["relative"]) for _, row in df[df["split"] == "1,1"].iterrows()}
    assert got == {("none", 0.0, False), ("gaussian", 2.0, True), ("dp-forward", 20.0, False)}  # z·C = 4·5
    assert lb.describe_defense("dp-forward", {"params": {"clip": 5, "noise_multiplier": 4}})["family"] == "dp"


def test_unknown_defense_falls_back_to_the_record():
    cell = make_cell("m", "1,1", {"name": "from-elsewhere", "params": {"k": 1}}, {"name": "sst2", "limit": 10},
                     None, ["a"], {}, {"data": "private-records"}, 0)
    r = record(cell, "a", utility=0.5, ap=0.5)
    r["defense"].update(noise_sigma=0.7, relative=True, family="exotic")
    row = lb.build([r]).iloc[0]
    assert row["defense"] == "from-elsewhere" and row["noise_sigma"] == 0.7 and row["relative"] == True  # noqa: E712
    assert lb.describe_defense("from-elsewhere", r["defense"])["family"] == "exotic"


def test_schema_1_and_2_read_alike():
    recs = grid()
    v2 = [{**r, "schema": 2, "config": {**r["config"], "resolved": {"anything": 1}},
           "defense": {**r["defense"], "family": "?", "noise_unit": "absolute", "privacy_unit": None},
           "attack": r["attack"] and {**r["attack"], "primary_metric": "token_accuracy"}} for r in recs]
    # `cell` is a hash of the config (minus its attacks): the extra config key changes it and nothing else
    assert lb.to_csv(lb.build(v2).drop(columns="cell")) == lb.to_csv(lb.build(recs).drop(columns="cell"))


def test_attack_primary_metric_from_the_record_else_the_attack_class():
    from attacks import attacks

    recs = grid()
    silent = [{**r, "attack": r["attack"] and {k: v for k, v in r["attack"].items() if k != "primary"}} for r in recs]
    df = lb.build(silent)  # the registered class says token_accuracy, as the records did
    assert lb.to_csv(df) == lb.to_csv(lb.build(recs))
    assert df.attrs["primary_metric"] == {"learned-inversion": attacks.get("learned-inversion").primary_metric}
    other = [{**r, "attack": r["attack"] and {**r["attack"], "primary": "rouge_l"}} for r in recs]
    row = lb.build(other)
    assert row.attrs["primary_metric"] == {"learned-inversion": "rouge_l"}
    r = row[row["attack"].notna() & row["utility_ref"].notna()].iloc[0]
    assert r["recovery_metric"] == "rouge_l" and r["recovery"] == r["rouge_l"]
    assert r["dcs"] == pytest.approx(lb.dcs(r["rouge_l"], r["relative_utility"], 1.0))


def test_snr_token_column_only_when_a_record_measured_it():
    cell = make_cell("m", "2,2", {"name": "gaussian", "params": {"sigma": 2.0, "relative": True}}, None,
                     {"name": "sst2", "limit": 10}, ["x"], {}, {"data": "private-records"}, 0)
    old = record(cell, "x", utility=0.6, ap=0.5, snr=0.5)
    new = record(cell, "x", utility=0.6, ap=0.5, snr=0.5)
    new["defense"]["snr_token"] = 0.21  # the typical token's SNR, below the all-coordinate 1/σ (a sink row)
    assert "snr_token" not in lb.build([old]).columns  # older records: the columns (and bytes) they always had
    assert "snr_token" not in lb.build_worst_case(lb.build([old])).columns
    for df in (lb.build([new]), lb.build_worst_case(lb.build([new]))):
        cols = list(df.columns)
        assert cols[cols.index("snr") + 1] == "snr_token" and df["snr_token"].iloc[0] == 0.21
    md = lb.to_markdown(lb.build_worst_case(lb.build([new])))
    header = _cells(md.splitlines()[0])
    assert header[header.index("snr") + 1] == "snr_token" and "0.21" in md


def test_worst_case_keeps_the_cells_h_a_snr_when_the_worst_attack_reads_the_gradient():
    cell = make_cell("m", "2,2", {"name": "gaussian", "params": {"sigma": 4.0, "relative": True}}, None,
                     {"name": "sst2", "limit": 10}, ["gradient-label", "map-inversion"], {},
                     {"data": "private-records"}, 0)
    grad = record(cell, "gradient-label", utility=0.5, ap=0.9, snr=None)  # its record has no h_A SNR
    fwd = record(cell, "map-inversion", utility=0.5, ap=0.3, snr=0.25)
    fwd["defense"]["snr_token"] = 0.19
    (row,) = lb._rows_of_frame(lb.build_worst_case([grad, fwd]))
    assert row["worst_attack"] == "gradient-label" and row["worst_recovery"] == 0.9
    assert row["snr"] == 0.25 and row["snr_token"] == 0.19
