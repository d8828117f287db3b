"""Exact wire byte counts: header + per-sample ints + real-token payload, per direction, kind and phase."""
from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splits import SplitRuntime, SplitSpec
from splits.inference import split_generate
from splits.wire import HEADER_BYTES
from splitref import padded_batch

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def msg_bytes(batch: int, n_vectors: int, d: int, s: int) -> int:
    return HEADER_BYTES + 4 * batch + n_vectors * d * s


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from(sorted(DTYPE_BYTES)),
    lengths=st.lists(st.integers(1, 16), min_size=1, max_size=4),
    n_new=st.integers(1, 6),
    split=st.sampled_from([(0, 0), (1, 1), (2, 1), (0, 3)]),
    seed=st.integers(0, 2**31 - 1),
)
def test_kv_cached_generation_bytes_are_exact(tiny, dtype, lengths, n_new, split, seed):
    assert HEADER_BYTES == 32
    d, s, b = tiny.model.config.hidden_size, DTYPE_BYTES[dtype], len(lengths)
    ids, mask = padded_batch(lengths, left=True, seed=seed)
    n_real = int(mask.sum())
    rt = SplitRuntime(tiny, SplitSpec(*split), wire_dtype=dtype)
    gen = split_generate(rt, ids, mask, n_new, kv_cache=True, eos_token_id=None)
    assert gen.steps == n_new  # no EOS: runs to max_new_tokens, one prefill + (n_new - 1) decode round trips
    w = rt.wire
    prefill = msg_bytes(b, n_real, d, s)
    assert w.bytes_by[("client->server", "HIDDEN_A", "PREFILL")] == prefill
    assert w.bytes_by[("server->client", "HIDDEN_B", "PREFILL")] == prefill
    assert w.total(phase="PREFILL") == 2 * (HEADER_BYTES + 4 * b) + 2 * n_real * d * s
    step = 2 * (HEADER_BYTES + 4 * b) + 2 * b * d * s
    assert w.total(phase="DECODE") == (n_new - 1) * step
    assert w.bytes_by[("client->server", "HIDDEN_A", "DECODE")] == (n_new - 1) * msg_bytes(b, b, d, s)
    assert w.n_messages(phase="DECODE") == 2 * (n_new - 1)
    assert w.n_messages(phase="PREFILL") == 2
    assert w.total(direction="client->server") == w.total(direction="server->client")
    assert w.total() == w.total(phase="PREFILL") + w.total(phase="DECODE")
    stats = w.stats()
    assert stats["dtype"] == dtype and stats["header_bytes"] == HEADER_BYTES
    assert stats["bytes_total"] == w.total()
    assert stats["by_kind"]["client->server HIDDEN_A PREFILL"] == prefill


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from(sorted(DTYPE_BYTES)),
    lengths=st.lists(st.integers(1, 16), min_size=1, max_size=4),
    seed=st.integers(0, 2**31 - 1),
)
def test_single_decode_step_bytes(tiny, dtype, lengths, seed):
    """Measured with `wire.reset()` around one `rt.decode` call: 2·(32 + 4B) + 2·B·d·s, whatever the prompt length."""
    d, s, b = tiny.model.config.hidden_size, DTYPE_BYTES[dtype], len(lengths)
    ids, mask = padded_batch(lengths, left=True, seed=seed)
    rt = SplitRuntime(tiny, SplitSpec(1, 2), wire_dtype=dtype)
    with torch.no_grad():
        logits = rt.prefill(ids, mask)
        rt.wire.reset()
        out = rt.decode(logits[:, -1].argmax(-1))
    assert out.shape == (b, 1, tiny.model.config.vocab_size)
    assert rt.wire.total() == rt.wire.total(phase="DECODE") == 2 * (HEADER_BYTES + 4 * b) + 2 * b * d * s
    assert rt.wire.mask_bytes_sent == 2 * 4 * b


def test_naive_generation_resends_the_whole_sequence(tiny):
    """Without a KV cache every step is an EVAL round trip over all real tokens so far; nothing is DECODE."""
    d, s = tiny.model.config.hidden_size, 2
    ids, mask = padded_batch([5, 2, 7], left=True, seed=5)
    b, n_real, n_new = 3, int(mask.sum()), 4
    rt = SplitRuntime(tiny, SplitSpec(1, 1), wire_dtype="bf16")
    gen = split_generate(rt, ids, mask, n_new, kv_cache=False, eos_token_id=None)
    assert gen.steps == n_new
    assert rt.wire.total(phase="DECODE") == 0 and rt.wire.total(phase="PREFILL") == 0
    expected = sum(2 * (HEADER_BYTES + 4 * b) + 2 * (n_real + k * b) * d * s for k in range(n_new))
    assert rt.wire.total(phase="EVAL") == expected


def test_mask_compression_accounting(tiny):
    """Only 4 bytes per sample replace the (B, T, T) bool mask + int64 position ids."""
    ids, mask = padded_batch([3, 6], left=False, seed=1)
    b, t = mask.shape
    rt = SplitRuntime(tiny, SplitSpec(1, 1))
    with torch.no_grad():
        rt.forward(ids, mask)
    stats = rt.wire.stats()
    assert stats["mask_bytes_sent"] == 2 * 4 * b
    assert stats["mask_bytes_full_equivalent"] == 2 * (b * t * t + 8 * b * t)
    assert stats["mask_bytes_saved"] == stats["mask_bytes_full_equivalent"] - stats["mask_bytes_sent"]
