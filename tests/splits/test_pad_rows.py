"""`splits.sequence.pad_rows`: the one padding helper (token rows and hidden-state rows, left or right)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from splits.sequence import lengths_and_side, pack, pad_rows


def test_token_rows_left_and_right():
    ids, mask = pad_rows([[5, 6, 7], [8]], 0, left=True)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_rows([(5, 6, 7), (8,), ()], -100)
    assert ids.tolist() == [[5, 6, 7], [8, -100, -100], [-100, -100, -100]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]] and ids.dtype == torch.long


def test_hidden_rows_keep_dtype_and_zero_pad():
    hs = [torch.ones(2, 3, dtype=torch.float64), 2 * torch.ones(1, 3, dtype=torch.float64)]
    h, mask = pad_rows(hs)
    assert h.shape == (2, 2, 3) and h.dtype == torch.float64
    assert h[1, 1].abs().sum() == 0 and mask.tolist() == [[1, 1], [1, 0]]


def test_no_rows_is_an_error():
    with pytest.raises(ValueError):
        pad_rows([])


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=5), left=st.booleans())
def test_pack_inverts_pad_rows(lengths, left):
    g = torch.Generator().manual_seed(sum(lengths))
    rows = [torch.randn(n, 4, generator=g) for n in lengths]
    h, mask = pad_rows(rows, left=left)
    assert torch.equal(pack(h, mask), torch.cat(rows))
    got_lengths, got_left = lengths_and_side(mask)
    assert got_lengths.tolist() == lengths and (got_left == left or len(set(lengths)) == 1)
