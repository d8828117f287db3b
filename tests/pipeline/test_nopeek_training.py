"""`flbench train --defense nopeek`: the penalty is logged per step; the checkpoint is then evaluated and
attacked with --defense nopeek (identity on the wire)."""
from __future__ import annotations

import json


def test_train_nopeek_logs_dcor_then_eval_and_attack(cli, tmp_path):
    data = tmp_path / "t.txt"
    data.write_text("the quick brown fox jumps over the lazy dog again\nhello world, a small text for nopeek\n")
    out = tmp_path / "ck"
    code, o, err = cli("train", "--model", "tiny-llama", "--split", "1,1", "--data-file", str(data), "--steps", "2",
                       "--batch-size", "2", "--max-length", "32", "--defense", "nopeek", "--nopeek-weight", "1.0",
                       "--out", str(out), "--json")
    assert code == 0, err
    run = json.loads(o)
    assert run["defense"]["name"] == "nopeek" and run["defense"]["params"] == {"weight": 1.0}
    rows = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert 0 < r["dcor"] <= 1 and abs(r["penalty"] - 1.0 * r["dcor"]) < 1e-6
        assert abs(r["loss"] - (r["lm_loss"] + r["penalty"])) < 1e-9
    code, o, err = cli("eval", "--task", "sst2", "--checkpoint", str(out), "--limit", "2", "--defense", "nopeek",
                       "--nopeek-weight", "1.0", "--json")
    assert code == 0, err
    code, o, err = cli("attack", "--model", "tiny-llama", "--split", "1,1", "--attack", "embedding-nn", "--data-file",
                       str(data), "--limit", "2", "--max-length", "16", "--defense", "nopeek", "--nopeek-weight",
                       "1.0", "--json")
    assert code == 0, err


def test_nopeek_needs_its_weight(cli, tmp_path):
    code, _, err = cli("train", "--model", "tiny-llama", "--split", "1,1", "--steps", "1", "--out",
                       str(tmp_path / "o"), "--task", "sst2", "--defense", "nopeek")
    assert code == 2 and "--nopeek-weight" in err and len(err.strip().splitlines()) == 1
