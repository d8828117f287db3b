"""Log-likelihood scoring through the split runtime equals a hand computation and the unsplit model."""
from __future__ import annotations

import pytest
import torch

from flbench.data.paths import candidate_dirs
from flbench.pipeline.utility import evaluate
from flbench.tasks import Example, get_task
from flbench.tasks.scoring import encode_pair, loglikelihoods, predict
from splits.partition import parse_split
from splits.runtime import SplitRuntime


def test_encode_pair_moves_trailing_space(tiny):
    tok = tiny.tokenizer
    a = encode_pair(tok, "Answer: ", "yes")
    b = encode_pair(tok, "Answer:", " yes")
    assert a == b and b.n_cont == len(tok(" yes", add_special_tokens=False)["input_ids"])
    t = encode_pair(tok, "x" * 50, " ok", max_length=10)
    assert len(t.ids) == 10 and t.n_cont == 3


def test_loglik_equals_hand_computation_through_split(tiny):
    tok = tiny.tokenizer
    ctx, conts = "The cat sat on the", [" mat", " quantum chromodynamics"]
    rt = SplitRuntime(tiny, parse_split("1,2"))
    reqs = [encode_pair(tok, ctx, c) for c in conts] + [encode_pair(tok, "short", " x")]  # padding in the batch
    got = loglikelihoods(rt.forward, reqs, tok.pad_token_id, batch_size=3)
    for req, value in zip(reqs, got):
        ids = torch.tensor([req.ids])
        with torch.no_grad():
            logp = torch.log_softmax(tiny.model(input_ids=ids).logits[0].double(), -1)
        n = len(req.ids)
        hand = sum(float(logp[i - 1, req.ids[i]]) for i in range(n - req.n_cont, n))
        assert value == pytest.approx(hand, abs=1e-4)
    assert rt.wire.stats()["messages"] == 2  # one batch: h_A to the server, h_B back


def _fake_examples(n: int = 6) -> list[Example]:
    words = ["sun", "a long rainy afternoon", "cats", "x", "the committee", "blue"]
    return [Example(id=str(i), label=i % 3,
                    fields={"premise": f"{words[i % 6]} is here and {words[(i + 2) % 6]}.", "hypothesis": words[(i + 1) % 6]})
            for i in range(n)]


@pytest.mark.parametrize("split_text,batch", [("1,1", 4), ("2,1", 5)])
def test_split_equals_centralized(tiny, split_text, batch):
    task = get_task("cb")
    ex = _fake_examples()
    tok = tiny.tokenizer
    rt = SplitRuntime(tiny, parse_split(split_text))
    p_split, s_split = predict(task, ex, tok, rt.forward, batch_size=batch)
    with torch.no_grad():
        p_cent, s_cent = predict(task, ex, tok, lambda i, m: tiny.model(input_ids=i, attention_mask=m).logits,
                                 batch_size=batch)
    assert p_split == p_cent
    assert torch.allclose(torch.tensor(s_split), torch.tensor(s_cent), atol=1e-4)


@pytest.mark.skipif(not (candidate_dirs()[0] / "superglue").is_dir(), reason="no real data")
def test_evaluate_split_and_centralized_on_real_data(tiny):
    s = evaluate("copa", tiny, parse_split("1,1"), limit=6, batch_size=4, progress=False)
    c = evaluate("copa", tiny, None, limit=6, batch_size=4, progress=False)
    for o in (s, c):
        assert set(o) >= {"task", "metrics", "n", "seconds", "wire"} and o["n"] == 6
        assert 0.0 <= o["metrics"]["accuracy"] <= 1.0
    assert s["metrics"] == c["metrics"]
    assert s["wire"]["bytes_total"] > 0 and s["wire"]["messages"] == 2 * 3  # 12 sequences / 4 per batch
    assert c["wire"] == {"bytes_total": 0, "messages": 0}
