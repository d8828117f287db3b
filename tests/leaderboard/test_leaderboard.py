"""Leaderboard: columns, DCS (VFLAIR-LLM), Pareto flags, byte-deterministic CSV, Markdown."""
from __future__ import annotations

import math
import random

import pytest

from synth_records import grid, record

from flbench.reporting import leaderboard as lb
from flbench.core.errors import FlbenchError
from flbench.experiments.records import write_record
from flbench.experiments.sweep import make_cell


def test_columns_in_order():
    df = lb.build(grid())
    cols = list(df.columns)
    assert cols[:17] == lb.HEAD_COLUMNS
    assert cols[17:] == ["bleu", "task", "task_n", "utility", "u_accuracy", "u_f1", "utility_ref", "dcs", "pareto",
                         "wire_bytes", "seconds", "config_hash", "commit"]
    assert "date" not in cols
    assert len(df) == 1 + 2 * (1 + 4 + 2)


def test_dcs_formula_and_reference():
    assert lb.dcs(0.0, 0.8, 0.8) == 1.0
    ap, mp, ref = 0.3, 0.7, 0.8
    assert lb.dcs(ap, mp, ref) == pytest.approx(1 / (1 + math.sqrt(0.5 * ap**2 + 0.5 * (mp - ref) ** 2)))
    assert math.isnan(lb.dcs(float("nan"), 0.7, 0.8))
    df = lb.build(grid())
    row = df[(df["split"] == "2,2") & (df["defense"] == "gaussian") & (df["noise_sigma"] == 2)].iloc[0]
    none = df[(df["split"] == "2,2") & (df["defense"] == "none")].iloc[0]
    assert row["utility_ref"] == none["utility"]  # MP* = undefended utility at the same split
    assert row["dcs"] == pytest.approx(lb.dcs(row["token_accuracy"], row["utility"], none["utility"]))
    central = df[df["split"] == "centralized"].iloc[0]
    assert math.isnan(central["dcs"]) and central["attack"] is None and not central["pareto"]


def test_reference_falls_back_to_centralized_then_nan():
    recs = [r for r in grid() if r["defense"]["name"] != "none" or r["split"] is None]
    df = lb.build(recs)
    assert (df.loc[df["split"] != "centralized", "utility_ref"] == 0.9).all()
    df = lb.build([r for r in recs if r["split"] is not None])
    assert df["utility_ref"].isna().all() and df["dcs"].isna().all()


def test_pareto_flags():
    assert lb.pareto_flags([0.9, 0.8, 0.7, 0.7], [0.9, 0.5, 0.6, 0.6]) == [True, True, False, False]
    assert lb.pareto_flags([0.5, 0.5], [0.2, 0.2]) == [True, True]  # ties: neither dominates
    assert lb.pareto_flags([float("nan"), 0.5], [0.1, 0.2]) == [False, True]
    df = lb.build(grid())
    g = df[df["attack"].notna()]
    for _, r in g.iterrows():  # brute-force definition
        others = g[g["config_hash"] != r["config_hash"]]
        dom = ((others["utility"] >= r["utility"]) & (others["token_accuracy"] <= r["token_accuracy"])
               & ((others["utility"] > r["utility"]) | (others["token_accuracy"] < r["token_accuracy"]))).any()
        assert r["pareto"] == (not dom)
    # the undefended 2,2 row is dominated by the undefended 1,1 row in the synthetic data
    assert not g[(g["split"] == "2,2") & (g["defense"] == "none")]["pareto"].iloc[0]


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
    assert row["commit"] == "abc-dirty" and row["snr"] == float("inf")
    csv = lb.to_csv(df)
    assert ",inf," in csv
    md = lb.to_markdown(df)
    assert "∞" in md and "0.500 [0.480, 0.520]" in md


def test_markdown_table():
    df = lb.build(grid())
    md = lb.to_markdown(df)
    lines = md.splitlines()
    assert lines[0] == "| " + " | ".join(lb.MD_COLUMNS) + " |"
    assert lines[1] == "|" + "|".join(["---"] * len(lb.MD_COLUMNS)) + "|"
    assert len(lines) == 2 + len(df)
    assert all(line.count("|") == len(lb.MD_COLUMNS) + 1 for line in lines)
    assert "| 1,1 |" in md and "✓" in md
    small = lb.to_markdown(df, columns=["split", "dcs"])
    assert small.splitlines()[0] == "| split | dcs |"
    with pytest.raises(FlbenchError, match="no column 'nope'"):
        lb.to_markdown(df, columns=["nope"])


def test_write_leaderboard_errors(tmp_path):
    with pytest.raises(FlbenchError, match="no records under"):
        lb.write_leaderboard(tmp_path, tmp_path / "x.csv")
    with pytest.raises(FlbenchError, match="accepted: csv, md"):
        lb.write_leaderboard(tmp_path, tmp_path / "x.csv", fmt="xlsx")
