"""`flbench attack --checkpoint`: the victim runs fine-tuned adapters the attacker does not know."""
from __future__ import annotations

import json

import pytest


@pytest.fixture
def checkpoint(tmp_path, cli):
    out = tmp_path / "run"
    code, _, err = cli("train", "--model", "tiny-llama", "--split", "1,1", "--task", "sst2", "--steps", "2",
                       "--batch-size", "2", "--lr", "0.05", "--out", str(out))
    assert code == 0, err
    return out


def test_the_victim_runs_the_checkpoint_and_the_attacker_notices(cli, checkpoint):
    code, out, err = cli("attack", "--model", "tiny-llama", "--split", "1,1", "--limit", "2", "--aux-limit", "2",
                         "--attack-param", "candidates=all", "--checkpoint", str(checkpoint), "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["checkpoint"] == str(checkpoint)
    # the victim's head differs from the public one: map-inversion measured the mismatch it scored with
    assert res["diagnostics"]["model_mismatch"] is not None
    code, out, err = cli("attack", "--model", "tiny-llama", "--split", "1,1", "--limit", "2", "--aux-limit", "2",
                         "--attack-param", "candidates=all", "--json")
    assert code == 0 and json.loads(out)["checkpoint"] is None
    assert json.loads(out)["diagnostics"]["model_mismatch"] is None


@pytest.mark.parametrize("args, match", [
    (["--split", "2,1"], "was trained at --split 1,1, not 2,1"),
    (["--split", "1,1", "--checkpoint", "/nonexistent/dir"], "/nonexistent/dir"),
])
def test_a_bad_checkpoint_is_one_line(cli, checkpoint, args, match):
    extra = [] if "--checkpoint" in args else ["--checkpoint", str(checkpoint)]
    code, out, err = cli("attack", "--model", "tiny-llama", "--limit", "2", *extra, *args)
    assert code == 2 and out == "" and match in err and len(err.strip().splitlines()) == 1, err


def test_the_attacker_can_run_its_own_surrogate_head(cli, checkpoint):
    """--attacker-checkpoint: the attacker's own adapters. Given the victim's very checkpoint as the surrogate (the
    best case of an adaptive attacker), the mismatch disappears; the record names both checkpoints."""
    code, out, err = cli("attack", "--model", "tiny-llama", "--split", "1,1", "--limit", "2", "--aux-limit", "2",
                         "--attack-param", "candidates=all", "--checkpoint", str(checkpoint),
                         "--attacker-checkpoint", str(checkpoint), "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["attacker_checkpoint"] == str(checkpoint) and res["checkpoint"] == str(checkpoint)
    assert res["diagnostics"]["model_mismatch"] is None
    assert res["metrics"]["token_accuracy"]["mean"] == 1.0
    code, out, err = cli("attack", "--model", "tiny-llama", "--split", "2,1", "--limit", "2",
                         "--attacker-checkpoint", str(checkpoint))
    assert code == 2 and "--attacker-checkpoint" in err and "was trained at --split 1,1" in err, err
