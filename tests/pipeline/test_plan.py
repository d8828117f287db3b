"""`flbench plan`: parameter counts sum to the model's, and the wire bytes it predicts are what the split
runtime really sends (decode step, prefill, training step) on tiny-llama."""
from __future__ import annotations

import pytest
import torch

from flbench.pipeline.plan import plan
from splits import SplitRuntime, SplitSpec
from splits.inference import split_generate
from splits.training import LoraSpec, SequentialTrainer

SPECS = [SplitSpec(0, 0), SplitSpec(1, 1), SplitSpec(2, 1), SplitSpec(0, 3), SplitSpec(3, 0)]


def test_parameters_sum_to_the_model(tiny):
    p = plan(tiny.model, SPECS, batch=2, seq_len=16)
    total = sum(t.numel() for t in tiny.model.parameters())  # the tied LM head once
    assert p["model"]["params"] == total and p["model"]["tied_embeddings"]
    v_d = tiny.model.lm_head.weight.numel()
    for spec in SPECS:
        rows = {r["party"]: r for r in p["rows"] if r["split"] == str(spec)}
        assert sum(r["params"] for r in rows.values()) == total
        assert rows["tail"]["params_held"] == rows["tail"]["params"] + v_d  # the tail's copy of the tied matrix
        assert [rows[k]["blocks"] for k in ("head", "trunk", "tail")] == [spec.p, 4 - spec.p - spec.q, spec.q]
        # the parties really hold that many parameters (deep copies: the tied matrix twice)
        rt = SplitRuntime(tiny, spec)
        held = {"head": rt.clients[0].head, "trunk": rt.server.trunk, "tail": rt.clients[0].tail}
        for k, part in held.items():
            assert rows[k]["params_held"] == sum(t.numel() for t in part.parameters()), (spec, k)
            assert rows[k]["weights_bytes"] == 4 * rows[k]["params_held"]
    half = plan(tiny.model, SPECS[:1], dtype="bf16")
    assert half["rows"][0]["weights_bytes"] == 2 * half["rows"][0]["params_held"]


def test_flops_and_memory_follow_the_blocks(tiny):
    p = plan(tiny.model, [SplitSpec(1, 1), SplitSpec(2, 1)], batch=1, seq_len=8)
    r = {(x["split"], x["party"]): x for x in p["rows"]}
    # one block more on the head is one block less on the trunk
    for key in ("flops_per_token_forward", "kv_cache_bytes", "train_activation_bytes"):
        assert r["2,1", "head"][key] - r["1,1", "head"][key] == r["1,1", "trunk"][key] - r["2,1", "trunk"][key] > 0
    assert all(x["flops_per_token_train"] == 3 * x["flops_per_token_forward"] for x in p["rows"])
    c = tiny.model.config
    hd = c.hidden_size // c.num_attention_heads
    assert r["1,1", "head"]["kv_cache_bytes"] == 2 * 1 * 8 * c.num_key_value_heads * hd * 4


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_wire_bytes_are_what_the_runtime_sends(tiny, dtype):
    b, t, n_new = 3, 5, 4
    ids = torch.randint(3, 200, (b, t), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    w = plan(tiny.model, [SplitSpec(1, 1)], batch=b, seq_len=t, wire_dtype=dtype)["wire"]
    rt = SplitRuntime(tiny, SplitSpec(1, 1), wire_dtype=dtype)
    split_generate(rt, ids, mask, n_new, kv_cache=True, eos_token_id=None)
    assert rt.wire.total(phase="DECODE") == (n_new - 1) * w["decode_step_bytes"]
    assert rt.wire.total(phase="PREFILL") == w["prefill_bytes"]
    rt = SplitRuntime(tiny, SplitSpec(2, 1), wire_dtype=dtype)
    SequentialTrainer(rt, LoraSpec(rank=2, alpha=4)).step(ids, mask)
    assert rt.wire.total(phase="TRAIN") == w["train_step_bytes"]
    assert w["train_forward_bytes"] + w["train_backward_bytes"] == w["train_step_bytes"]
