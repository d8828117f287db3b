"""`--grad-defense NAME` (+ its flags) on `flbench train` and `flbench run`: the defense on the gradient the
client's tail sends back. A defense on an edge it does not declare, and the gradient options where there is no
gradient, are one-line refusals with exit status 2."""
from __future__ import annotations

import json

import pytest

T = ["--model", "tiny-llama", "--split", "1,1"]
GRAD_DP = ["--grad-defense", "grad-dp", "--grad-clip", "1", "--grad-noise-multiplier", "0.5"]


@pytest.mark.parametrize("argv,needle", [
    (["train", *T, "--task", "sst2", "--defense", "grad-dp", "--grad-clip", "1", "--grad-noise-multiplier", "1"],
     "--defense grad-dp: defense 'grad-dp' cannot sit on the head's hidden states h_A"),
    (["train", *T, "--task", "sst2", "--grad-defense", "gaussian"],
     "--grad-defense gaussian: defense 'gaussian' cannot sit on the tail's gradient dL/dh_B"),
    (["train", *T, "--task", "sst2", "--grad-defense", "dp-forward"], "cannot sit on the tail's gradient"),
    (["run", *T, "--task", "sst2", "--finetune-steps", "1", "--grad-defense", "gaussian"],
     "--grad-defense gaussian: defense 'gaussian' cannot sit on the tail's gradient"),
    (["run", *T, "--task", "sst2", "--defense", "grad-dp", "--grad-clip", "1", "--grad-noise-multiplier", "1"],
     "--defense grad-dp: defense 'grad-dp' cannot sit on"),
    (["generate", *T, "--prompt", "hi", "--defense", "grad-dp"], "cannot sit on the head's hidden states"),
    (["run", *T, "--task", "sst2", *GRAD_DP], "--grad-defense grad-dp needs --finetune-steps"),
    (["run", *T, "--task", "sst2", "--finetune-steps", "1", "--grad-defense", "grad-dp", "--grad-clip", "1"],
     "--grad-defense grad-dp needs --grad-noise-multiplier"),
    (["run", *T, "--task", "sst2", "--finetune-steps", "1", "--grad-clip", "1"],
     "--grad-clip 1.0 does not apply to --grad-defense none"),
    (["train", "--model", "tiny-llama", "--centralized", "--task", "sst2", *GRAD_DP],
     "--grad-defense grad-dp has no effect with --centralized"),
    (["run", *T, "--task", "sst2", "--attack", "gradient-label"], "give finetune (--finetune-steps)"),
    (["attack", *T, "--attack", "gradient-label"], "reads the gradients of fine-tuning traffic"),
])
def test_refused_in_one_line(cli, tmp_path, argv, needle):
    code, out, err = cli(*argv, *(["--out", str(tmp_path / "o")] if argv[0] in ("train", "run") else []))
    assert code == 2, err
    assert needle in err and "Traceback" not in err and out == ""
    assert len(err.strip().splitlines()) == 1, err


def test_train_with_grad_defense(cli, tmp_path):
    code, o, err = cli("train", *T, "--task", "sst2", "--steps", "1", "--batch-size", "2", "--max-length", "48",
                       *GRAD_DP, "--out", str(tmp_path / "o"), "--json")
    assert code == 0, err
    run = json.loads(o)
    assert run["grad_defense"]["name"] == "grad-dp" and run["grad_defense"]["params"]["clip"] == 1.0
    assert run["grad_defense_stats"]["calls"] == 1 and run["defense"]["name"] == "none"
    saved = json.loads((tmp_path / "o" / "run.json").read_text())
    assert saved["grad_defense"]["edges"] == ["grad_b"]
