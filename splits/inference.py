"""Greedy split generation, KV-cached or naive, with transformers-compatible stopping.

KV-cached: one prefill round trip sends the prompt's real-token hidden states once; every later step
sends one hidden vector per sample plus its position (each party extends its own `DynamicCache`).
Naive (`kv_cache=False`): every step re-sends and recomputes the whole sequence — the baseline.

Stopping mirrors `GenerationMixin.generate(do_sample=False)`: a sample that emitted EOS keeps receiving
`pad_token_id`, and the loop ends when every sample is done or `max_new_tokens` is reached.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from splits.runtime import SplitRuntime


@dataclass
class Generation:
    tokens: torch.Tensor  # (B, n_new) generated ids (pad after EOS)
    steps: int
    prefill_bytes: int = 0  # wire bytes of the first round trip (prompt)
    decode_bytes: int = 0  # wire bytes of every later round trip

    @property
    def bytes_per_decode_step(self) -> float:
        return self.decode_bytes / (self.steps - 1) if self.steps > 1 else 0.0


def _stop_ids(eos_token_id) -> torch.Tensor | None:
    if eos_token_id is None:
        return None
    ids = eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]
    return torch.tensor(ids) if ids else None


@torch.no_grad()
def split_generate(
    rt: SplitRuntime,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    kv_cache: bool = True,
    eos_token_id=None,
    pad_token_id: int | None = None,
    client: int = 0,
) -> Generation:
    stop = _stop_ids(eos_token_id)
    pad = int(pad_token_id if pad_token_id is not None else (stop[0] if stop is not None else 0))
    b = input_ids.shape[0]
    done = torch.zeros(b, dtype=torch.bool)
    new: list[torch.Tensor] = []
    ids, mask = input_ids, attention_mask
    start = rt.wire.total()
    logits = rt.prefill(ids, mask, client) if kv_cache else rt.forward(ids, mask, client)
    after_prefill = rt.wire.total()
    for step in range(max_new_tokens):
        nxt = logits[:, -1, :].argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        new.append(nxt)
        if stop is not None:
            done |= torch.isin(nxt, stop)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        if kv_cache:
            logits = rt.decode(nxt, client)
        else:
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
            logits = rt.forward(ids, mask, client)
    end = rt.wire.total()
    return Generation(torch.stack(new, dim=1), len(new), after_prefill - start, end - after_prefill)
