"""`flbench run`: one cell → one record per attack with the full provenance; the utility and the attacks
run on the same split runtime with the defense on; bad combinations are one-line errors (exit 2)."""
from __future__ import annotations

import json
import math

import pytest

from attacks import attacks
from flbench.experiments.records import config_hash, is_done, read_records
from flbench.pipeline.cell import run_cell
from flbench.pipeline.config import RunConfig, validate


def _cell(task: str, **extra) -> RunConfig:
    return validate(RunConfig, {"model": "tiny-llama", "split": "1,1", "task": {"name": task, "limit": 2},
                                "attacks": ["embedding-nn"], "seed": 0, **extra})

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
        # the typical token's SNR of the attacked traffic, beside the all-coordinate one
        assert math.isfinite(r["defense"]["snr_token"]) and r["defense"]["snr_token"] > 0
        assert r["task"]["name"] == "sst2" and r["task"]["n"] == 4 and "accuracy" in r["task"]["metrics"]
        ci = r["task"]["ci"]["accuracy"]  # the point value stays in metrics; its 95% CI beside it
        assert ci["mean"] == r["task"]["metrics"]["accuracy"] and ci["n"] == 4 and ci["ci_low"] <= ci["ci_high"]
        assert r["task"]["baselines"]["chance"]["metrics"] == {"accuracy": 0.5}
        assert r["attack"]["primary"] == attacks.get(r["attack"]["name"]).primary_metric
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
    assert "snr_token" not in r["defense"]  # nothing noised: no SNR to record


def test_attack_results_are_shared_across_tasks_but_utility_is_not(tiny_cells):
    a, b = tiny_cells
    assert a[0]["attack"]["metrics"] == b[0]["attack"]["metrics"]
    assert a[0]["task"]["name"] != b[0]["task"]["name"]
    assert a[0]["config_hash"] != b[0]["config_hash"]


GAUSS = {"name": "gaussian", "params": {"sigma": 0.3}}


@pytest.fixture
def tiny_cells():
    cells = [_cell(t, defense=GAUSS, victims={"limit": 3}) for t in ("sst2", "rte")]
    return [run_cell(c, progress=False) for c in cells]


def test_finetuned_cell_trains_then_scores(tmp_path):
    cell = _cell("sst2", finetune={"steps": 1, "batch_size": 2, "max_length": 64}, victims={"limit": 2})
    (r,) = run_cell(cell, progress=False)
    assert r["finetune"]["steps"] == 1 and r["finetune"]["wire_bytes"] > 0
    assert r["finetune"]["lora_rank"] == 8 and r["config"]["finetune"]["lr"] == 0.001  # defaults filled in
    assert r["task"]["checkpoint_trained"] is True and "train_s" in r["timings"]


@pytest.mark.parametrize("argv,needle", [
    (["--centralized", "--task", "sst2", "--attack", "embedding-nn"], "--attack"),
    (["--centralized", "--task", "sst2", "--noise-sigma", "0.1"], "--defense"),
    (["--split", "1,1"], "nothing to run"),
    (["--split", "1,1", "--task", "sst2", "--secure-noise"], "--secure-noise"),
    (["--split", "1,1", "--attack", "nope"], "nope"),
    (["--split", "1,1", "--task", "sst2", "--task-limit", "0"], "--task-limit 0 is not accepted"),
    (["--split", "1;1", "--task", "sst2"], "--split '1;1' is not accepted"),
    (["--task", "sst2", "--finetune-steps", "0"], "--finetune-steps 0 is not accepted"),
    (["--task", "sst2", "--finetune-batch-size", "4"], "--finetune-batch-size needs --finetune-steps"),
    (["--finetune-steps", "3", "--attack", "embedding-nn"], "needs a task"),
    (["--task", "sst2", "--victim-limit", "3"], "--victim-limit needs --attack"),
    (["--attack", "embedding-nn", "--aux-data", ""], "--aux-data '' is not accepted"),
    (["--attack", "embedding-nn", "--aux-data", "enron"], "--aux-data enron is not accepted"),
    (["--attack", "embedding-nn", "--victims", "xsum"], "--victims xsum is not accepted"),
    (["--attack", "embedding-nn", "--attack-param", "foo=4"], "takes no parameter 'foo'"),
    (["--task", "sst2", "--attack", "map-inversion", "--surrogate-seed", "2"], "copy of a fine-tuned client"),
    (["--task", "sst2", "--finetune-steps", "1", "--attack", "map-inversion", "--surrogate-seed", "0"],
     "seed 0 is the client's"),
    (["--task", "sst2", "--attack", "map-inversion", "--surrogate-task", "rte"], "--surrogate-task needs --surrogate-seed"),
    (["--attack", "embedding-nn", "--attack-param", "output-inversion.steps=4"], "not among --attack"),
    (["--task", "sst2", "--seed", "-1"], "--seed -1 is not accepted"),
])
def test_run_bad_input_fails_before_the_model_is_loaded(cli, tmp_path, monkeypatch, argv, needle):
    from flbench.pipeline import cell as cell_mod

    def no_model(name):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(cell_mod, "cell_model", no_model)
    code, out, err = cli("run", "--model", "tiny-llama", "--out", str(tmp_path / "runs"), *argv)
    assert code == 2, err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("flbench: error: ") and out == "" and not (tmp_path / "runs").exists()


def test_run_split_too_deep_for_the_model(cli, tmp_path):
    code, _, err = cli("run", "--model", "tiny-llama", "--out", str(tmp_path), "--split", "9,9", "--task", "sst2")
    assert code == 2 and "9" in err and len(err.strip().splitlines()) == 1


