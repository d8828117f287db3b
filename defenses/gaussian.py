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
from dataclasses import dataclass
from typing import Any

import torch

from defenses.base import BaseDefense, check_number, draw_noise, register
from flbench.core.errors import FlbenchError


@register("gaussian")
@dataclass
class GaussianNoise(BaseDefense):
    """h + N(0, sigma_eff^2) on every coordinate (FL-LLaMA, arXiv 2505.15683).

    sigma: noise standard deviation, >= 0. sigma = 0 returns h itself (bit-identical, no draw).
    relative: if True, sigma_eff = sigma * RMS(h) with RMS measured on this call's clean hidden states
      (detached: the scale is treated as a constant for backprop), so sigma is an inverse SNR.
    """

    sigma: float = 0.0
    relative: bool = False

    def __post_init__(self) -> None:
        self.sigma = check_number("gaussian", "sigma", self.sigma, 0.0)
        if not isinstance(self.relative, bool):
            raise FlbenchError(f"gaussian: relative={self.relative!r} is not accepted; accepted: True or False")

    def _apply(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.sigma == 0.0:
            self._stats.add(h, None, 0.0)
            return h
        sigma = self.sigma
        if self.relative:
            with torch.no_grad():
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
