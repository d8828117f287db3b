"""`dp-forward`: per-token clipping + Gaussian noise on the sent hidden states, with an RDP accountant.

Idea: differential privacy on the activations a split-learning client sends (split learning: Vepakomma
et al. 2018, "Split learning for health"; DP in the forward pass of language models: Du et al., "DP-Forward:
Fine-tuning and Inference on Language Models with Differential Privacy in Forward Pass", ACM CCS 2023,
doi:10.1145/3576915.3616592 — they use a matrix Gaussian mechanism; this is the plain isotropic Gaussian
mechanism per token). Accounting: Rényi DP (Mironov 2017, "Rényi Differential Privacy", CSF 2017) via
opacus' `RDPAccountant` (Yousefpour et al. 2021); nothing here is hand-rolled.

Derivation of the guarantee (also returned by `describe()`):
  Each call releases, for every row i (one token position of h_A), y_i = clip_C(h_i) + N(0, (zC)^2 I),
  where clip_C(v) = v * min(1, C/||v||_2), so ||clip_C(v)||_2 <= C.
  Neighbouring relation: "replace one token vector" — h and h' differ in one row. Then
  ||clip_C(h_i) - clip_C(h'_i)||_2 <= 2C (L2 sensitivity Δ = 2C); rows are noised independently, so the
  other rows leak nothing about it. A Gaussian mechanism with std σ = zC and sensitivity Δ has noise
  multiplier σ/Δ = z/2 (RDP ε(α) = αΔ²/(2σ²) = 2α/z², Mironov 2017 Prop. 7). No subsampling: sample_rate 1.
  The same vector released k times (epochs, re-sent prompts without a KV cache) composes: k steps.
  If neighbours may differ in m rows (e.g. a whole example of m positions), Δ = 2C√m and the effective
  multiplier is z/(2√m): pass `vectors=m` to `epsilon`.
  Caveat: with p >= 1 head blocks, causal attention spreads one *input* token into every later row, so a
  guarantee about input tokens or whole examples needs `vectors` = the number of positions that can change
  (the sequence length). Only a head of bare embeddings (p = 0) maps one input token to one row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from defenses.base import ABSOLUTE, BaseDefense, NoiseScale, draw_noise, gaussian_log_likelihood, register
from flbench.core.params import NonNegativeInt, PositiveFloat, PositiveInt, UnitIntervalOpen, check_value

if TYPE_CHECKING:
    import torch

NEIGHBOURING = ("replace one token vector: neighbouring inputs differ in one row (one position) of h_A; "
                "clipped rows differ by at most 2C in L2, so the effective noise multiplier is z/2 "
                "(z/(2*sqrt(m)) if m rows may differ); each call releases each row once and repeated "
                "releases compose (RDP, Mironov 2017; opacus RDPAccountant, sample_rate=1)")
PRIVACY_UNIT = "one token vector (a row of h_A) replaced"
ACCOUNTANT = "opacus.accountants.RDPAccountant (Mironov 2017), sample_rate=1.0"


@register("dp-forward")
@dataclass
class DPForward(BaseDefense):
    """Clip each token's hidden vector to L2 norm `clip` (C), add N(0, (noise_multiplier * C)^2) noise.

    clip: C > 0, in the units of h_A (see stats()["norm_mean"] to pick it; everything above C is scaled down).
    noise_multiplier: z > 0; noise std is z*C. delta: δ in (0, 1) for the (ε, δ) report.
    clip and noise_multiplier have no defaults: a DP mechanism's clip and noise are always chosen explicitly.
    Clipping and noise are computed in at least fp32; the cast back to h's dtype happens after the noise
    is added (post-processing), so low-precision rounding never widens the sensitivity.
    """

    family = "dp"
    clip: PositiveFloat = field(metadata={"flag": "--dp-clip", "help": "per-token L2 clip C"})
    noise_multiplier: PositiveFloat = field(metadata={"flag": "--noise-multiplier", "help": "noise std = z × C"})
    delta: UnitIntervalOpen = field(default=1e-5, metadata={"flag": "--dp-delta", "help": "δ of the (ε, δ) report"})
    _norm_sum: float = field(default=0.0, init=False, repr=False, compare=False)
    _norm_max: float = field(default=0.0, init=False, repr=False, compare=False)
    _clipped: int = field(default=0, init=False, repr=False, compare=False)

    def noise_scale(self) -> NoiseScale:
        return NoiseScale(self.sigma, ABSOLUTE)

    def accounting(self, releases: int = 1) -> dict[str, Any]:
        return {"epsilon": self.epsilon(releases), "delta": self.delta, "unit": PRIVACY_UNIT,
                "releases": releases, "accountant": ACCOUNTANT}

    @property
    def sigma(self) -> float:
        return self.noise_multiplier * self.clip

    def _apply(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        import torch

        work = h if h.dtype in (torch.float32, torch.float64) else h.float()
        clipped, norms = self.clip_rows(work)
        noise = draw_noise(work, self.sigma, generator)
        n = norms.detach()  # statistics only: detached values, no graph
        self._norm_sum += float(n.double().sum())
        self._norm_max = max(self._norm_max, float(n.max())) if n.numel() else self._norm_max
        self._clipped += int((n > self.clip).sum())
        self._stats.add(h, noise, self.sigma)
        return (clipped + noise).to(h.dtype)

    def clip_rows(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows of h clipped to L2 norm C, their norms before clipping (..., 1))."""
        import torch

        norms = torch.linalg.vector_norm(h, dim=-1, keepdim=True)
        # Same form as opacus' per-sample clipping: the 1e-6 keeps ||out|| <= C strictly and avoids 0/0.
        return h * (self.clip / (norms + 1e-6)).clamp(max=1.0), norms

    def observation_log_likelihood(self, observed: torch.Tensor, candidates: torch.Tensor, *,
                                   reference_rms: float | None = None) -> torch.Tensor:
        """The mechanism's own law: −Σ_i ||o_i − clip_C(c)||² / (2 (zC)²) (the candidate is clipped first,
        exactly as `_apply` clips the clean row). reference_rms is not used (the scale is absolute)."""
        import torch

        work = candidates if candidates.dtype in (torch.float32, torch.float64) else candidates.float()
        return gaussian_log_likelihood(observed, self.clip_rows(work)[0], self.sigma)

    def epsilon(self, steps: int, delta: float | None = None, vectors: int = 1) -> float:
        """ε after `steps` releases of the same token vector(s), at `delta` (default: self.delta).

        `vectors`: how many rows may differ between neighbours (1 = replace one token vector).
        Computed by opacus' RDPAccountant with sample_rate=1 and noise multiplier z/(2*sqrt(vectors)).
        """
        steps = check_value("dp-forward epsilon", "steps", steps, NonNegativeInt)
        vectors = check_value("dp-forward epsilon", "vectors", vectors, PositiveInt)
        delta = self.delta if delta is None else check_value("dp-forward epsilon", "delta", delta, UnitIntervalOpen)
        if steps == 0:
            return 0.0
        from opacus.accountants import RDPAccountant  # lazy: opacus adds ~1 s to import time

        acc = RDPAccountant()
        # The (noise_multiplier, sample_rate, num_steps) entry that `steps` calls of acc.step() would build.
        acc.history = [(self.effective_noise_multiplier(vectors), 1.0, steps)]
        return float(acc.get_epsilon(delta=delta))

    def effective_noise_multiplier(self, vectors: int = 1) -> float:
        """Noise std over L2 sensitivity: z*C / (2C*sqrt(vectors)) = z / (2*sqrt(vectors))."""
        return self.noise_multiplier / (2.0 * math.sqrt(vectors))

    def stats(self) -> dict[str, Any]:
        """SNR (both conventions), clipping statistics and releases.

        The defense cannot tell examples apart, so `releases_per_example_max` = number of calls: each call
        releases each row at most once, hence no token vector was released more often. It is exact for a
        prompt re-sent at every generation step and conservative when calls carry different examples
        (several batches per epoch); `epsilon_upper_bound` is ε at that count. Callers that know their
        schedule (epochs, prefill-once with a KV cache) should call `epsilon(steps)` with the exact count.
        """
        s = super().stats()
        vec = max(s["vectors"], 1)
        calls = s["calls"]
        return {
            **s,
            "norm_mean": self._norm_sum / vec,
            "norm_max": self._norm_max,
            "clipped_fraction": self._clipped / vec,
            "releases_per_example_max": calls,
            "epsilon_upper_bound": self.epsilon(calls),
            "delta": self.delta,
        }

    def reset_stats(self) -> None:
        super().reset_stats()
        self._norm_sum, self._norm_max, self._clipped = 0.0, 0.0, 0

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "noise": "per-row L2 clip to C, then i.i.d. N(0, (z*C)^2) on every coordinate of h_A",
            "sigma": self.sigma,
            "formal_dp": True,
            "neighbouring": NEIGHBOURING,
            "sensitivity_l2": 2.0 * self.clip,
            "effective_noise_multiplier": self.effective_noise_multiplier(),
            "accountant": ACCOUNTANT,
            "epsilon_per_release": self.epsilon(1),
            "source": "DP-Forward (Du et al., CCS 2023) idea; Gaussian mechanism + RDP accounting",
        }
