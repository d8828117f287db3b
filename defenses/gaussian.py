"""`gaussian`: FL-LLaMA's defense, i.i.d. Gaussian noise on the hidden states the client sends.

Source: FL-LLaMA, "A Federated Splitting Framework for LLMs: Security, Efficiency, and Adaptability"
(arXiv 2505.15683): the client adds noise to BlocksA's output before it crosses the wire. The paper quotes
its noise "scale" as mean|noise|; here `sigma` is the standard deviation (mean|noise| = sigma*sqrt(2/pi)),
and `stats()` reports the SNR in both conventions so runs compare across models and papers.
Assumes nothing about the attacker; gives no formal DP guarantee (hidden states are not norm-bounded) —
see `dp-forward` for the clipped, accounted variant.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from defenses.base import (
    ABSOLUTE,
    RELATIVE_RMS,
    BaseDefense,
    NoiseScale,
    draw_noise,
    gaussian_log_likelihood,
    register,
)
from flbench.core.errors import FlbenchError
from flbench.core.params import NonNegativeFloat

if TYPE_CHECKING:
    import torch


@register("gaussian")
@dataclass
class GaussianNoise(BaseDefense):
    """h + N(0, sigma_eff^2) on every coordinate (FL-LLaMA, arXiv 2505.15683).

    sigma: noise standard deviation, >= 0. sigma = 0 returns h itself (bit-identical, no draw).
    relative: if True, sigma_eff = sigma * RMS(h) with RMS measured on this call's clean hidden states
      (detached: the scale is treated as a constant for backprop), so sigma is an inverse SNR.
    """

    family = "additive-noise"
    sigma: NonNegativeFloat = field(default=0.0, metadata={
        "flag": "--noise-sigma", "help": "noise standard deviation σ", "selects": True})
    relative: bool = field(default=False, metadata={
        "flag": "--noise-relative", "help": "σ is a multiple of the clean hidden states' RMS"})

    def noise_scale(self) -> NoiseScale:
        return NoiseScale(self.sigma, RELATIVE_RMS if self.relative else ABSOLUTE)

    def _apply(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.sigma == 0.0:
            self._stats.add(h, None, 0.0)
            return h
        sigma = self.sigma
        if self.relative:
            sigma *= float(h.detach().double().square().mean().sqrt())
        noise = draw_noise(h, sigma, generator)
        self._stats.add(h, noise, sigma)
        return h + noise

    def observation_log_likelihood(self, observed: torch.Tensor, candidates: torch.Tensor, *,
                                   reference_rms: float | None = None) -> torch.Tensor:
        """−Σ_i ||o_i − c||² / (2 σ_eff²); σ_eff = sigma, or sigma × reference_rms when relative (the
        attacker's estimate, see `reference_rms_from_observed`). sigma = 0: the exact law (see
        `defenses.base.gaussian_log_likelihood`)."""
        sigma = self.sigma
        if self.relative and sigma > 0:
            if reference_rms is None or not reference_rms > 0:
                raise FlbenchError(f"defense 'gaussian' with relative=True: the likelihood needs reference_rms "
                                   f"(the clean hidden states' RMS) > 0, got {reference_rms!r}")
            sigma *= float(reference_rms)
        return gaussian_log_likelihood(observed, candidates, sigma)

    def reference_rms_from_observed(self, observed: torch.Tensor) -> float | None:
        """RMS of the clean rows from the observed ones: E[o²] = RMS² + σ_eff² = RMS² (1 + sigma²) per
        coordinate, so RMS ≈ sqrt(mean(o²) / (1 + sigma²)). Only relative scales need it (else None)."""
        if not self.relative:
            return None
        mean_sq = float(observed.detach().double().square().mean())
        return math.sqrt(mean_sq / (1.0 + self.sigma * self.sigma))

    def describe(self) -> dict[str, Any]:
        d = {
            "noise": "i.i.d. N(0, sigma_eff^2) on every coordinate of h_A",
            "sigma_meaning": "multiple of RMS(h_A) per call" if self.relative else "absolute standard deviation",
            "formal_dp": False,
            "source": "FL-LLaMA, arXiv 2505.15683",
        }
        if not self.relative:
            d["paper_noise_scale"] = self.sigma * math.sqrt(2.0 / math.pi)  # the paper's mean|noise|
        return {**super().describe(), **d}
