"""`flbench eval`: JSON contract, --centralized, checkpoints, and one-line errors with exit status 2."""
from __future__ import annotations

import json

import pytest
import torch

from evalhelp import eval_both

from flbench.data.paths import candidate_dirs

needs_data = pytest.mark.skipif(not (candidate_dirs()[0] / "superglue").is_dir(), reason="no real data")


@pytest.mark.parametrize("argv,needle", [
    (["--task", "nope"], "unknown task 'nope'; known: boolq, cb"),
    (["--task", "rte", "--limit", "0"], "'--limit': 0"),
    (["--task", "rte", "--model", "tiny-llama", "--data-dir", "/no/such/dir"], "superglue/rte.val.jsonl"),
    (["--task", "rte", "--centralized", "--noise-sigma", "1"], "--centralized"),
    (["--task", "rte", "--checkpoint", "/no/such/ckpt"], "run.json"),
])
def test_bad_input_one_line_exit_2(cli, argv, needle):
    code, out, err = cli("eval", *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err


@needs_data
def test_eval_json_split_vs_centralized(cli):
    res = eval_both(cli, "--task", "rte", "--model", "tiny-llama", "--split", "1,1", "--limit", "4", "--batch-size", "3")
    for o in res.values():
        assert o["task"] == "rte" and o["n"] == 4 and set(o["metrics"]) == {"accuracy"}
        assert {"bytes_total", "messages"} <= set(o["wire"]) and o["seconds"] >= 0
    assert res[False]["metrics"] == res[True]["metrics"] and res[False]["wire"]["bytes_total"] > 0
    for o in res.values():  # utility with its 95% CI over the 4 examples, beside the task's baselines
        ci = o["ci"]["accuracy"]
        assert ci["n"] == 4 and ci["mean"] == o["metrics"]["accuracy"] and ci["ci_low"] <= ci["mean"] <= ci["ci_high"]
        assert o["primary"] == "accuracy" and o["baselines"]["chance"]["metrics"] == {"accuracy": 0.5}
        assert set(o["baselines"]) == {"chance", "majority"}
    code, out, err = cli("eval", "--task", "rte", "--model", "tiny-llama", "--split", "1,1", "--limit", "4")
    assert code == 0 and "(95% CI; accuracy baselines: chance 0.500, majority " in out and "n=4" in out


@needs_data
def test_eval_checkpoint_from_train(cli, tiny_checkpoint):
    ck = tiny_checkpoint
    outs = eval_both(cli, "--task", "copa", "--checkpoint", str(ck), "--limit", "4")
    assert outs[False]["split"] == "1,1" and outs[False]["model"]["name"] == "tiny-llama"
    assert outs[False]["metrics"] == outs[True]["metrics"]
    # at another split the adapters move with their blocks (flbench.pipeline.repartition): the same scores
    code, out, err = cli("eval", "--task", "copa", "--checkpoint", str(ck), "--split", "2,1", "--limit", "4", "--json")
    assert code == 0, err[-800:]
    moved = json.loads(out)
    assert moved["split"] == "2,1" and moved["metrics"] == outs[False]["metrics"]


def test_eval_refuses_checkpoint_of_another_model(cli, tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "run.json").write_text(json.dumps({"model": {"name": "other", "weights_sha256": "0" * 64}, "split": "1,1",
                                             "lora": {"rank": 2, "alpha": 4, "target_modules": ["q_proj"],
                                                      "parts": ["trunk"]}}))
    from safetensors.torch import save_file

    save_file({"layers.0.self_attn.q_proj.lora_A.default.weight": torch.zeros(2, 64)}, str(ck / "trunk.safetensors"))
    code, _, err = cli("eval", "--task", "copa", "--model", "tiny-llama", "--checkpoint", str(ck),
                         "--data-dir", str(candidate_dirs()[0]), "--limit", "2")
    if code == 2 and "copa.val.jsonl" in err:
        pytest.skip("no real data")
    assert code == 2 and "was trained on model 'other'" in err and len(err.strip().splitlines()) == 1
