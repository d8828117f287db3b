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

from defenses.base import ABSOLUTE, RELATIVE_RMS, BaseDefense, NoiseScale, draw_noise, register
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
