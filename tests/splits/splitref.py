"""Helpers shared by the split-runtime tests: centralized references and padded batches."""
from __future__ import annotations

import torch


def positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


def padded_batch(lengths: list[int], left: bool, ids: torch.Tensor | None = None, vocab: int = 264,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of shape (B, max(lengths)); padded slots hold random ids too."""
    b, t = len(lengths), max(lengths)
    if ids is None:
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, vocab, (b, t), generator=g)
    mask = torch.zeros(b, t, dtype=torch.long)
    for i, n in enumerate(lengths):
        if left:
            mask[i, t - n:] = 1
        else:
            mask[i, :n] = 1
    return ids, mask


@torch.no_grad()
def centralized_logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return model(ids, attention_mask=mask, position_ids=positions(mask)).logits


@torch.no_grad()
def centralized_hidden(model, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """hidden_states[k] = output of blocks 0..k-1 (hidden_states[0] = embeddings; the last one is normed)."""
    return model(ids, attention_mask=mask, position_ids=positions(mask), output_hidden_states=True).hidden_states


def max_diff_at_real(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    m = mask.bool()
    return float((a[m] - b[m]).abs().max())


@torch.no_grad()
def hf_greedy(model, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, **kw) -> torch.Tensor:
    """transformers' greedy generate on a left-padded batch; returns only the new tokens."""
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens, **kw)
    return out[:, ids.shape[1]:]


def encode_padded(tokenizer, prompts: list[str], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    side = tokenizer.padding_side
    tokenizer.padding_side = "left" if left else "right"
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    return enc["input_ids"], enc["attention_mask"]
