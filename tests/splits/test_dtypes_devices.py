"""Compute dtypes (`--dtype`) and party devices (`--device`, `--client-device`, `--server-device`).

Split == centralized holds per dtype, comparing like with like: the split at dtype D against the unsplit model
cast to D (`splits.parts.place`), so only the split's own effect is measured. fp32: 1e-4, as everywhere. bf16 and
fp16: the two sides run the same kernels in the same order on real tokens, but padded slots differ (the split
zero-fills them, the unsplit model embeds the pad ids), which changes reduction order in attention by a rounding
step; without padding the two are bitwise equal (checked). The bound is 4 units in the last place at the logits'
scale: 4·eps(D)·max|logits| (eps = 2^-7 for bf16, 2^-10 for fp16); measured worst cases on tiny-llama are about
1.6 eps (bf16) and 1.3 eps (fp16).
"""
from __future__ import annotations

import copy

import pytest
import torch

from splits import SplitRuntime, SplitSpec
from splits.parts import COMPUTE_DTYPES, place
from splits.inference import split_generate
from splitref import centralized_logits, hf_greedy, padded_batch
from flbench.core.errors import FlbenchError

EPS = {"fp32": None, "bf16": 2.0 ** -7, "fp16": 2.0 ** -10}


def tol(dtype: str, ref: torch.Tensor) -> float:
    return 1e-4 if dtype == "fp32" else 4 * EPS[dtype] * float(ref.float().abs().max())


@pytest.fixture(scope="module")
def refs(tiny):
    return {d: place(copy.deepcopy(tiny.model), "cpu", d) for d in COMPUTE_DTYPES}


CASES = [(SplitSpec(1, 1), [7, 12, 3], True), (SplitSpec(0, 2), [5, 9], False), (SplitSpec(2, 1), [12, 12], True),
         (SplitSpec(1, 0), [1, 10, 6, 4], False)]


@pytest.mark.parametrize("dtype", list(COMPUTE_DTYPES))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_split_forward_matches_centralized_per_dtype(tiny, refs, dtype, case):
    spec, lengths, left = CASES[case]
    ids, mask = padded_batch(lengths, left, vocab=tiny.model.config.vocab_size, seed=case)
    rt = SplitRuntime(tiny, spec, dtype=dtype)
    with torch.no_grad():
        got = rt.forward(ids, mask)
    ref = centralized_logits(refs[dtype], ids, mask)
    assert got.dtype == ref.dtype == COMPUTE_DTYPES[dtype]
    m = mask.bool()
    diff = float((got[m].float() - ref[m].float()).abs().max())
    assert diff <= tol(dtype, ref[m]), (dtype, spec, diff)
    assert rt.placement() == {"dtype": dtype, "client_device": "cpu", "server_device": "cpu"}
    # the wire still carries fp32 (its own dtype), whatever the compute dtype
    assert rt.wire.stats()["dtype"] == "fp32"


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_unpadded_split_is_bitwise_equal(tiny, refs, dtype):
    ids, mask = padded_batch([10, 10], False, vocab=tiny.model.config.vocab_size, seed=3)
    with torch.no_grad():
        got = SplitRuntime(tiny, SplitSpec(1, 1), dtype=dtype).forward(ids, mask)
    assert torch.equal(got, centralized_logits(refs[dtype], ids, mask))


@pytest.mark.parametrize("dtype", list(COMPUTE_DTYPES))
def test_greedy_tokens_identical_per_dtype(tiny, refs, dtype):
    """KV-cached split greedy generation at dtype D gives the unsplit model's tokens at D, token for token."""
    ids, mask = padded_batch([6, 9, 4], True, vocab=tiny.model.config.vocab_size, seed=11)
    rt = SplitRuntime(tiny, SplitSpec(1, 1), dtype=dtype)
    with torch.no_grad():
        got = split_generate(rt, ids, mask, 12, kv_cache=True).tokens
    want = hf_greedy(refs[dtype], ids, mask, 12, pad_token_id=0)
    assert torch.equal(got[:, : want.shape[1]], want), dtype


@pytest.mark.parametrize("dtype", list(COMPUTE_DTYPES))
def test_training_step_per_dtype_keeps_fp32_adapters(tiny, dtype):
    """A split LoRA step runs at every compute dtype on the CPU (fp16 included: measured to work with torch's
    CPU kernels); adapters stay fp32 master weights, their gradients finite."""
    from splits.training import LoraSpec, apply_lora, causal_lm_loss, labels_for

    rt = SplitRuntime(tiny, SplitSpec(1, 1), dtype=dtype)
    params = apply_lora(rt, LoraSpec(rank=4, alpha=8))
    flat = [p for ps in params.values() for p in ps]
    assert flat and all(p.dtype == torch.float32 for p in flat)
    frozen = [p for m in rt.modules().values() for n, p in m.named_parameters() if "lora_" not in n]
    assert all(p.dtype == COMPUTE_DTYPES[dtype] for p in frozen)
    ids, mask = padded_batch([8, 5], False, vocab=tiny.model.config.vocab_size, seed=1)
    logits, template = rt.train_forward(ids, mask)
    loss = causal_lm_loss(logits, labels_for(ids, mask))
    loss.backward()
    rt.backward(0, template)
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in flat)
    assert any(float(p.grad.abs().max()) > 0 for p in flat)


def test_per_party_devices_plumbing_on_cpu(tiny):
    rt = SplitRuntime(tiny, SplitSpec(1, 1), client_device="cpu", server_device="cpu:0")
    assert rt.placement() == {"dtype": "fp32", "client_device": "cpu", "server_device": "cpu"}
    assert all(p.device.type == "cpu" for m in rt.modules().values() for p in m.parameters())


def test_unavailable_cuda_is_refused_in_one_line(tiny, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FlbenchError) as e:
        SplitRuntime(tiny, SplitSpec(1, 1), server_device="cuda:0")
    assert "--server-device 'cuda:0'" in str(e.value) and "available here: cpu" in str(e.value)
    assert "\n" not in str(e.value)


def test_device_names_accepted_when_cuda_is_there(monkeypatch):
    from splits.parts import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda") == "cuda" and check_device("cuda:1") == "cuda:1" and check_device("cpu") == "cpu"
    with pytest.raises(FlbenchError, match="has 2 CUDA device"):
        check_device("cuda:2")
    with pytest.raises(FlbenchError, match="not a device name"):
        check_device("gpu0")
