"""`none`: the undefended baseline; sends the head's hidden states as they are.

This is the one form of "no defense": pipeline, CLI, records and the attacker's `Knowledge` all use
`NoDefense` (the split runtime alone also accepts `defense=None`, meaning nothing on the edge).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from defenses.base import ABSOLUTE, BaseDefense, NoiseScale, gaussian_log_likelihood, register

if TYPE_CHECKING:
    import torch


@register("none")
@dataclass
class NoDefense(BaseDefense):
    """Identity: the server sees the clean h_A (FL-LLaMA without noise). Records call counts and signal RMS."""

    family = "none"

    def _apply(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self._stats.add(h, None, 0.0)
        return h

    def observation_log_likelihood(self, observed: torch.Tensor, candidates: torch.Tensor, *,
                                   reference_rms: float | None = None) -> torch.Tensor:
        """The law is a point mass (o = c up to float and wire rounding): −Σ_i ||o_i − c||² / (2τ²) with
        τ = EXACT_RELATIVE_TOLERANCE × RMS(o), so the true row scores ≈ 0 and every other row far below any
        log-prior difference (SipIt's exact acceptance, arXiv 2510.15511)."""
        return gaussian_log_likelihood(observed, candidates, 0.0)

    def noise_scale(self) -> NoiseScale:
        return NoiseScale(0.0, ABSOLUTE)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "noise": None, "formal_dp": False}
