"""Generative evaluation: KV-cached split generation (defense on the wire) gives the same greedy predictions
as the unsplit model; the stop string ends generation without changing a prediction; output keys; CLI,
checkpoints and one real-model check."""
from __future__ import annotations


import pytest
import torch
from evalhelp import eval_both

from flbench.pipeline.utility import evaluate
from flbench.tasks import get_task
from flbench.tasks.private_qa import PrivateQA
from flbench.pipeline.textgen import generate_predictions, left_pad, with_stop_tokens
from splits.partition import parse_split
from splits.runtime import SplitRuntime


def test_split_generation_equals_centralized(tiny):
    s = evaluate("private-qa", tiny, parse_split("1,1"), limit=5, batch_size=3, progress=False)
    c = evaluate("private-qa", tiny, None, limit=5, batch_size=3, progress=False)
    for o in (s, c):
        assert o["task"] == "private-qa" and o["kind"] == "generate" and o["n"] == 5
        assert set(o["metrics"]) == {"em", "f1"} and o["seconds"] >= 0 and o["new_tokens"] > 0
        assert len(o["examples"]) == 3 and all(set(e) == {"prompt_tail", "prediction", "references"} for e in o["examples"])
        assert o["examples"][0]["prompt_tail"].endswith("\nAnswer:")
    assert s["examples"] == c["examples"] and s["metrics"] == c["metrics"] and s["new_tokens"] == c["new_tokens"]
    assert s["rounds"] == c["rounds"] == 1
    w = s["wire"]
    assert w["bytes_total"] > w["bytes_prefill"] > 0
    # two batches (3 + 2); each round trip is two messages: one prefill + decode steps per batch
    assert w["messages"] == 2 * (2 + w["decode_steps"])
    assert c["wire"]["bytes_total"] == 0 and c["wire"]["messages"] == 0


class _StopJ(PrivateQA):
    """private-qa with a stop string that the random tiny model emits often."""

    name = "private-qa-j"
    stop = "j"
    max_new_tokens = 24


def test_stop_tokens_end_generation_without_changing_predictions(tiny, monkeypatch):
    import flbench.pipeline.textgen as textgen

    task = _StopJ()
    ex = task.load("eval", limit=6)
    rt = SplitRuntime(tiny, parse_split("2,1"))
    early = generate_predictions(task, ex, tiny, runtime=rt, batch_size=4)
    monkeypatch.setattr(textgen, "stop_token_ids", lambda tok, stop: [])
    full = generate_predictions(task, ex, tiny, runtime=rt, batch_size=4)
    assert any("j" in r for r in full.raw)  # the stop string does occur
    assert early.predictions == full.predictions
    assert early.new_tokens < full.new_tokens and early.wire["bytes_total"] < full.wire["bytes_total"]
    assert all("j" not in p for p in early.predictions) and any("j" in r for r in early.raw)


SCRIPT = "\n\nHello world\nmore text"


def _scripted_run_generation(tok):
    """A fake run_generation whose 'greedy model' always continues SCRIPT from wherever the prompt left it."""
    from flbench.pipeline.generation import GenerateResult

    script = tok(SCRIPT, add_special_tokens=False)["input_ids"]

    def run(loaded, ids, mask, max_new_tokens, mode="kv-cache", spec=None, runtime=None, stop_at_eos=True):
        eos = set(loaded.model.generation_config.eos_token_id)
        out = []
        for row, m in zip(ids.tolist(), mask.tolist()):
            real = [t for t, keep in zip(row, m) if keep]
            k = max(k for k in range(len(script) + 1) if k == 0 or real[-k:] == script[:k])
            new = []
            for t in script[k:k + max_new_tokens]:
                new.append(t)
                if t in eos:
                    break
            out.append(new)
        return GenerateResult(mode, out, 0.0, {"bytes_total": 10, "messages": 2})

    return run


@pytest.mark.parametrize("max_new,prediction,rounds,n_new", [(24, "Hello world", 3, 14), (5, "Hel", 3, 5)])
def test_stop_in_leading_whitespace_is_continued(tiny, monkeypatch, max_new, prediction, rounds, n_new):
    import flbench.pipeline.textgen as textgen

    class Task(PrivateQA):
        max_new_tokens = max_new

    monkeypatch.setattr(textgen, "run_generation", _scripted_run_generation(tiny.tokenizer))
    task = Task()
    ex = task.load("eval", limit=2)
    res = generate_predictions(task, ex, tiny, runtime=object(), batch_size=2)
    # pass 1 stops at the first "\n" (nothing but whitespace yet), pass 2 at the second, pass 3 after the text
    assert res.predictions == [prediction, prediction] and res.rounds == rounds
    assert res.new_tokens == 2 * n_new and res.wire["bytes_total"] == 10 * rounds
    assert res.raw[0] == SCRIPT[:n_new]


def test_stop_view_leaves_the_model_alone(tiny):
    before = tiny.model.generation_config.eos_token_id
    view = with_stop_tokens(tiny, [5, 6])
    assert view.model.generation_config.eos_token_id == [2, 5, 6] and view.model.config is tiny.model.config
    assert tiny.model.generation_config.eos_token_id == before and view.tokenizer is tiny.tokenizer


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8]], 0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_defense_on_the_wire_of_generation(tiny):
    from defenses import make_defense, make_generator

    zero = evaluate("private-qa", tiny, parse_split("1,1"), make_defense("gaussian", sigma=0.0), make_generator(seed=0),
                    limit=3, progress=False)
    cent = evaluate("private-qa", tiny, None, limit=3, progress=False)
    assert zero["examples"] == cent["examples"]
    noisy = evaluate("private-qa", tiny, parse_split("1,1"), make_defense("gaussian", sigma=50.0),
                     make_generator(seed=0), limit=3, progress=False)
    assert noisy["defense"] is not None and noisy["wire"]["bytes_total"] > 0
    assert [e["prediction"] for e in noisy["examples"]] != [e["prediction"] for e in cent["examples"]]


def test_eval_cli_generative_json(cli):
    outs = eval_both(cli, "--task", "private-qa", "--model", "tiny-llama", "--split", "1,1", "--limit", "3",
                     "--batch-size", "2")
    assert outs[False]["examples"] == outs[True]["examples"] and outs[False]["wire"]["bytes_total"] > 0
    assert {"task", "metrics", "n", "seconds", "wire", "examples", "ci", "baselines"} <= set(outs[False])
    o = outs[False]
    assert set(o["ci"]) == {"em", "f1"} and all(c["n"] == 3 for c in o["ci"].values())
    assert o["baselines"]["chance"]["metrics"] is None and set(o["baselines"]["majority"]["metrics"]) == {"em", "f1"}


def test_eval_generative_with_checkpoint(cli, tiny_checkpoint):
    ck = tiny_checkpoint
    outs = eval_both(cli, "--task", "private-qa", "--checkpoint", str(ck), "--limit", "3")
    assert outs[False]["checkpoint"] == str(ck) and outs[False]["examples"] == outs[True]["examples"]


@pytest.mark.real_model
def test_real_model_split_generation_equals_centralized(smol):
    torch.manual_seed(0)
    task = get_task("private-qa")
    s = evaluate(task, smol, parse_split("2,2"), limit=2, batch_size=2, progress=False)
    c = evaluate(task, smol, None, limit=2, batch_size=2, progress=False)
    assert [e["prediction"] for e in s["examples"]] == [e["prediction"] for e in c["examples"]]
    assert all(e["prediction"] for e in s["examples"]) and s["wire"]["bytes_total"] > 0
