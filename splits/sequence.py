"""Attention-mask compression: parties exchange each sample's valid length (prefill/training) or position
(decode) instead of masks, and rebuild the 2-D padding mask and position ids locally.

Positions follow transformers' generation convention: `cumsum(mask) - 1`, so the first real token of
every sample is at position 0 whatever the padding side.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


def padding_mask(lengths: torch.Tensor, seqlen: int, left: bool) -> torch.Tensor:
    """(B, T) long mask with `lengths[b]` ones on the right (left padding) or on the left (right padding)."""
    idx = torch.arange(seqlen).unsqueeze(0)
    if left:
        return (idx >= (seqlen - lengths).unsqueeze(1)).long()
    return (idx < lengths.unsqueeze(1)).long()


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 0)


def lengths_and_side(mask: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Recover (lengths, left_padded) from a (B, T) padding mask; it must be contiguous on one side."""
    lengths = mask.long().sum(-1)
    for left in (True, False):
        if torch.equal(padding_mask(lengths, mask.shape[1], left), mask.long()):
            return lengths, left
    raise ValueError("attention mask must pad every sample on one side, with contiguous real tokens")


def pad_rows(rows: Sequence[Sequence[int] | torch.Tensor], pad_value: float = 0, left: bool = False,
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The one padding helper: variable-length rows → (padded batch, (B, T) long mask, 1 = real).

    Rows are token-id lists (→ (B, T) long ids) or (T_i, ...) tensors (→ (B, T, ...) of their dtype);
    `left` pads on the left (generation), otherwise on the right (training, scoring, attacks). Empty
    rows are allowed (all padding); at least one row is required."""
    if len(rows) == 0:
        raise ValueError("pad_rows: no rows to pad")
    tensors = [r if isinstance(r, torch.Tensor) else torch.as_tensor(list(r), dtype=torch.long) for r in rows]
    lengths = torch.tensor([int(t.shape[0]) for t in tensors], dtype=torch.long)
    mask = padding_mask(lengths, int(lengths.max()), left)
    first = next((t for t in tensors if t.ndim > 1 or t.numel()), tensors[0])
    out = first.new_full((len(tensors), mask.shape[1], *first.shape[1:]), pad_value)
    out[mask.bool()] = torch.cat([t.reshape(-1, *first.shape[1:]).to(first.dtype) for t in tensors])
    return out, mask


def pack(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep only real tokens: (B, T, d) → (sum(mask), d), sample-major."""
    return h[mask.bool()]


def unpack(flat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack`; padded slots are zero (they are masked everywhere downstream)."""
    b, t = mask.shape
    out = flat.new_zeros(b, t, flat.shape[-1])
    out[mask.bool()] = flat
    return out


@dataclass
class SequenceState:
    """One party's view of a batch of sequences: the padding mask over everything cached so far."""

    mask: torch.Tensor  # (B, past + new)
    left: bool

    @classmethod
    def from_lengths(cls, lengths: torch.Tensor, seqlen: int, left: bool) -> "SequenceState":
        return cls(padding_mask(lengths, seqlen, left), left)

    def prefill_positions(self) -> torch.Tensor:
        return positions_from_mask(self.mask)

    def new_mask(self, n_new: int) -> torch.Tensor:
        return self.mask[:, -n_new:]

    def advance(self) -> None:
        """One decoded token per sample: every sample gains one real slot."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
