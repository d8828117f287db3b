"""`gradient-label`: the training targets of each sequence, read from the gradient dL/dh_B the client's tail sends.

The backward channel of split learning. During fine-tuning the server receives g = dL/dh_B for every
training sequence and holds h_B itself (it computed it: the tail's input). With a mean cross-entropy over N
labelled positions, the tail is logits z_t = W·norm(x_t), x = blocks(h_B) (x = h_B when the tail has no
blocks, Q = 0), and

    g = (1/N) Σ_t J_t^T (p_t − e_{y_t}),    J_t = ∂z_t/∂h_B,  p_t = softmax(z_t),  y_t the target at t.

Label leakage from gradients: iDLG (Zhao et al., "iDLG: Improved Deep Leakage from Gradients", 2020) reads a
label off the last layer's gradient; TAG (Deng et al., "TAG: Gradient Attack on Transformer-based Language
Models", EMNLP Findings 2021) matches gradients of transformer LMs; BiSR (Chen et al., "Unveiling the
Vulnerability of Private Fine-Tuning in Split-Based Frameworks for Large Language Models: A
Bidirectionally Enhanced Attack", ACM CCS 2024) attacks split LLM fine-tuning in both directions, its
backward step matching dL/dh with the public tail. Label leakage in split learning specifically: Li et al.,
"Label Leakage and Protection in Two-party Split Learning" (ICLR 2022).

The decoder here. For every position t and candidate label y the hypothesis "t is labelled y" predicts the
gradient a_{t,y} = J_t^T (p_t − e_y) (up to the positive factor 1/N, unknown). Causal attention makes row t
of the observation the sum of t's own term [a_{t,y_t}]_t and what later positions' losses send back to it
through attention; the decoder matches row t against the own term. Its inner product needs no
per-candidate backward pass: g_t·[a_{t,y}]_t = δz_t·(p_t − e_y), where δz_t = W·δn_t and δn_t is the
forward-mode derivative (JVP) of the public tail's normed output at t when h_B moves along g_t at row t
alone — one JVP per position for every candidate at once (the positions ride as a batch). The candidate's
norm has a closed form through the RMSNorm Jacobian (J_norm(x)^T v = (γ⊙v − x (x·γ⊙v)/(d r²))/r,
r = RMS(x)): three vocabulary-sized matrix products per position. Each position is decoded as
ŷ_t = argmax_y cos(g_t, [a_{t,y}]_t).
  - Q = 0 (tail = final norm + LM head, public and never adapted): the gradient at t comes from t's own loss
    only and everything above is exact: the true label has cosine 1 (float rounding aside), and a position
    carries a gradient iff it is labelled.
  - Q ≥ 1: the tail's blocks carry the client's LoRA adapters (unknown to the server; the attacker uses the
    public weights) and attention spreads each position's loss gradient to earlier positions. The JVP still
    gives the exact own-row inner product with the public tail's hypothesis; the norm is the final norm's
    only (the blocks' own-position Jacobian, close to the identity through the residual stream, is left
    out). Positions after the last labelled one carry no gradient (causal attention), so the last position
    with a gradient is labelled; an earlier position counts as labelled when its best candidate's cosine
    reaches `min_fit` — the gradient an unlabelled position receives through attention matches no single
    label well (measured on smollm2-135m at split 2,2, sst2 answer-only loss: labelled 0.84–1.07, unlabelled
    ≤ 0.48). Under a whole-text LM loss every position is labelled and later positions' terms lower the
    cosines (0.1–0.5 at some positions): `positions="all"` (the training recipe is public) takes every
    position with a gradient instead of testing.
  - Noise on the gradient (a gradient defense, whose law is public: Kerckhoffs): observed o_t = s·a_{t,y} + ε,
    ε ~ N(0, σ² I), s > 0 unknown (1/N and any clipping factor). The profile likelihood over s is
    max_s log p(o_t | y, s) = (o_t·â_{t,y})₊² / (2σ²) + const (â the unit hypothesis), so the MAP label under
    a uniform prior is still the largest positive cosine; a position is declared labelled by the generalized
    likelihood-ratio test max_y (o_t·â_{t,y})₊²/σ² > 2 ln(K/α) (K candidates, α = `false_alarm`: the union
    bound on a noise-only position crossing it), as no gradient is ever exactly zero under noise. σ comes
    from the defense's `noise_scale()` (relative scales: times the observed RMS, estimated). No prior from
    the public model's next-token prediction is used: that would read the label off h_B (the forward
    channel), and this attack measures the backward channel alone.

Labels are the next tokens: the gradient at position t reveals input token t + 1, so the returned ids are
aligned with the sequence's input tokens, position 0 (never a target) and undetected positions holding
`fill` (the pad id). `labelled` holds, after `invert`, the input positions each entry was decoded at.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from attacks.base import Attack, Knowledge, Observations, register
from flbench.core.errors import FlbenchError
from flbench.core.params import Fraction, PositiveInt, UnitIntervalOpen

# A gradient row counts as zero (no loss reached that position) below this fraction of the entry's largest
# row norm: exact zeros on the wire are zeros; this only absorbs float noise of a bf16/fp16 wire.
ZERO_ROW = 1e-6


@register("gradient-label")
@dataclass
class GradientLabel(Attack):
    """Training targets from dL/dh_B by gradient matching through the public tail (iDLG, TAG, BiSR).

    Zhao et al. 2020 (iDLG); Deng et al., EMNLP Findings 2021 (TAG); Chen et al., ACM CCS 2024 (BiSR).

    Assumes: the server records the training traffic — h_B (its own output) and the gradient dL/dh_B each
    training sequence sends back (after the gradient defense) — and knows the public pretrained tail (blocks,
    final norm, LM head), the split, the loss (mean next-token cross-entropy over the labelled positions) and
    the gradient defense's law and parameters; it does not know the client's adapters or the noise draws. No
    auxiliary text, no training.
    candidates: "vocab" (every token) or "answers" (only the tokens of the training task's public verbalised
      answers, e.g. sst2's " negative" / " positive"; needs a task with answers in the knowledge).
    min_fit: without noise, with tail blocks: the cosine an earlier position's best candidate must reach to be
      taken as labelled (the last position with a gradient always is). positions: "detect" (test each
      position as above), "all" (decode every position that can carry a label — with a gradient, or any
      under noise — without testing: a whole-text LM loss, or a scorer that reads known answer positions) or
      "answer" (the public answer-only recipe of a choice task: the answer ends the sequence, so its last L
      positions are labelled, L the shortest verbalised answer's length in tokens — sst2's class word: the
      last one; needs the task's answers in the knowledge, as candidates="answers").
      false_alarm: under noise, the probability bound for declaring a noise-only position labelled
      (likelihood-ratio test). chunk: positions per batched JVP and vocabulary product (memory bound only).
    pool: "none" (each recorded training sequence alone) or "linked": a run of several epochs sends every
      example once per epoch, each time with a fresh draw of the gradient defense's noise; the attacker links
      the releases of one example by their forward traffic (h_A: equal length, Hungarian matching on squared
      distance, attacks.linking) and decodes the MEAN of the linked gradients (and h_B), whose noise std is
      σ/√k for k releases — the same sufficient statistic as map-inversion's summed releases. Every member of a
      group gets the group's decoding; entries no group takes are decoded alone. Needs the epochs of the
      recorded traffic (a tap covering more than one epoch) and h_A.
    """

    requires = frozenset({"h_b", "grad_b"})
    primary_metric = "token_accuracy"
    channel: ClassVar[str] = "grad_b"  # what a record says it read (attacks.joint_inversion reads h_A as well)
    candidates: Literal["vocab", "answers"] = "vocab"
    min_fit: Fraction = 0.5
    false_alarm: UnitIntervalOpen = 1e-3
    positions: Literal["detect", "all", "answer"] = "detect"
    chunk: PositiveInt = 32
    pool: Literal["none", "linked"] = "none"
    fit_log: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    labelled: list = field(default_factory=list, init=False, repr=False, compare=False)
    fits: list = field(default_factory=list, init=False, repr=False, compare=False)
    groups: list = field(default_factory=list, init=False, repr=False, compare=False)

    def check(self, knowledge: Knowledge) -> None:
        super().check(knowledge)
        if self.candidates == "answers" and not knowledge.answers:
            raise FlbenchError(f"attack {self.name!r}: candidates='answers' needs a training task with verbalised "
                               "answers (a choice task such as sst2); use candidates='vocab'")
        if self.positions == "answer" and not knowledge.answers:
            raise FlbenchError(f"attack {self.name!r}: positions='answer' needs a training task with verbalised "
                               "answers (a choice task such as sst2); use positions='detect' or 'all'")

    # ------------------------------------------------------------------ fit: the public tail, no training

    def _fit(self, aux_texts: list[str], knowledge: Knowledge) -> None:
        from splits.parts import Part
        from splits.partition import build_tail

        t0 = time.perf_counter()
        tail = build_tail(knowledge.model, knowledge.spec).float().eval().requires_grad_(False)
        # Forward-mode derivatives need the eager attention (sdpa has none on CPU): the attacker's own copy.
        cfg = copy.deepcopy(tail.config)
        cfg._attn_implementation = "eager"
        for layer in tail.layers:
            layer.self_attn.config = cfg
        self._body = Part("tail", cfg, list(tail.layers), tail.first_block, tail.rotary_emb).eval()
        self._norm = tail.norm
        self._gamma = tail.norm.weight.detach().float()
        self._eps = float(getattr(tail.norm, "variance_epsilon", 1e-6))
        w = tail.lm_head.weight.detach().float()
        vocab = int(w.shape[0])
        if self.candidates == "answers":
            self._cand = torch.tensor(sorted({t for a in knowledge.answers for t in a}), dtype=torch.long)
        else:
            self._cand = torch.arange(vocab)
        self._w = w  # (V, d): the softmax needs every logit
        self._wc = w[self._cand]  # (K, d): the candidates
        self._wg2 = (self._wc * self._gamma).square().sum(-1)  # ||γ ⊙ w_y||² per candidate
        self._answer_len = min(len(a) for a in knowledge.answers) if knowledge.answers else 0
        self._scale = self._noise(knowledge)
        self._sigma = 0.0 if self._scale is None else float(self._scale.value)
        self._relative = bool(self._scale is not None and self._scale.relative)
        tok = knowledge.tokenizer
        self._fill = int(tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0))
        self.fit_log = {"seconds": round(time.perf_counter() - t0, 3), "tail_blocks": self._body.n_blocks,
                        "candidates": int(self._cand.numel()), "noise_sigma": self._sigma,
                        "noise_relative": self._relative}

    @property
    def candidate_ids(self) -> torch.Tensor:
        """The token ids the decoder scores as labels (sorted): the whole vocabulary, or the task's answer
        tokens with candidates="answers"."""
        return self._cand

    def answer_positions(self, n: int) -> range:
        """The input positions an answer-only recipe labels in a sequence of n tokens: the last L, with L the
        shortest public answer's length (at least position 1: position 0 is never a label)."""
        return range(max(1, n - self._answer_len), n)

    @staticmethod
    def _noise(knowledge: Knowledge) -> Any:
        """The gradient defense's noise scale (`NoiseScale`, Kerckhoffs), None without noise."""
        d = knowledge.grad_defense
        if getattr(d, "family", "none") == "none":
            return None
        scale = d.noise_scale()
        return scale if scale.value > 0 else None

    def _sigma_of(self, g: torch.Tensor, releases: int = 1) -> float:
        """σ per coordinate of one observed (T, d) gradient, the mean of `releases` k releases (noise σ/√k):
        absolute, or relative to the clean RMS, estimated from E[o²] = RMS² (1 + σ_rel²/k) (the scale's own
        conversion for other units)."""
        scale, k = self._scale, releases
        if scale.relative:
            rms = float(g.square().mean().div(1.0 + scale.value ** 2 / k).sqrt())
            return scale.value * rms / k ** 0.5
        per = getattr(scale, "per_coordinate_std", None)
        return (float(per(g.shape[-1])) if per is not None else float(scale.value)) / k ** 0.5

    # ------------------------------------------------------------------ invert

    def _pooled_groups(self, obs: Observations) -> list[list[int]]:
        """Groups of entries to decode together: one per entry without pooling; with pool="linked", the
        releases of each example linked across epochs by h_A (attacks.linking), then every entry left out."""
        n = len(obs.lengths)
        if self.pool == "none":
            return [[i] for i in range(n)]
        if obs.h_a is None or not obs.epochs:
            raise FlbenchError(f"attack {self.name!r}: pool='linked' links the epochs' releases by h_A and needs "
                               "both h_A and the epochs of the recorded training traffic; use pool='none'")
        from attacks.linking import link_by_distance

        idx = [i for i in range(n) if obs.grad_b[i] is not None and obs.epochs[i] >= 0]
        groups = [[idx[j] for j in g] for g in link_by_distance([obs.h_a[i] for i in idx],
                                                                  [obs.epochs[i] for i in idx])] if idx else []
        taken = {i for g in groups for i in g}
        return groups + [[i] for i in range(n) if i not in taken]

    def _invert(self, obs: Observations) -> list[list[int]]:
        t0 = time.perf_counter()
        n_entries = len(obs.lengths)
        out: list[list[int]] = [[self._fill] * n for n in obs.lengths]
        self.labelled, self.fits = [[] for _ in range(n_entries)], [[] for _ in range(n_entries)]
        self.groups = self._pooled_groups(obs)
        for group in self.groups:
            i = group[0]
            n = obs.lengths[i]
            if obs.grad_b[i] is None or n < 2:  # no gradient (not training traffic), or nothing to predict
                continue
            g = torch.stack([obs.grad_b[j].float() for j in group]).mean(0)
            h = torch.stack([obs.h_b[j].float() for j in group]).mean(0)
            pos, labels, fit = self._decode(h, g, releases=len(group))
            for j in group:
                for t, y in zip(pos, labels):
                    out[j][t + 1] = y
                self.labelled[j] = [t + 1 for t in pos]
                self.fits[j] = fit
        self.fit_log["invert_seconds"] = round(time.perf_counter() - t0, 3)
        return out

    def _own_jvp(self, h: torch.Tensor, g: torch.Tensor, positions: list[int]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, n, δn) at `positions`: the tail's final hidden state before and after the norm on h_B, and the
        derivative of the norm output at each position t along g_t placed at row t alone (forward mode; the
        positions ride as a batch, `chunk` at a time). Row t alone: the exact own-row inner product
        g_t·[a_{t,y}]_t, free of what the other rows of g (their own losses) would add through attention."""
        import torch.autograd.forward_ad as fwAD

        T, d = h.shape
        if not self._body.n_blocks:  # Q = 0: every row on its own; J_norm g row by row is exact
            idx = torch.tensor(positions)
            with torch.enable_grad(), fwAD.dual_level():
                n = self._norm(fwAD.make_dual(h[idx], g[idx]))
                npr, dn = fwAD.unpack_dual(n)
            return h[idx], npr.detach(), dn.detach()
        xs, ns, dns = [], [], []
        for start in range(0, len(positions), self.chunk):
            rows = torch.tensor(positions[start:start + self.chunk])
            P = len(rows)
            hh = h.unsqueeze(0).expand(P, T, d).contiguous()
            tangent = torch.zeros_like(hh)
            tangent[torch.arange(P), rows] = g[rows]
            mask = torch.ones(P, T, dtype=torch.long)
            pos = torch.arange(T).unsqueeze(0).expand(P, T)
            with torch.enable_grad(), fwAD.dual_level():
                x = self._body(fwAD.make_dual(hh, tangent), mask, pos)
                n = self._norm(x)
                xp = fwAD.unpack_dual(x).primal
                npr, dn = fwAD.unpack_dual(n)
            sel = (torch.arange(P), rows)
            xs.append(xp[sel].detach())
            ns.append(npr[sel].detach())
            dns.append(dn[sel].detach())
        return torch.cat(xs), torch.cat(ns), torch.cat(dns)

    def _scores(self, x: torch.Tensor, n: torch.Tensor, dn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(dot, norm) (P, K) for P positions and K candidates: g_t·[a_{t,y}]_t (exact: from the JVP δn) and
        ||[a_{t,y}]_t|| through the final norm's Jacobian (exact at Q = 0; with tail blocks their own-position
        Jacobian, close to the identity, is left out)."""
        w, wc, gamma = self._w, self._wc, self._gamma
        p = torch.softmax(n @ w.T, dim=-1)  # (P, V)
        m = p @ w  # W^T p (P, d)
        dot = (dn * m).sum(-1, keepdim=True) - dn @ wc.T  # (P, K)
        d = x.shape[-1]
        r2 = x.square().mean(-1, keepdim=True) + self._eps  # (P, 1)
        k = 1.0 / (d * r2)
        a = gamma * m  # γ ⊙ W^T p
        v2 = a.square().sum(-1, keepdim=True) - 2.0 * (gamma * a) @ wc.T + self._wg2  # ||γ⊙(m − w_y)||²
        xv = (x * a).sum(-1, keepdim=True) - (gamma * x) @ wc.T  # x·γ⊙(m − w_y)
        xx = x.square().sum(-1, keepdim=True)
        q2 = v2 + xv.square() * (k.square() * xx - 2.0 * k)
        # The model's favourite token y has m − w_y = Σ_{v≠y} p_v w_v − (1 − p_y) w_y, which the expanded forms
        # above get by cancellation (catastrophic when p_y → 1, e.g. a fitted answer): recompute its dot and
        # norm from that difference directly.
        top = p.argmax(-1)
        col = torch.searchsorted(self._cand, top).clamp_max(len(self._cand) - 1)
        hit = self._cand[col] == top
        if bool(hit.any()):
            rows = hit.nonzero().flatten()
            py = p[rows, top[rows]].unsqueeze(-1)
            rest = p[rows].scatter(1, top[rows].unsqueeze(1), 0.0)
            u = (rest.double() @ w.double()) - (1.0 - py.double()) * w[top[rows]].double()  # m − w_y, exact
            xr, r2r, kr = x[rows].double(), r2[rows].double(), k[rows].double()
            v = gamma.double() * u
            qv = v - xr * (kr * (xr * v).sum(-1, keepdim=True))  # Q (γ ⊙ u)
            dot[rows, col[rows]] = (dn[rows].double() * u).sum(-1).float()
            q2[rows, col[rows]] = (qv.square().sum(-1, keepdim=True)).squeeze(-1).float()
        q2 = torch.maximum(q2, 1e-6 * v2.clamp_min(0.0))  # rounding never makes a candidate's gradient vanish
        return dot, (q2 / r2).sqrt()

    def _project(self, h: torch.Tensor, g: torch.Tensor, releases: int = 1
                 ) -> tuple[list[int], torch.Tensor, torch.Tensor, float]:
        """The candidate logit positions t of one training sequence, the observation's projection on every
        candidate's unit hypothesis there, proj[t, y] = o_t·â_{t,y} (P, K), the observed row norms (T,) and the
        noise σ per coordinate (0 without a gradient defense)."""
        T = h.shape[0]
        rows = g.norm(dim=-1)
        noisy = self._sigma > 0
        top = float(rows.max())
        if self.positions == "answer":  # the recipe's labelled positions: the answer's, at the end (noise or not)
            cand_pos = list(range(max(0, T - 1 - self._answer_len), T - 1)) if noisy or top > 0 else []
        elif noisy:
            cand_pos = list(range(T - 1))
        else:  # a row without gradient: no loss at or after it
            cand_pos = [t for t in (rows > ZERO_ROW * top).nonzero().flatten().tolist() if t < T - 1] if top > 0 else []
        sigma = self._sigma_of(g, releases) if noisy else 0.0
        if not cand_pos:
            return [], torch.empty(0, int(self._cand.numel())), rows, sigma
        x, n, dn = self._own_jvp(h, g, cand_pos)
        proj = []
        for start in range(0, len(cand_pos), self.chunk):
            sl = slice(start, start + self.chunk)
            dot, norm = self._scores(x[sl], n[sl], dn[sl])
            proj.append(dot / norm)
        return cand_pos, torch.cat(proj), rows, sigma

    def _labelled(self, cand_pos: list[int], proj: torch.Tensor, rows: torch.Tensor, sigma: float
                  ) -> torch.Tensor:
        """Which candidate positions are taken as labelled (bool (P,)): the module docstring's tests."""
        c = proj.max(-1).values
        cos_all = c / rows[torch.tensor(cand_pos)].clamp_min(1e-30)
        if self.positions in ("all", "answer") or (sigma == 0 and self._body.n_blocks == 0):
            return torch.ones_like(cos_all, dtype=torch.bool)  # every candidate position; Q = 0: a gradient means a label
        if sigma > 0:  # generalized likelihood-ratio test against "noise only" (module docstring)
            return c.clamp_min(0.0).square() / (sigma * sigma) > 2.0 * math.log(int(self._cand.numel()) / self.false_alarm)
        keep = cos_all >= self.min_fit
        keep[-1] = True  # the last position with a gradient is labelled (causal attention)
        return keep

    def _decode(self, h: torch.Tensor, g: torch.Tensor, releases: int = 1) -> tuple[list[int], list[int], list[float]]:
        """Labelled positions t (logit positions: t predicts input token t + 1), their labels and fits (the
        best candidate's cosine) for one training sequence."""
        cand_pos, proj, rows, sigma = self._project(h, g, releases)
        if not cand_pos:
            return [], [], []
        c, j = proj.max(-1)
        cos_all = c / rows[torch.tensor(cand_pos)].clamp_min(1e-30)
        sel = self._labelled(cand_pos, proj, rows, sigma).nonzero().flatten().tolist()
        return [cand_pos[s] for s in sel], [int(self._cand[j[s]]) for s in sel], [float(cos_all[s]) for s in sel]

    def evidence(self, h: torch.Tensor, g: torch.Tensor, releases: int = 1) -> dict[int, torch.Tensor]:
        """The backward channel's log-evidence about the INPUT tokens of one training sequence, for combining
        with another channel: {input position t + 1: (K,) per candidate y, the log-likelihood ratio of "t is
        labelled y" against "no label at t" (o_t noise only)} at the positions taken as labelled. Under the
        gradient defense's noise that ratio is (o_t·â_{t,y})₊² / (2σ²) (the profile likelihood of the module
        docstring against −||o_t||²/(2σ²), so it is ≥ 0 and near 0 where no label is); without noise the residual of the
        best candidate stands in for σ (σ² = (||o_t||² − max_y (o_t·â_{t,y})²) / (d − 1): what no candidate
        explains, e.g. the client's unknown adapters, treated as isotropic noise), so a position the public
        tail explains exactly gives sharp evidence and a poorly explained one weak evidence."""
        cand_pos, proj, rows, sigma = self._project(h, g, releases)
        if not cand_pos:
            return {}
        keep = self._labelled(cand_pos, proj, rows, sigma)
        d = g.shape[-1]
        out: dict[int, torch.Tensor] = {}
        for s in keep.nonzero().flatten().tolist():
            p = proj[s]
            var = sigma * sigma
            if sigma == 0:
                r = float(rows[cand_pos[s]])
                var = max((r * r - float(p.max()) ** 2) / (d - 1), (1e-6 * r) ** 2 / d)
            out[cand_pos[s] + 1] = p.clamp_min(0.0).square() / (2.0 * var)
        return out

    def diagnostics(self, true_ids: list[list[int]]) -> dict[str, Any]:
        out: dict[str, Any] = {"labelled_positions": sum(len(p) for p in self.labelled)}
        if self.pool != "none":  # linking quality, scored with the truth: same example = same token ids
            from attacks.linking import linking_accuracy

            ids: dict[tuple, int] = {}
            example_of = [ids.setdefault(tuple(t), len(ids)) for t in true_ids]
            out["pooled_groups"] = sum(len(g) > 1 for g in self.groups)
            out["linking_accuracy"] = linking_accuracy(self.groups, example_of)
        return out
