"""Split forward (head → wire → trunk → wire → tail) equals the centralized model at real-token positions."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splits import SplitRuntime, SplitSpec
from splitref import centralized_logits, encode_padded, max_diff_at_real, padded_batch

TOL = 1e-4


@st.composite
def split_batches(draw, n_blocks: int = 4, max_batch: int = 4, max_len: int = 24):
    p = draw(st.integers(0, n_blocks - 1))
    q = draw(st.integers(0, n_blocks - 1 - p))
    lengths = draw(st.lists(st.integers(1, max_len), min_size=1, max_size=max_batch))
    left = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return SplitSpec(p, q), lengths, left, seed


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=split_batches())
def test_tiny_split_forward_matches_centralized(tiny, case):
    spec, lengths, left, seed = case
    assert tiny.model.config.num_hidden_layers == 4
    ids, mask = padded_batch(lengths, left, vocab=tiny.model.config.vocab_size, seed=seed)
    rt = SplitRuntime(tiny, spec)
    with torch.no_grad():
        got = rt.forward(ids, mask)
    ref = centralized_logits(tiny.model, ids, mask)
    assert got.shape == ref.shape == (len(lengths), max(lengths), tiny.model.config.vocab_size)
    assert torch.isfinite(got[mask.bool()]).all()
    assert max_diff_at_real(got, ref, mask) <= TOL, f"split {spec}, lengths {lengths}, left={left}"
    # the forward really crossed the wire once in each direction, carrying only the real tokens
    d = tiny.model.config.hidden_size
    n_real = int(mask.sum())
    assert rt.wire.n_messages() == 2
    assert rt.wire.total() == 2 * (32 + 4 * len(lengths)) + 2 * n_real * d * 4


def test_tiny_forward_without_mask_is_unpadded(tiny):
    ids, _ = padded_batch([7, 7], left=True, seed=3)
    rt = SplitRuntime(tiny, SplitSpec(1, 2))
    with torch.no_grad():
        got = rt.forward(ids)
        ref = tiny.model(ids).logits
    assert float((got - ref).abs().max()) <= TOL


def test_padded_ids_do_not_leak_into_real_positions(tiny):
    """Changing the token ids under padding must not change any real-token logit."""
    ids, mask = padded_batch([3, 9, 5], left=False, seed=11)
    rt = SplitRuntime(tiny, SplitSpec(2, 1))
    other = ids.clone()
    other[mask == 0] = (other[mask == 0] + 17) % tiny.model.config.vocab_size
    with torch.no_grad():
        a, b = rt.forward(ids, mask), rt.forward(other, mask)
    assert max_diff_at_real(a, b, mask) == 0.0


PROMPTS = [
    "The capital of France is",
    "Federated split learning keeps the embedding layer and the language-model head on the client, so",
]


@pytest.mark.real_model
@pytest.mark.parametrize("split", [(1, 1), (5, 7), (0, 29)])
@pytest.mark.parametrize("left", [True, False])
def test_smollm2_split_forward_matches_centralized(smol, split, left):
    assert smol.model.config.num_hidden_layers == 30
    ids, mask = encode_padded(smol.tokenizer, PROMPTS, left)
    assert int(mask.sum(-1).min()) < ids.shape[1], "the two prompts must need padding"
    rt = SplitRuntime(smol, SplitSpec(*split))
    with torch.no_grad():
        got = rt.forward(ids, mask)
    ref = centralized_logits(smol.model, ids, mask)
    assert max_diff_at_real(got, ref, mask) <= TOL
    assert torch.equal(got[mask.bool()].argmax(-1), ref[mask.bool()].argmax(-1))
