"""`relaxation`: continuous optimisation of relaxed input tokens through the public head to match h_A.

Sources: the forward (optimisation) step of BiSR, "Unveiling the Vulnerability of Private Fine-Tuning in
Split-Based Frameworks for Large Language Models: A Bidirectionally Enhanced Attack" (Chen et al., CCS 2024):
the server optimises soft (softmax-relaxed) input tokens so that the public bottom layers reproduce the
intercepted activations, then reads tokens off by argmax; and the white-box inversion of VFLAIR-LLM
(KDD 2025, arXiv 2508.03097), the same relaxation against split LLM activations. This is the continuous
baseline of that literature; flbench's `map-inversion` is the exact discrete search it approximates.

Per example with observation o (T, d) (its length T is in the message header):
  Z (T, K) logits over K candidate tokens (the whole vocabulary, or the top_k rows of a cheap first stage:
  the first-order gradient score at the mean embedding, or cosine with the embedding rows);
  x = softmax(Z / τ) @ E_K        mixed public input-embedding rows;
  h = head_blocks(x)              the public head's exact forward on real positions only (no padding tokens);
  loss = −log p(o | h) (the defense's own likelihood, `BaseDefense.observation_log_likelihood`: Gaussian
         ‖o − h‖² / 2σ², dp-forward clips h first; no noise: ‖o − h‖²), normalised by its value at the start,
         + entropy × (step / steps) × mean entropy of softmax(Z / τ) (optional annealing towards one-hot);
  Adam on Z; τ follows a geometric schedule from temperature_start to temperature_end;
  recovered token at t = the candidate with the largest Z[t].
A defense that does not state its likelihood falls back to the plain squared distance (`fit_log` says so).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from attacks.base import Attack, Knowledge, Observations, register
from flbench.core.errors import FlbenchError
from flbench.core.params import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)
from splits.parts import Part


@register("relaxation")
@dataclass
class Relaxation(Attack):
    """Softmax-relaxed input tokens optimised through the public head to match h_A (BiSR CCS 2024; VFLAIR-LLM).

    Assumes: the server sees h_A and the lengths, knows the public head weights, the split and the defense's
    law with its parameters (noise-aware objective via the defense's likelihood); no training, no aux text.
    steps, lr: Adam on the logits Z. temperature_start, temperature_end: geometric τ schedule (softmax(Z/τ)).
    init: "uniform" (Z ≈ 0 plus tiny seeded noise) or "embedding-nn" (Z = standardised cosine scores of
      h_A against the embedding rows, i.e. starts at the nearest-embedding guess).
    entropy: weight of the mean entropy of softmax(Z/τ), ramped linearly from 0 (anneals towards one-hot).
    top_k: candidates per position kept by the first stage; 0 = the whole vocabulary (a full T × V softmax
      per step: the reference, slow on big vocabularies). `diagnostics(true_ids)` reports the candidate recall.
    first_stage: how top_k ranks tokens: "gradient" (−∇_x objective · e_c at the mean embedding: one backward
      through the head), "cosine" (cosine of h_A with the embedding rows) or "gradient+cosine" (the two lists
      interleaved); all score position 0 exactly (h_A of every token alone at position 0).
    batch_size: examples optimised together (right-padded; padding never enters the loss).
    """

    steps: PositiveInt = 200
    lr: PositiveFloat = 0.1
    temperature_start: PositiveFloat = 1.0
    temperature_end: PositiveFloat = 0.1
    init: Literal["uniform", "embedding-nn"] = "embedding-nn"
    entropy: NonNegativeFloat = 0.0
    top_k: NonNegativeInt = 1024
    first_stage: Literal["gradient+cosine", "gradient", "cosine"] = "gradient+cosine"
    batch_size: PositiveInt = 8
    fit_log: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _trace: list = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature_end > self.temperature_start:
            raise FlbenchError(f"attack {self.name!r}: temperature_end={self.temperature_end!r} > "
                               f"temperature_start={self.temperature_start!r}; the schedule only cools "
                               "(temperature_end <= temperature_start)")

    def _fit(self, aux_texts: list[str], knowledge: Knowledge) -> None:
        t0 = time.perf_counter()
        head = knowledge.attacker_head()
        self._embed = head.embed_tokens.weight.detach().float()
        # The head's blocks without the embedding: inputs enter as (mixed) embedding rows.
        self._body = Part("head", knowledge.model.config, list(head.layers), 0, head.rotary_emb).eval().float()
        self._defense = knowledge.fresh_defense()
        self._likelihood = type(self._defense).states_likelihood()
        unit = self._embed / self._embed.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        self._unit = unit
        self._table0 = self._first_position_table() if self.top_k else None
        self.fit_log = {"seconds": round(time.perf_counter() - t0, 3), "vocab": int(self._embed.shape[0]),
                        "head_blocks": self._body.n_blocks,
                        "objective": "defense likelihood" if self._likelihood else
                        f"squared distance (defense {self._defense.name!r} states no likelihood)"}

    @torch.no_grad()
    def _first_position_table(self, chunk: int = 4096) -> torch.Tensor:
        """h_A of every token alone at position 0 (V, d), unit-normalised: the first stage's score at t = 0."""
        out = []
        for start in range(0, self._embed.shape[0], chunk):
            e = self._embed[start : start + chunk].unsqueeze(1)
            r = e.shape[0]
            h = self._body(e, torch.ones(r, 1, dtype=torch.long), torch.zeros(r, 1, dtype=torch.long))[:, 0]
            out.append(h / h.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        return torch.cat(out)

    # ------------------------------------------------------------------ first stage

    def _first_stage(self, h: torch.Tensor) -> torch.Tensor:
        """Cosine scores (T, V) of the observed rows against the embedding rows (the head at t = 0)."""
        hn = h / h.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        scores = hn @ self._unit.T
        if self._table0 is not None:
            scores[0] = hn[0] @ self._table0.T
        return scores

    def _candidates(self, h: torch.Tensor, cosine: torch.Tensor, k: int) -> torch.Tensor:
        """(T, k) candidate ids: the top k of the chosen first stage; "gradient+cosine" interleaves both lists
        (each token ranked by its better rank in the two)."""
        if self.first_stage == "cosine":
            return cosine.topk(k, dim=-1).indices
        grad = self._gradient_scores(h)
        if self.first_stage == "gradient":
            return grad.topk(k, dim=-1).indices
        best = torch.minimum(_ranks(grad), _ranks(cosine)).float()
        best = best + _ranks(grad).float() / (2 * best.shape[-1])  # ties: the gradient's order first
        return (-best).topk(k, dim=-1).indices

    def _gradient_scores(self, h: torch.Tensor) -> torch.Tensor:
        """First-order scores (T, V): −∇_x loss · e_c at x = the mean embedding row at every position, i.e. how
        much moving position t's input towards token c lowers the objective to first order (SipIt's gradient
        guidance, under the defense's law); position 0 keeps the exact table's cosine score."""
        t = len(h)
        x0 = self._embed.mean(0).expand(1, t, -1).clone().requires_grad_(True)
        with torch.enable_grad():
            out = self._body(x0, torch.ones(1, t, dtype=torch.long), torch.arange(t).unsqueeze(0))
            (grad,) = torch.autograd.grad(self._objective(h, out[0]).sum(), x0)
        scores = -(grad[0] @ self._embed.T)
        if self._table0 is not None:
            hn = h[0] / h[0].norm().clamp_min(1e-12)
            scores[0] = hn @ self._table0.T
        return scores

    # ------------------------------------------------------------------ invert

    def _invert(self, obs: Observations) -> list[list[int]]:
        self._ref_rms = self._defense.reference_rms_from_observed(torch.cat(obs.h_a).float()) if len(obs) else None
        self._trace = []
        out: list[list[int]] = [[] for _ in range(len(obs))]
        order = sorted(range(len(obs)), key=lambda i: -obs.lengths[i])  # similar lengths share a batch
        gen = torch.Generator().manual_seed(self.seed)
        t0 = time.perf_counter()
        with torch.enable_grad():
            for start in range(0, len(order), self.batch_size):
                group = order[start : start + self.batch_size]
                for i, ids, cand in zip(group, *self._optimise([obs.h_a[i].float() for i in group], gen)):
                    out[i] = ids
                    self._trace.append((i, cand))
        self._trace.sort(key=lambda x: x[0])
        self._seconds = time.perf_counter() - t0
        return out

    def _objective(self, o: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """−log p(o_r | h_r) per row (N,) for observed rows o (N, d) and candidate outputs h (N, d)."""
        if self._likelihood:
            return -self._defense.observation_log_likelihood(o.unsqueeze(1), h.unsqueeze(1),
                                                             reference_rms=self._ref_rms)[:, 0]
        return (o - h).square().sum(-1)

    def _optimise(self, h_obs: list[torch.Tensor], gen: torch.Generator):
        b, tmax, d = len(h_obs), max(len(h) for h in h_obs), h_obs[0].shape[-1]
        v = self._embed.shape[0]
        k = min(self.top_k, v) if self.top_k else v
        mask = torch.zeros(b, tmax, dtype=torch.long)
        obs = torch.zeros(b, tmax, d)
        cand = torch.zeros(b, tmax, k, dtype=torch.long)
        z0 = torch.zeros(b, tmax, k)
        for r, h in enumerate(h_obs):
            n = len(h)
            mask[r, :n] = 1
            obs[r, :n] = h
            need_scores = self.top_k or self.init == "embedding-nn"
            scores = self._first_stage(h) if need_scores else None
            if self.init == "embedding-nn":  # standardised over the whole vocabulary, whatever top_k
                scores = (scores - scores.mean(-1, keepdim=True)) / scores.std(-1, keepdim=True).clamp_min(1e-6)
            if self.top_k:
                idx = self._candidates(h, scores, k)
                cand[r, :n] = idx
            else:
                idx = None
                cand[r, :n] = torch.arange(v)
            if self.init == "embedding-nn":
                z0[r, :n] = scores if idx is None else scores.gather(-1, idx)
        z0 = z0 + 1e-3 * torch.randn(z0.shape, generator=gen)
        real = mask.bool()
        pos = torch.arange(tmax).expand(b, tmax)
        emb_k = self._embed[cand] if self.top_k else None  # (b, T, k, d)
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=self.lr)
        o_real = obs[real]
        scale = None
        for step in range(self.steps):
            frac = step / max(self.steps - 1, 1)
            tau = self.temperature_start * (self.temperature_end / self.temperature_start) ** frac
            p = torch.softmax(z / tau, dim=-1)
            x = torch.einsum("btk,btkd->btd", p, emb_k) if emb_k is not None else p @ self._embed
            h = self._body(x, mask, pos)
            nll = self._objective(o_real, h[real])
            if scale is None:  # normalise by the starting value: the entropy weight is scale-free
                scale = float(nll.detach().mean()) or 1.0
            loss = nll.mean() / scale
            if self.entropy > 0:
                ent = -(p * torch.log(p.clamp_min(1e-12))).sum(-1)[real].mean()
                loss = loss + self.entropy * frac * ent / math.log(k)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        best = z.detach().argmax(-1)  # (b, T)
        rec = cand.gather(-1, best.unsqueeze(-1))[..., 0]
        lengths = [len(h) for h in h_obs]
        return ([rec[r, :n].tolist() for r, n in enumerate(lengths)],
                [cand[r, :n] if self.top_k else None for r, n in enumerate(lengths)])

    def diagnostics(self, true_ids: list[list[int]]) -> dict[str, Any]:
        """Candidate recall of the first stage (1.0 with top_k = 0) and timing of the last `invert`."""
        hits = total = 0
        for i, cand in self._trace:
            n = len(true_ids[i])
            total += n
            if cand is None:
                hits += n
            else:
                hits += int((cand == torch.tensor(true_ids[i]).unsqueeze(-1)).any(-1).sum())
        secs = getattr(self, "_seconds", 0.0)
        return {"candidate_recall": hits / max(total, 1), "candidates_per_position": self.top_k or
                int(self._embed.shape[0]), "positions": total, "seconds": secs,
                "seconds_per_victim": secs / max(len(self._trace), 1)}


def _ranks(scores: torch.Tensor) -> torch.Tensor:
    """Rank of every entry within its row (0 = the highest score)."""
    order = scores.argsort(dim=-1, descending=True)
    return torch.empty_like(order).scatter_(-1, order, torch.arange(scores.shape[-1]).expand_as(order))
