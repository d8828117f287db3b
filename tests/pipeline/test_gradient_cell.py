"""`flbench run --task T --finetune-steps N --attack gradient-label`: the cell attacks its OWN fine-tuning
traffic (the dL/dh_B the server received), reports label recovery beside the chance level, one record per
channel; `--grad-defense` puts a defense on that gradient (record block, leaderboard columns); the config of a
cell without one hashes as before."""
from __future__ import annotations

import json

import pytest

from flbench.experiments.records import read_records
from flbench.pipeline.cell import run_cell
from flbench.pipeline.config import RunConfig, validate
from flbench.reporting.leaderboard import GRAD_COLUMNS, build, build_worst_case

CELL = {"model": "tiny-llama", "split": "1,0", "task": {"name": "sst2", "limit": 2},
        "finetune": {"steps": 2, "batch_size": 4, "max_length": 64}, "victims": {"limit": 6}, "seed": 0}


@pytest.fixture(scope="module")
def records():
    undefended = run_cell(validate(RunConfig, {**CELL, "attacks": ["embedding-nn", "gradient-label"]}), progress=False)
    defended = run_cell(validate(RunConfig, {**CELL, "attacks": ["gradient-label"], "grad_defense": {
        "name": "grad-dp", "params": {"clip": 1e-4, "noise_multiplier": 10.0}}}), progress=False)
    return undefended, defended


def test_gradient_attack_reads_the_cells_own_training_traffic(records):
    undefended, _ = records
    assert [r["attack"]["name"] for r in undefended] == ["embedding-nn", "gradient-label"]
    fwd, grad = undefended
    a = grad["attack"]
    assert a["channel"] == "grad_b" and a["data"] == "train:sst2" and a["primary"] == "token_accuracy"
    assert a["n"] == 8  # the two training batches of 4 (victims.limit 6 rounds up to whole forwards)
    m = a["metrics"]
    assert m["label_accuracy"]["mean"] == 1.0 and m["token_accuracy"]["mean"] == 1.0  # exact at Q = 0
    assert m["label_chance"] == 0.5 and m["detection_precision"]["mean"] == 1.0
    assert a["examples"][0]["original"] == a["examples"][0]["recovered"] in (" positive", " negative")
    assert "channel" not in fwd["attack"] and fwd["attack"]["data"] == "private-records"
    assert "grad_defense" not in grad and "grad_defense" not in grad["config"]


def test_grad_defense_block_and_noise_hurts(records):
    (r,) = records[1]
    g = r["grad_defense"]
    assert g["name"] == "grad-dp" and g["noise_sigma"] == pytest.approx(1e-3) and g["epsilon"] > 0
    assert g["releases"] == 1 and r["config"]["grad_defense"]["params"]["clip"] == pytest.approx(1e-4)
    assert r["attack"]["metrics"]["label_accuracy"]["mean"] <= 0.5  # no better than guessing the class


def test_config_without_grad_defense_hashes_as_before():
    a = validate(RunConfig, {"task": "sst2"})
    b = validate(RunConfig, {"task": "sst2", "grad_defense": {"name": "none"}})
    assert a.hash == b.hash and "grad_defense" not in a.resolved()


def test_leaderboard_grad_columns_only_with_a_grad_defense(records):
    undefended, defended = records
    assert not set(GRAD_COLUMNS) & set(build(undefended).columns)
    df = build(undefended + defended)
    cols = list(df.columns)
    assert cols[cols.index("finetune_steps") + 1:cols.index("finetune_steps") + 4] == GRAD_COLUMNS
    row = df[df["grad_defense"] == "grad-dp"].iloc[0]
    assert row["grad_noise_sigma"] == pytest.approx(1e-3) and row["grad_epsilon"] > 0
    # the defended cell is not an undefended utility reference, and is a cell of its own
    assert df[df["grad_defense"].isna()]["cell"].nunique() == 1
    assert set(GRAD_COLUMNS) <= set(build_worst_case(undefended + defended).columns)


def test_cli_run_with_grad_defense(cli, tmp_path):
    code, o, err = cli("run", "--model", "tiny-llama", "--split", "1,0", "--task", "sst2", "--task-limit", "2",
                       "--finetune-steps", "1", "--finetune-batch-size", "4", "--finetune-max-length", "64",
                       "--attack", "gradient-label", "--victim-limit", "4", "--grad-defense", "grad-dp",
                       "--grad-clip", "1", "--grad-noise-multiplier", "1e-6", "--out", str(tmp_path), "--json")
    assert code == 0, err
    (r,) = read_records(tmp_path)
    assert r["grad_defense"]["name"] == "grad-dp" and r["config"]["grad_defense"]["params"]["noise_multiplier"] == 1e-6
    assert r["attack"]["metrics"]["label_accuracy"]["mean"] == 1.0  # tiny noise: the labels still come through
    assert json.loads(o)["records"][0]["record_id"] == r["record_id"]