def test_run_out_must_be_a_writable_directory(cli, tmp_path, monkeypatch):
    from flbench.pipeline import cell as cell_mod

    monkeypatch.setattr(cell_mod, "run_cell", lambda *a, **k: pytest.fail("ran with a bad --out"))
    f = tmp_path / "file"
    f.write_text("x")
    for out, needle in ((f, "is not a directory"), ("/proc/flbench-nope/runs", "cannot write")):
        code, _, err = cli("run", "--model", "tiny-llama", "--task", "sst2", "--out", str(out))
        assert code == 2 and "--out" in err and needle in err and len(err.strip().splitlines()) == 1, err
    # an existing records directory is fine (runs add to it)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "other.json").write_text("{}")
    monkeypatch.setattr(cell_mod, "run_cell", lambda *a, **k: (_ for _ in ()).throw(SystemExit(0)))
    code, _, err = cli("run", "--model", "tiny-llama", "--task", "sst2", "--out", str(tmp_path / "runs"))
    assert code == 0, err


def test_run_with_defaults_and_sweep_cell_spelling_them_out_hash_alike(cli, tmp_path):
    """One typed config: the record of `flbench run` carries the resolved config (every default filled in);
    a sweep cell that spells the same defaults out has the same hash, so the sweep sees the run's cell done."""
    runs = tmp_path / "runs"
    code, out, err = cli("run", "--model", "tiny-llama", "--split", "1,1", "--task", "sst2", "--task-limit", "2",
                         "--attack", "embedding-nn", "--victim-limit", "2", "--noise-sigma", "0.5",
                         "--out", str(runs), "--json")
    assert code == 0, err
    (rec,) = json.loads(out)["records"]
    assert rec["schema"] == 2 and rec["config_hash"] == config_hash(rec["config"])
    assert rec["config"]["victims"] == {"data": "private-records", "data_file": None, "limit": 2, "max_length": 64,
                                        "aux_data": ["xsum", "sst2"], "aux_limit": 2000}
    spec = tmp_path / "spelled.yaml"
    spec.write_text(
        "model: tiny-llama\nsplits: ['1, 1']\n"
        "defenses: [{name: gaussian, sigma: 0.5, relative: false}]\n"
        "attacks: [embedding-nn]\nattack_params: {embedding-nn: {metric: cosine, chunk: 4096, seed: 0}}\n"
        "tasks: [{name: sst2, limit: 2, batch_size: 8}]\n"
        "victims: {data: private-records, limit: 2, max_length: 64, aux_data: [xsum, sst2], aux_limit: 2000}\n"
        "seed: 0\n")
    code, listing, err = cli("sweep", str(spec), "--out", str(runs), "--dry-run")
    assert code == 0, err
    assert listing.split()[:2] == [rec["config_hash"], "done"]


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
    assert code == 0 and md.startswith("| model ") and md.count("\n") == 4
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
    other = _cell("wic", defense=GAUSS, victims={"limit": 3})
    (r,) = run_cell(other, progress=False)
    assert r["attack"]["reused_from"] == first[0]["record_id"]
    assert r["attack"]["metrics"] == first[0]["attack"]["metrics"]
    assert r["defense"]["snr"] == first[0]["defense"]["snr"]


def test_finetuned_dp_forward_cell_composes_the_training_epochs(monkeypatch):
    """Issue 10: the record states ε of the TRAINING examples over every epoch of the run (each one's h_A crossed
    the wire once per epoch), growing with the epochs, below the zCDP bound of the composed Gaussian mechanism
    (ρ = k Δ² / (2 s²) with Δ = 2C, s = z C; ε ≤ ρ + 2 sqrt(ρ ln 1/δ), Bun & Steinke 2016)."""
    import math

    from flbench.tasks import get_task

    cls = type(get_task("sst2"))
    orig = cls.load
    monkeypatch.setattr(cls, "load", lambda self, split="eval", data_dir=None, limit=None, seed=None:
                        orig(self, split, data_dir, 4 if split == "train" else limit, seed))
    dp = {"name": "dp-forward", "params": {"clip": 1.0, "noise_multiplier": 4.0}}
    got = {}
    for steps in (1, 6):  # batch 2 over 4 training examples: 1 and 3 epochs
        (r,) = run_cell(_cell("sst2", defense=dp, victims={"limit": 1},
                              finetune={"steps": steps, "batch_size": 2, "max_length": 48}), progress=False)
        got[steps] = r["finetune"]["accounting"]
    assert got[1]["releases"] == 1 and got[6]["releases"] == 3
    assert 0 < got[1]["epsilon"] < got[6]["epsilon"]
    for acc in got.values():
        rho = acc["releases"] * 2.0 ** 2 / (2 * 4.0 ** 2)
        assert acc["epsilon"] <= rho + 2 * math.sqrt(rho * math.log(1 / acc["delta"])) + 1e-9
        assert acc["unit"]  # the privacy unit is stated next to ε
    (plain,) = run_cell(_cell("sst2", defense=GAUSS, victims={"limit": 1},
                              finetune={"steps": 1, "batch_size": 2, "max_length": 48}), progress=False)
    assert "accounting" not in plain["finetune"]  # no formal guarantee, no statement


def test_finetuned_centralized_cell_runs_on_a_shallow_model():
    """The unsplit reference fine-tunes through an adapter layout that fits the model (tiny-llama has 4 blocks,
    too few for the 2,2 layout of the committed smollm2 records)."""
    cell = validate(RunConfig, {"model": "tiny-llama", "split": None, "task": {"name": "sst2", "limit": 2},
                                "finetune": {"steps": 1, "batch_size": 2, "max_length": 64}, "seed": 0})
    (r,) = run_cell(cell, progress=False)
    assert r["split"] is None and r["finetune"]["steps"] == 1 and r["task"]["checkpoint_trained"] is True
