"""What the server sees when the victim chats: the prompt's h_A once (prefill), then one h_A per generated
token fed back (KV-cached decode), and its own h_B for all of them.

The victim's greedy answer crosses the wire twice: every generated token except the last is fed back as the
next decode step's input, so its h_A is on the wire (the same inversion problem as the prompt's), and the
server's own h_B at the position before it determines it through the public tail when the tail is not
fine-tuned (the logit lens, `output-inversion`). `capture_generation` records that traffic with the same
wire tap as `capture`; attacks invert it unchanged (the decode steps are appended to their prompt's
observations). Scoring keeps the two parts apart (`GenerationCapture.segments`): prompt positions, and the
answer positions up to and including the first stop token (after it the victim feeds padding).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from attacks.base import SERVER_VIEW, Observations, observe
from flbench.core.errors import FlbenchError
from splits.sequence import pad_rows


@dataclass
class GenerationCapture:
    """Observations of chat traffic, the true ids of every observed position (prompt + fed-back answer), and
    per example the prompt length and the answer length that is scored."""

    obs: Observations
    true_ids: list[list[int]]
    prompt_lengths: list[int]
    answer_lengths: list[int]

    def segments(self, ids: Sequence[Sequence[int]]) -> dict[str, list[list[int]]]:
        """Split per-position ids (true or recovered, aligned with the observations) into the prompt part and
        the scored answer part."""
        return {"prompt": [list(x[:p]) for x, p in zip(ids, self.prompt_lengths)],
                "answer": [list(x[p : p + a]) for x, p, a in zip(ids, self.prompt_lengths, self.answer_lengths)]}


@torch.no_grad()
def capture_generation(rt: Any, texts: Sequence[str], new_tokens: int, batch_size: int = 8, max_length: int = 128,
                       observes: frozenset[str] | set[str] = SERVER_VIEW) -> GenerationCapture:
    """Each victim text (truncated to `max_length` tokens) is a prompt; the victim generates `new_tokens`
    greedily through the split runtime with the KV cache (`splits.inference.split_generate`), under the
    tap. The true answer is what the victim generated (scoring only; the attacker never sees it)."""
    from splits.inference import split_generate
    from splits.wire import RecordingTap

    if not texts:
        raise FlbenchError("capture: no victim texts")
    if new_tokens < 2:
        raise FlbenchError(f"capture: new_tokens={new_tokens!r}; expected ≥ 2 (the first generated token is "
                           "fed back only from the second step on)")
    tok = rt.loaded.tokenizer
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    tap = RecordingTap()
    rt.wire.taps.append(tap)
    true_ids: list[list[int]] = []
    prompt_lengths: list[int] = []
    answer_lengths: list[int] = []
    try:
        for start in range(0, len(texts), batch_size):
            rows = tok(list(texts[start : start + batch_size]), truncation=True, max_length=max_length)["input_ids"]
            if min(len(r) for r in rows) == 0:
                raise FlbenchError(f"capture: a victim text in batch starting at {start} has no tokens")
            ids, mask = pad_rows(rows, int(pad if pad is not None else 0), left=True)  # generation pads on the left
            gen = split_generate(rt, ids, mask, new_tokens, kv_cache=True, eos_token_id=eos, pad_token_id=pad)
            fed = gen.tokens[:, :-1]  # the last generated token is never sent back
            for row, m, g in zip(ids, mask, fed):
                prompt = row[m.bool()].tolist()
                answer = g.tolist()
                stops = [i for i, t in enumerate(answer) if eos is not None and t == eos]
                true_ids.append(prompt + answer)
                prompt_lengths.append(len(prompt))
                answer_lengths.append(stops[0] + 1 if stops else len(answer))
    finally:
        rt.wire.taps.remove(tap)
    obs = observe(tap, observes)
    if obs.lengths != [len(t) for t in true_ids]:
        raise FlbenchError("capture: tapped lengths do not match the prompts and the fed-back answers")
    return GenerationCapture(obs, true_ids, prompt_lengths, answer_lengths)
