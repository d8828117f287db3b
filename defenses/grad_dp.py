"""`grad-dp`: per-example clip + Gaussian noise on the gradient dL/dh_B the client's tail sends to the server.

Source: Abadi et al., "Deep Learning with Differential Privacy", ACM CCS 2016 (DP-SGD: clip each example's
gradient to C, add N(0, (zC)²)), applied to the cut-layer gradient of split learning as FL-LLaMA's code
offers (arXiv 2505.15683). It sits on the GRADIENT edge (`edges = ("grad_b",)`): the runtime calls
`defense(g, generator)` with g = dL/dh_B of shape (B, T, d), rows of padded positions zero.

Guarantee (also in `describe()`): each call releases G_b = clip_C(g_b) + N(0, (zC)² I) for every example b,
where g_b is example b's whole (T, d) gradient block clipped to Frobenius norm ≤ C. Neighbouring = replace
one training example by another of the same length (batch size and lengths are sent in the clear, so
add/remove neighbours — DP-SGD's, with Δ = C — do not apply): Δ = 2C, noise multiplier z/2 per step.
Releases = the training steps in which the example's gradient is sent; they compose (RDP, opacus,
sample_rate 1: batches are not Poisson-sampled here). This bounds what the gradient edge alone reveals; the
same example's h_A on the forward edge is a separate release — compose both with
`defenses.accounting.compose_gaussian`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from defenses.accounting import accountant_name
from defenses.base import EDGE_GRAD_B, register
from defenses.clipping import ClippedGaussian
from flbench.core.params import PositiveFloat, UnitIntervalOpen

PRIVACY_UNIT = ("one training example's gradient dL/dh_B (all its positions) replaced by one of the same length; "
                "releases = training steps in which the example appears")


@register("grad-dp")
@dataclass
class GradDP(ClippedGaussian):
    """Clip each example's dL/dh_B to L2 norm `clip` (C), add N(0, (noise_multiplier·C)²): DP-SGD on the cut.

    Abadi et al. 2016 (CCS) clip + noise on the gradient the tail sends (gradient edge only); assumes
    neighbours differ in one example of the same length. clip: C > 0, the Frobenius norm of one example's
    (T, d) gradient block (padded rows are zero). noise_multiplier: z > 0; noise std is z·C. delta: δ in
    (0, 1) for the (ε, δ) report. No defaults for C and z (chosen explicitly, as for dp-forward).
    """

    edges = (EDGE_GRAD_B,)
    clip: PositiveFloat = field(metadata={"flag": "--grad-clip", "help": "L2 clip C of each example's dL/dh_B"})
    noise_multiplier: PositiveFloat = field(metadata={
        "flag": "--grad-noise-multiplier", "help": "gradient noise std = z × C"})
    delta: UnitIntervalOpen = field(default=1e-5, metadata={
        "flag": "--grad-delta", "help": "δ of the gradient edge's (ε, δ) report"})

    @property
    def per_example(self) -> bool:
        return True

    @property
    def privacy_unit(self) -> str:
        return PRIVACY_UNIT

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "noise": "each example's (T, d) dL/dh_B L2-clipped to C, then i.i.d. N(0, (z*C)^2) on every coordinate",
            "sigma": self.sigma,
            "formal_dp": True,
            "neighbouring": ("replace one example by another of the same length; its clipped gradient moves by at "
                             "most 2C in L2, noise multiplier z/2 per step; steps compose (RDP, sample_rate=1)"),
            "sensitivity_l2": 2.0 * self.clip,
            "effective_noise_multiplier": self.effective_noise_multiplier(),
            "accountant": accountant_name(),
            "epsilon_per_release": self.epsilon(1),
            "source": "DP-SGD (Abadi et al., CCS 2016) on the split-learning cut gradient",
        }
