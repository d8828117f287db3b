"""`flbench attack` contract on tiny-llama: JSON keys, the P=0 exactness check, and bad input."""
from __future__ import annotations

import json

import pytest

BASE = ["attack", "--model", "tiny-llama", "--attack", "embedding-nn", "--limit", "8", "--aux-limit", "20"]


def test_attack_json_contract_and_exact_inversion_at_p0(cli):
    code, out, _ = cli(*BASE, "--split", "0,1", "--json")
    assert code == 0
    obj = json.loads(out)
    for key in ("model", "split", "attack", "defense", "defense_params", "noise_sigma", "snr", "epsilon", "delta",
                "n", "metrics", "seconds", "examples"):
        assert key in obj, key
    assert set(obj["metrics"]) >= {"token_accuracy", "token_f1", "rouge_l", "bleu", "exact_match", "pii_recovery"}
    assert obj["metrics"]["token_accuracy"]["mean"] >= 0.99
    assert obj["n"] == 8 and obj["defense"] == "none" and len(obj["examples"]) == 3
    assert set(obj["seconds"]) == {"fit", "invert"}


def test_noise_sigma_alone_means_gaussian_and_hurts_recovery(cli):
    code, out, _ = cli(*BASE, "--split", "0,1", "--noise-sigma", "2.0", "--json")
    obj = json.loads(out)
    assert code == 0 and obj["defense"] == "gaussian" and obj["noise_sigma"] == 2.0
    assert obj["metrics"]["token_accuracy"]["mean"] < 0.5
    assert obj["snr"]["rms"] is not None and obj["snr"]["rms"] < 1


def test_dp_forward_reports_epsilon(cli):
    code, out, _ = cli(*BASE, "--split", "0,1", "--defense", "dp-forward", "--dp-clip", "1",
                       "--noise-multiplier", "2", "--json")
    obj = json.loads(out)
    assert code == 0 and obj["epsilon"] > 0 and obj["delta"] == 1e-5


def test_limit_larger_than_data_uses_what_there_is(cli, tmp_path):
    f = tmp_path / "v.txt"
    f.write_text("alice at alice@example.com\nbob calls 555-123-4567\n")
    code, out, err = cli(*BASE[:-4], "--limit", "5", "--aux-limit", "20", "--split", "0,1",
                         "--data-file", str(f), "--json")
    assert code == 0 and json.loads(out)["n"] == 2 and "fewer than --limit 5" in err


@pytest.mark.parametrize("extra,needle", [
    (["--attack", "nope"], "known: embedding-nn"),
    (["--noise-sigma", "-0.1"], "sigma"),
    (["--noise-sigma", "nan"], "sigma"),
    (["--defense", "dp-forward", "--dp-clip", "1", "--noise-multiplier", "0"], "noise"),
    (["--defense", "dp-forward", "--dp-clip", "1", "--noise-multiplier", "1", "--dp-delta", "1.5"], "delta"),
    (["--limit", "0"], "--limit 0 is not accepted"),
    (["--max-length", "-3"], "--max-length -3 is not accepted"),
    (["--aux-limit", "0"], "--aux-limit 0 is not accepted"),
    (["--attack-param", "metric=manhattan"], "manhattan"),
    (["--attack-param", "bogus=1"], "bogus"),
    (["--attack-param", "foo=4"], "takes no parameter 'foo'"),
    (["--attack-param", "chunk=abc"], "chunk='abc'"),
    (["--attack-param", "chunk=0"], "chunk=0"),
    (["--attack-param", "chunk=-5"], "chunk=-5"),
    (["--attack-param", "chunk"], "expected key=value"),
    (["--aux-data", "private-records"], "private-records"),
    (["--aux-data", ""], "--aux-data '' is not accepted"),
    (["--data", "xsum"], "--data xsum is not accepted"),
    (["--data", "enron", "--data-file", "victims.txt"], "--data-file: give either"),
    (["--data-file", "/nonexistent/v.txt"], "--data-file /nonexistent/v.txt is not accepted; no such file"),
    (["--split", "1;1"], "--split '1;1' is not accepted"),
    (["--model", "no-such-model"], "--model no-such-model is not accepted"),
])
def test_attack_bad_input_fails_before_any_loading(cli, tmp_path, monkeypatch, extra, needle):
    """One line, exit 2, and nothing loaded or captured: every input is checked first."""
    import flbench.models
    from flbench.pipeline import attack as attack_mod

    def never(*a, **k):
        raise AssertionError("loaded or captured before the input was checked")

    monkeypatch.setattr(flbench.models, "load_model", never)
    monkeypatch.setattr(attack_mod, "run_attack", never)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "victims.txt").write_text("alice at alice@example.com\n")
    code, out, err = cli(*BASE, "--split", "0,1", *extra)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err


def test_data_file_alone_replaces_the_default_corpus(cli, tmp_path, monkeypatch):
    """Only an explicitly given --data conflicts with --data-file; the default corpus simply steps aside."""
    from flbench.pipeline import attack as attack_mod

    seen = {}

    def fake_run(cfg, defense, gen, **kwargs):
        seen["victims"] = cfg.victims
        return {"ok": True}

    monkeypatch.setattr(attack_mod, "run_attack", fake_run)
    f = tmp_path / "v.txt"
    f.write_text("alice\n")
    code, _, err = cli(*BASE, "--split", "0,1", "--data-file", str(f), "--json")
    assert code == 0, err
    assert seen["victims"].data is None and seen["victims"].data_file == str(f) and seen["victims"].limit == 8


def test_empty_data_file(cli, tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("")
    code, _, err = cli(*BASE, "--split", "0,1", "--data-file", str(f))
    assert code == 2 and str(f) in err


def test_attack_with_task_reports_utility_on_the_same_defended_split(cli):
    """The README's first command: recovery and utility side by side, from one invocation."""
    code, out, err = cli("attack", "--model", "tiny-llama", "--split", "1,1", "--attack", "embedding-nn",
                         "--limit", "4", "--aux-limit", "20", "--noise-sigma", "0.5", "--noise-relative",
                         "--task", "sst2", "--task-limit", "12", "--json")
    assert code == 0, err
    obj = json.loads(out)
    u = obj["utility"]
    assert u["task"] == "sst2" and u["n"] == 12 and u["primary"] in u["metrics"]
    assert 0.0 <= u["metrics"][u["primary"]] <= 1.0
    ci = u["ci"][u["primary"]]  # utility is never reported without its 95% CI and baselines
    assert ci["ci_low"] <= u["metrics"][u["primary"]] <= ci["ci_high"]
    assert u["baselines"]["chance"]["metrics"][u["primary"]] == 0.5
    assert obj["defense"] == "gaussian" and obj["n"] == 4 and "token_accuracy" in obj["metrics"]
    code, out, err = cli("attack", "--model", "tiny-llama", "--split", "1,1", "--attack", "embedding-nn",
                         "--limit", "4", "--aux-limit", "20", "--task", "sst2", "--task-limit", "12")
    assert code == 0 and "utility through the same split and defense: sst2 (n=12)" in out
    assert "(95% CI; baselines: chance 0.500" in out
    assert "original :" in out and "recovered:" in out
