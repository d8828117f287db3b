"""Trainable inversion decoders and the loop that fits them on auxiliary text (shared by the learned attacks).

A decoder maps observed hidden states (B, T, d) to token logits (B, T, V): a body (public blocks, a light
MLP, or nothing) → a final RMSNorm → the public LM head. By default the LM head (tied to the embedding in
most small LLaMAs) stays frozen and training uses a sampled softmax over the batch's targets plus random
negatives, so one step costs a fraction of a full-vocabulary softmax on CPU; decoding uses the full head.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from splits.parts import Part
from splits.sequence import pad_rows, positions_from_mask


class ResidualMLP(nn.Module):
    """x + W2 gelu(W1 rmsnorm(x)); W2 starts at zero so the decoder starts as the logit lens."""

    def __init__(self, d: int, hidden: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(d))
        self.eps = eps
        self.up = nn.Linear(d, hidden)
        self.down = nn.Linear(hidden, d)
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def forward(self, x: torch.Tensor, mask2d: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        n = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + self.eps) * self.scale
        return x + self.down(nn.functional.gelu(self.up(n)))


class Decoder(nn.Module):
    def __init__(self, body: nn.Module | None, norm: nn.Module, lm_head: nn.Module, train_head: bool = False) -> None:
        super().__init__()
        self.body = body
        self.norm = norm
        self.lm_head = lm_head
        self.lm_head.requires_grad_(train_head)

    def features(self, h: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        if position_ids is None:
            position_ids = positions_from_mask(mask)
        x = self.body(h, mask, position_ids) if self.body is not None else h
        return self.norm(x)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.features(h, mask))

    @torch.no_grad()
    def predict(self, hs: list[torch.Tensor], batch_size: int = 16) -> list[list[int]]:
        """Argmax token per observed vector, for per-example (T_i, d) tensors."""
        self.eval()
        out: list[list[int]] = []
        for start in range(0, len(hs), batch_size):
            chunk = hs[start : start + batch_size]
            h, mask = pad_rows([x.float() for x in chunk], 0.0)
            ids = self(h, mask).argmax(-1)
            out.extend(ids[i, : x.shape[0]].tolist() for i, x in enumerate(chunk))
        return out


def build_decoder(model: Any, kind: str, n_blocks: int = 0, mlp_hidden: int = 1024, train_head: bool = False) -> Decoder:
    """`blocks`: copies of the public blocks 0..n_blocks-1 (the mirror of the head) + final norm + LM head;
    `mlp`: a residual 2-layer MLP + final norm + LM head; `lens`: final norm + LM head only."""
    inner = model.model
    norm = copy.deepcopy(inner.norm)
    head = copy.deepcopy(model.lm_head)
    if kind == "blocks" and n_blocks > 0:
        layers = [copy.deepcopy(b) for b in list(inner.layers)[:n_blocks]]
        body: nn.Module | None = Part("decoder", model.config, layers, 0, copy.deepcopy(inner.rotary_emb))
    elif kind == "mlp":
        body = ResidualMLP(int(model.config.hidden_size), mlp_hidden)
    else:
        body = None
    dec = Decoder(body, norm, head, train_head).float()
    dec.train()
    return dec


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # inputs (B, T, d), targets (B, T), loss mask (B, T)


def train_decoder(
    decoder: Decoder,
    make_batch: Callable[[torch.Generator], Batch],
    steps: int,
    lr: float,
    weight_decay: float = 0.0,
    vocab_sample: int = 8192,
    seed: int = 0,
    desc: str = "fit decoder",
) -> dict[str, Any]:
    """AdamW on cross-entropy; sampled softmax when `0 < vocab_sample < V` (targets always included).
    Returns a small training log (seconds, final running loss/accuracy)."""
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in decoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay) if params else None
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(steps)) if opt else None
    weight = decoder.lm_head.weight
    bias = getattr(decoder.lm_head, "bias", None)
    vocab = int(weight.shape[0])
    t0 = time.perf_counter()
    run_loss = run_acc = math.nan
    decoder.train()
    bar = tqdm(range(steps), desc=desc, file=sys.stderr, mininterval=2.0, leave=False)
    for _ in bar:
        h, targets, mask = make_batch(gen)
        sel = mask.bool()
        feats = decoder.features(h, mask)[sel]
        y = targets[sel]
        if 0 < vocab_sample < vocab:
            cand = torch.unique(torch.cat([y, torch.randint(vocab, (vocab_sample,), generator=gen)]))
            logits = feats @ weight[cand].T
            if bias is not None:
                logits = logits + bias[cand]
            y_local = torch.searchsorted(cand, y)
            pred_ok = cand[logits.argmax(-1)] == y
        else:
            logits = decoder.lm_head(feats)
            y_local = y
            pred_ok = logits.argmax(-1) == y
        loss = nn.functional.cross_entropy(logits, y_local)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
        acc = float(pred_ok.float().mean())
        loss = loss.detach()
        run_loss = float(loss) if math.isnan(run_loss) else 0.9 * run_loss + 0.1 * float(loss)
        run_acc = acc if math.isnan(run_acc) else 0.9 * run_acc + 0.1 * acc
        bar.set_postfix(loss=f"{run_loss:.3f}", acc=f"{run_acc:.3f}", refresh=False)
    bar.close()
    decoder.eval()
    return {"seconds": time.perf_counter() - t0, "steps": steps, "loss": run_loss, "train_accuracy": run_acc}


def _warmup_cosine(steps: int) -> Callable[[int], float]:
    warm = max(1, steps // 20)

    def f(i: int) -> float:
        if i < warm:
            return (i + 1) / warm
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, steps - warm)))

    return f


def sample_batch(seqs: list[list[int]], batch_size: int, gen: torch.Generator) -> list[list[int]]:
    """`batch_size` random sequences (with replacement across steps), drawn from `gen`."""
    idx = torch.randint(len(seqs), (min(batch_size, len(seqs)),), generator=gen).tolist()
    return [seqs[i] for i in idx]
