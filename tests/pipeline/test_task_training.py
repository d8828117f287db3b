"""`flbench train --task`: loss on the answer only, the centralized reference equals split training at σ = 0,
adapters load back for `flbench eval --checkpoint`, and bad combinations fail with exit status 2."""
from __future__ import annotations

import json

import pytest
import torch

from flbench.pipeline.finetune import TrainConfig, batches, task_samples, text_samples, train
from flbench.tasks import get_task
from splits import SplitRuntime, SplitSpec
from splits.training import LoraSpec, adapter_state


def test_task_samples_put_the_loss_on_the_answer_only(tiny):
    task = get_task("sst2")
    examples = task.load("train", limit=6)
    samples = task_samples(tiny.tokenizer, task, examples, max_length=512)
    batch = next(batches(tiny.tokenizer, samples, TrainConfig(batch_size=6, seed=0), steps=1))
    answers = set()
    for row_ids, row_labels in zip(batch["input_ids"], batch["labels"]):
        kept = row_ids[row_labels != -100].tolist()
        answers.add(tiny.tokenizer.decode(kept))
        # everything before the answer (the prompt) is excluded from the loss
        first = int((row_labels != -100).nonzero()[0])
        assert first > 10
    assert answers <= {" negative", " positive"} and answers


def test_long_prompts_keep_the_whole_answer(tiny):
    task = get_task("sst2")
    ex = task.load("train", limit=1)
    (s,) = task_samples(tiny.tokenizer, task, ex, max_length=16)
    assert len(s.ids) == 16
    assert tiny.tokenizer.decode(list(s.ids[-s.n_loss:])) == task.train_pair(ex[0])[1]


def test_text_samples_label_every_token(tiny):
    (s,) = text_samples(tiny.tokenizer, ["hello world"], max_length=64)
    assert s.n_loss == len(s.ids)


def test_centralized_reference_matches_split_training_without_noise(tiny, tmp_path):
    """Same data order, init and budget: the unsplit run ends with the same adapters as the split run."""
    task = get_task("sst2")
    samples = task_samples(tiny.tokenizer, task, task.load("train", limit=16), max_length=64)
    cfg = TrainConfig(steps=3, batch_size=4, lr=1e-2, seed=0)
    lora = LoraSpec(rank=4, alpha=8)
    states, losses = {}, {}
    for mode in ("split", "centralized"):
        rt = SplitRuntime(tiny, SplitSpec(1, 1))
        out = tmp_path / mode
        out.mkdir()
        s = train(rt, samples, cfg, lora, out, {}, progress=False, centralized=(mode == "centralized"))
        assert s["mode"] == mode
        losses[mode] = [json.loads(line)["loss"] for line in (out / "losses.jsonl").read_text().splitlines()]
        states[mode] = {n: adapter_state(p) for n, p in rt.modules().items()}
    assert losses["split"] == pytest.approx(losses["centralized"], abs=1e-5)
    moved = 0
    for part, tensors in states["split"].items():
        for n, t in tensors.items():
            assert torch.allclose(t, states["centralized"][part][n], atol=1e-5), (part, n)
            moved += int("lora_B" in n and t.abs().max() > 0)
    assert moved > 0, "training did not move any lora_B"


def test_train_task_then_eval_checkpoint(cli, tmp_path):
    out = tmp_path / "ck"
    code, o, err = cli("train", "--model", "tiny-llama", "--split", "1,1", "--task", "sst2", "--steps", "2",
                       "--batch-size", "2", "--out", str(out), "--json")
    assert code == 0, err
    run = json.loads(o)
    assert run["mode"] == "split" and run["data"]["task"] == "sst2" and run["samples"] > 1000
    assert (out / "client0.head.safetensors").is_file() and (out / "trunk.safetensors").is_file()
    code, o, err = cli("eval", "--task", "sst2", "--checkpoint", str(out), "--limit", "4", "--json")
    assert code == 0, err
    assert json.loads(o)["n"] == 4


@pytest.mark.parametrize("argv,needle", [
    (["--task", "sst2", "--data-file", "x.txt"], "exactly one of"),
    ([], "exactly one of"),
    (["--task", "nope"], "nope"),
    (["--task", "sst2", "--centralized", "--noise-sigma", "0.5"], "--centralized"),
])
def test_train_task_bad_input(cli, tmp_path, argv, needle):
    code, _, err = cli("train", "--model", "tiny-llama", "--split", "1,1", "--steps", "1", "--out",
                       str(tmp_path / "o"), *argv)
    assert code == 2
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
