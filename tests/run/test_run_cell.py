"""`flbench run`: one cell → one record per attack with the full provenance; the utility and the attacks
run on the same split runtime with the defense on; bad combinations are one-line errors (exit 2)."""
from __future__ import annotations

import json

import pytest

from flbench.pipeline.cell import run_cell
from flbench.experiments.records import config_hash, is_done, read_records
from flbench.experiments.sweep import make_cell

REQUIRED = ("schema", "record_id", "config_hash", "config", "seeds", "versions", "commit", "date", "model", "split",
            "defense", "finetune", "task", "attack", "wire", "timings")


def test_run_writes_one_record_per_attack(cli, tmp_path):
    out = tmp_path / "runs"
    code, o, err = cli("run", "--model", "tiny-llama", "--split", "1,1", "--task", "sst2", "--task-limit", "4",
                       "--attack", "embedding-nn", "--attack", "output-inversion", "--noise-sigma", "0.5",
                       "--victim-limit", "4", "--out", str(out), "--json")
    assert code == 0, err
    recs = read_records(out)
    assert sorted(r["attack"]["name"] for r in recs) == ["embedding-nn", "output-inversion"]
    h = recs[0]["config_hash"]
    assert is_done(h, out) and config_hash(recs[0]["config"]) == h
    for r in recs:
        assert all(k in r for k in REQUIRED), [k for k in REQUIRED if k not in r]
        assert r["defense"]["name"] == "gaussian" and r["defense"]["noise_sigma"] == 0.5
        assert r["defense"]["snr"] is not None and r["defense"]["snr"] > 0
        assert r["task"]["name"] == "sst2" and r["task"]["n"] == 4 and "accuracy" in r["task"]["metrics"]
        assert r["wire"]["bytes_total"] > 0
        m = r["attack"]["metrics"]["token_accuracy"]
        assert m["ci_low"] <= m["mean"] <= m["ci_high"]
        assert r["model"]["weights_sha256"] and r["versions"]["torch"]
    assert json.loads(o)["paths"]


def test_centralized_reference_cell_has_no_wire(cli, tmp_path):
    code, o, err = cli("run", "--model", "tiny-llama", "--centralized", "--task", "sst2", "--task-limit", "4",
                       "--out", str(tmp_path), "--json")
    assert code == 0, err
    (r,) = read_records(tmp_path)
    assert r["split"] is None and r["attack"] is None and r["wire"]["bytes_total"] == 0


def test_attack_results_are_shared_across_tasks_but_utility_is_not(tiny_cells):
    a, b = tiny_cells
    assert a[0]["attack"]["metrics"] == b[0]["attack"]["metrics"]
    assert a[0]["task"]["name"] != b[0]["task"]["name"]
    assert a[0]["config_hash"] != b[0]["config_hash"]


@pytest.fixture
def tiny_cells():
    cells = [make_cell("tiny-llama", "1,1", {"name": "gaussian", "params": {"sigma": 0.3}}, {"name": t, "limit": 2},
                       None, ["embedding-nn"], {}, {"data": "private-records", "limit": 3}, 0) for t in ("sst2", "rte")]
    return [run_cell(c, progress=False) for c in cells]


def test_finetuned_cell_trains_then_scores(tmp_path):
    cell = make_cell("tiny-llama", "1,1", {"name": "none", "params": {}}, {"name": "sst2", "limit": 2},
                     {"steps": 1, "batch_size": 2, "max_length": 64}, ["embedding-nn"], {},
                     {"data": "private-records", "limit": 2}, 0)
    (r,) = run_cell(cell, progress=False)
    assert r["finetune"]["steps"] == 1 and r["finetune"]["wire_bytes"] > 0
    assert r["task"]["checkpoint_trained"] is True and "train_s" in r["timings"]


@pytest.mark.parametrize("argv,needle", [
    (["--centralized", "--task", "sst2", "--attack", "embedding-nn"], "--attack"),
    (["--centralized", "--task", "sst2", "--noise-sigma", "0.1"], "--defense"),
    (["--split", "1,1"], "nothing to run"),
    (["--split", "1,1", "--task", "sst2", "--secure-noise"], "--secure-noise"),
    (["--split", "1,1", "--attack", "nope"], "nope"),
    (["--split", "1,1", "--task", "sst2", "--task-limit", "0"], "--task-limit 0"),
    (["--split", "9,9", "--task", "sst2"], "9"),
])
def test_run_bad_input(cli, tmp_path, argv, needle):
    code, _, err = cli("run", "--model", "tiny-llama", "--out", str(tmp_path), *argv)
    assert code == 2, err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_leaderboard_and_plot_commands_on_run_records(cli, tmp_path):
    runs = tmp_path / "runs"
    for sigma in ("0", "0.5"):
        code, _, err = cli("run", "--model", "tiny-llama", "--split", "1,1", "--task", "sst2", "--task-limit", "2",
                           "--attack", "embedding-nn", "--noise-sigma", sigma, "--victim-limit", "2", "--out", str(runs))
        assert code == 0, err
    csv1, csv2 = tmp_path / "a.csv", tmp_path / "b.csv"
    assert cli("leaderboard", "--records", str(runs), "--out", str(csv1))[0] == 0
    assert cli("leaderboard", "--records", str(runs), "--out", str(csv2))[0] == 0
    assert csv1.read_bytes() == csv2.read_bytes()
    lines = csv1.read_text().splitlines()
    assert len(lines) == 3 and "dcs" in lines[0] and "pareto" in lines[0]
    code, md, _ = cli("leaderboard", "--records", str(runs), "--format", "md", "--stdout", "--task", "sst2")
    assert code == 0 and md.startswith("| model |") and md.count("\n") == 4
    code, _, err = cli("leaderboard", "--records", str(runs), "--stdout", "--attack", "nope")
    assert code == 2 and "nope" in err
    code, out, err = cli("plot", "--records", str(runs), "--out", str(tmp_path / "plots"))
    assert code == 0, err
    assert any(p.endswith(".svg") for p in out.split()) and any(p.endswith(".png") for p in out.split())
    code, _, err = cli("leaderboard", "--records", str(tmp_path / "empty"))
    assert code == 2 and "no run records" in err


def test_resumed_sweep_reuses_attack_results_from_records(tiny_cells):
    from flbench.pipeline import cell as cell_mod

    first = tiny_cells[0]
    cell_mod._ATTACKS.clear()
    assert cell_mod.seed_attack_memo(first) == 1
    other = make_cell("tiny-llama", "1,1", {"name": "gaussian", "params": {"sigma": 0.3}}, {"name": "wic", "limit": 2},
                      None, ["embedding-nn"], {}, {"data": "private-records", "limit": 3}, 0)
    (r,) = run_cell(other, progress=False)
    assert r["attack"]["reused_from"] == first[0]["record_id"]
    assert r["attack"]["metrics"] == first[0]["attack"]["metrics"]
    assert r["defense"]["snr"] == first[0]["defense"]["snr"]
