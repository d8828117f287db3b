"""`gaussian`: FL-LLaMA's defense, i.i.d. Gaussian noise on the hidden states the client sends.

Source: FL-LLaMA, "A Federated Splitting Framework for LLMs: Security, Efficiency, and Adaptability"
(arXiv 2505.15683): the client adds noise to BlocksA's output before it crosses the wire. The paper quotes
its noise "scale" as mean|noise|; here `sigma` is the standard deviation (mean|noise| = sigma*sqrt(2/pi)),
and `stats()` reports the SNR in both conventions so runs compare across models and papers.
Assumes nothing about the attacker; gives no formal DP guarantee (hidden states are not norm-bounded) —
see `dp-forward` for the clipped, accounted variant.

Relative σ, calibrated: with relative=True alone, σ_eff = sigma × RMS of each call's clean h_A — a scale set
by the private traffic itself (padding included), and dominated at P ≥ 2 by the attention-sink row at
position 0 (norm ≈ 10× the median token's in SmolLM2), so one nominal multiple means a different per-token SNR
at each split depth. `scale` (from `flbench calibrate`: the median per-token RMS of the public head's output
on public text, padding excluded; `flbench.pipeline.calibrate`) fixes that reference once: σ_eff = sigma ×
scale, a public number independent of the private data (the attacker knows it too, as Kerckhoffs grants).
The sink effect: Xiao et al., "Efficient Streaming Language Models with Attention Sinks" (arXiv 2309.17453);
Sun et al., "Massive Activations in Large Language Models" (arXiv 2402.17762).
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
    relative: if True, sigma is an inverse SNR: sigma_eff = sigma * scale when `scale` is given (a fixed,
      public reference RMS), else sigma * RMS(h) with RMS measured on this call's clean hidden states
      (detached: the scale is treated as a constant for backprop).
    scale: the fixed reference RMS of a relative sigma, > 0 (`flbench calibrate`'s token_rms_median);
      0 (default): not calibrated, the per-call RMS above. Only with relative=True.
    """

    family = "additive-noise"
    sigma: NonNegativeFloat = field(default=0.0, metadata={
        "flag": "--noise-sigma", "help": "noise standard deviation σ", "selects": True})
    relative: bool = field(default=False, metadata={
        "flag": "--noise-relative", "help": "σ is a multiple of the clean hidden states' RMS"})
    # 0 = "not given" rather than None: the CLI builds a float option from the annotation (an Optional would not
    # be one) and the shared suite refuses None for every number. params() leaves 0 out, so the configs and
    # hashes of the committed records (which predate `scale`) are unchanged.
    scale: NonNegativeFloat = field(default=0.0, metadata={
        "flag": "--noise-scale", "help": "fixed RMS that a relative σ multiplies (from `flbench calibrate`); "
                                         "0: the RMS of each call's clean h_A"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale > 0 and not self.relative:
            raise FlbenchError(f"defense 'gaussian': scale={self.scale!r} (--noise-scale) applies only to a relative sigma "
                               "(relative=True, --noise-relative); drop scale or make sigma relative")

    @property
    def calibrated(self) -> bool:
        """True when a relative sigma multiplies the fixed public `scale` (not each call's RMS)."""
        return self.relative and self.scale > 0

    def params(self) -> dict[str, Any]:
        out = super().params()
        if out.get("scale") == 0.0:  # not given: the parameters (and config hashes) from before `scale` existed
            del out["scale"]
        return out

    def __repr__(self) -> str:  # as the dataclass repr, over params() (an uncalibrated repr stays as it was)
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"

    def noise_scale(self) -> NoiseScale:
        """Calibrated: the per-coordinate std sigma × scale is a fixed number, so ABSOLUTE (the multiple and
        its reference are in params() and `describe()`); otherwise sigma, RELATIVE_RMS when relative."""
        if self.calibrated:
            return NoiseScale(self.sigma * self.scale, ABSOLUTE)
        return NoiseScale(self.sigma, RELATIVE_RMS if self.relative else ABSOLUTE)

    def _apply(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.sigma == 0.0:
            self._stats.add(h, None, 0.0)
            return h
        sigma = self.sigma
        if self.calibrated:
            sigma *= self.scale
        elif self.relative:
            sigma *= float(h.detach().double().square().mean().sqrt())
        noise = draw_noise(h, sigma, generator)
        self._stats.add(h, noise, sigma)
        return h + noise

    def observation_log_likelihood(self, observed: torch.Tensor, candidates: torch.Tensor, *,
                                   reference_rms: float | None = None) -> torch.Tensor:
        """−Σ_i ||o_i − c||² / (2 σ_eff²); σ_eff = sigma, sigma × scale when calibrated (public: reference_rms
        is not used), or sigma × reference_rms when relative (the attacker's estimate, see
        `reference_rms_from_observed`). sigma = 0: the exact law (see `defenses.base.gaussian_log_likelihood`)."""
        sigma = self.sigma
        if self.calibrated:
            sigma *= self.scale
        elif self.relative and sigma > 0:
            if reference_rms is None or not reference_rms > 0:
                raise FlbenchError(f"defense 'gaussian' with relative=True: the likelihood needs reference_rms "
                                   f"(the clean hidden states' RMS) > 0, got {reference_rms!r}")
            sigma *= float(reference_rms)
        return gaussian_log_likelihood(observed, candidates, sigma)

    def reference_rms_from_observed(self, observed: torch.Tensor) -> float | None:
        """RMS of the clean rows from the observed ones: E[o²] = RMS² + σ_eff² = RMS² (1 + sigma²) per
        coordinate, so RMS ≈ sqrt(mean(o²) / (1 + sigma²)). Only relative scales need it (else None); a
        calibrated one is public: `scale` itself, whatever was observed."""
        if not self.relative:
            return None
        if self.calibrated:
            return self.scale
        mean_sq = float(observed.detach().double().square().mean())
        return math.sqrt(mean_sq / (1.0 + self.sigma * self.sigma))

    def describe(self) -> dict[str, Any]:
        d = {
            "noise": "i.i.d. N(0, sigma_eff^2) on every coordinate of h_A",
            "sigma_meaning": ("calibrated: sigma × scale (public token-RMS median)" if self.calibrated else
                              "multiple of RMS(h_A) per call" if self.relative else "absolute standard deviation"),
            "formal_dp": False,
            "source": "FL-LLaMA, arXiv 2505.15683",
        }
        if self.calibrated:
            d["sigma_effective"] = self.sigma * self.scale
            d["paper_noise_scale"] = self.sigma * self.scale * math.sqrt(2.0 / math.pi)
        elif not self.relative:
            d["paper_noise_scale"] = self.sigma * math.sqrt(2.0 / math.pi)  # the paper's mean|noise|
        return {**super().describe(), **d}

    def record_block(self, releases: int = 1) -> dict[str, Any]:
        """The base block; calibrated, also the multiple, its reference and what the reference is (the block's
        noise_sigma is then the absolute sigma × scale, noise_unit absolute)."""
        out = super().record_block(releases)
        if self.calibrated:
            out.update(noise_multiple=self.sigma, noise_reference_rms=self.scale,
                       noise_reference="calibrated: sigma × scale (public token-RMS median, flbench calibrate)")
        return out
