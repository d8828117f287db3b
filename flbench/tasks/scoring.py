"""Log-likelihood scoring of verbalised answers, as lm-evaluation-harness's `loglikelihood` requests.

For a prompt (context) and a continuation, the sequence is `tokenize(context + continuation)` and the
continuation tokens are those past `len(tokenize(context))`; its score is the summed log-probability of
those tokens, each predicted from the logits one position earlier. Sequences are right-padded into
batches (longest first) and run through `forward(input_ids, attention_mask) -> logits (B, T, V)`: the split
runtime's `rt.forward` (every hidden state crosses the wire) or the unsplit model's forward.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from flbench.core.errors import FlbenchError
from splits.sequence import pad_rows

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Request:
    ids: tuple[int, ...]  # context + continuation tokens (possibly left-truncated)
    n_cont: int  # the last n_cont tokens are the continuation


def encode_pair(tokenizer, context: str, continuation: str, max_length: int | None = None) -> Request:
    # a trailing space of the context belongs to the continuation (so "Answer: " + "yes" tokenizes as " yes")
    n_spaces = len(context) - len(context.rstrip(" "))
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tokenizer(context + continuation)["input_ids"]
    n_ctx = len(tokenizer(context)["input_ids"])
    n_cont = len(whole) - n_ctx
    if n_cont < 1:
        raise FlbenchError(f"continuation {continuation!r} adds no tokens to its prompt")
    if max_length is not None and len(whole) > max_length:
        if n_cont >= max_length:
            raise FlbenchError(f"continuation {continuation!r} alone exceeds the model's {max_length} positions")
        whole = whole[-max_length:]  # keep the answer, drop the start of the prompt
    return Request(tuple(whole), n_cont)


def batch_tensors(reqs: list[Request], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    return pad_rows([r.ids for r in reqs], pad_value=int(pad_id))


def continuation_logprob(logits: torch.Tensor, req: Request) -> float:
    """Summed log P(continuation | context) from one row of logits (T, V) of a right-padded sequence."""
    n = len(req.ids)
    pos = torch.arange(n - req.n_cont - 1, n - 1)
    target = torch.tensor(req.ids[n - req.n_cont:], dtype=torch.long)
    logp = torch.log_softmax(logits[pos].double(), dim=-1)
    return float(logp.gather(1, target[:, None]).sum())


@torch.no_grad()
def loglikelihoods(forward: Forward, reqs: list[Request], pad_id: int, batch_size: int = 8,
                   progress: bool = False, desc: str = "scoring") -> list[float]:
    """Summed continuation log-probability per request (in the order given)."""
    if batch_size < 1:
        raise FlbenchError(f"--batch-size {batch_size}: must be a positive integer")
    order = sorted(range(len(reqs)), key=lambda i: -len(reqs[i].ids))  # longest first: less padding
    out = [0.0] * len(reqs)
    bar = tqdm(total=len(reqs), desc=desc, unit="seq", disable=not progress)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, mask = batch_tensors([reqs[i] for i in idx], pad_id)
        logits = forward(ids, mask)
        for row, i in enumerate(idx):
            out[i] = continuation_logprob(logits[row], reqs[i])
        bar.update(len(idx))
    bar.close()
    return out


def predict(task, examples: list, tokenizer, forward: Forward, batch_size: int = 8, max_length: int | None = None,
            progress: bool = False) -> tuple[list[int], list[list[float]]]:
    """Argmax-log-likelihood choice per example, and every choice's log-likelihood."""
    reqs, owner = [], []
    for e_i, ex in enumerate(examples):
        ctx = task.prompt(ex)
        for cont in task.continuations(ex):
            reqs.append(encode_pair(tokenizer, ctx, cont, max_length))
            owner.append(e_i)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    scores = loglikelihoods(forward, reqs, pad, batch_size, progress, desc=f"{task.name}")
    per_ex: list[list[float]] = [[] for _ in examples]
    for e_i, s in zip(owner, scores):
        per_ex[e_i].append(s)
    preds = [max(range(len(s)), key=s.__getitem__) for s in per_ex]
    return preds, per_ex
