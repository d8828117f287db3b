"""output-inversion's logit lens with an empty tail (Q = 0) reads exactly the model's greedy next tokens,
shifted onto the input positions as documented; learned-inversion's MLP decoder runs end to end."""
from __future__ import annotations

import torch

from attacks import Knowledge, capture, make_attack
from splits import SplitRuntime, SplitSpec


def test_logit_lens_alignment_at_q0(tiny):
    rt = SplitRuntime(tiny, SplitSpec(2, 0))
    knowledge = Knowledge.from_runtime(rt)
    texts = ["hello there", "a b"]
    aux = ["xyz", "xab", "qq"]
    obs, ids = capture(rt, texts, batch_size=2)
    rec = make_attack("output-inversion", knowledge).fit(aux, knowledge).invert(obs)
    for seq, got in zip(ids, rec):
        with torch.no_grad():
            greedy = tiny.model(torch.tensor([seq])).logits[0].argmax(-1).tolist()
        assert got[0] == tiny.tokenizer("x").input_ids[0]  # most frequent first aux token
        assert got[1:] == greedy[:-1]
        assert len(got) == len(seq)


def test_learned_inversion_mlp_decoder_runs(tiny):
    rt = SplitRuntime(tiny, SplitSpec(0, 1))
    knowledge = Knowledge.from_runtime(rt)
    obs, ids = capture(rt, ["hello world", "abc"], batch_size=2)
    attack = make_attack("learned-inversion", knowledge, decoder="mlp", steps=5, batch_size=2, mlp_hidden=32)
    rec = attack.fit(["some public text", "more text here"], knowledge).invert(obs)
    assert [len(r) for r in rec] == [len(i) for i in ids]
    assert attack.fit_log["steps"] == 5 and attack.fit_log["aux_texts"] == 2
