"""`dp-forward`: clip + Gaussian noise on the hidden states the client sends, with RDP accounting.

Source: Du et al., "DP-Forward: Fine-tuning and Inference on Language Models with Differential Privacy in
Forward Pass", ACM CCS 2023 (doi:10.1145/3576915.3616592): perturb the forward-pass embedding matrix of each
example, with the example as the privacy unit (they use an analytic matrix Gaussian mechanism; this is the
isotropic Gaussian mechanism, its special case with identity covariances). Split learning: Vepakomma et al.
2018, "Split learning for health". Accounting: `defenses.accounting` (opacus' RDPAccountant, Mironov 2017).

Derivation of the guarantee (also returned by `describe()`), for `unit`:
- "sequence" (default; DP-Forward's unit): each call releases Y_b = clip_C(H_b) + N(0, (zC)² I) for every
  example b of the batch, where H_b is example b's whole (T, d) block of h_A and clip_C scales it to
  Frobenius norm ≤ C. Neighbouring = replace one example by another of the same length (the protocol sends
  every example's length in the clear, so length is not protected): Y_b moves by ≤ 2C in L2 (Δ = 2C), the
  other examples are clipped and noised independently — noise multiplier σ/Δ = z/2 per call. This covers
  every position of the example at once, including what causal attention spreads from one input token
  into later rows.
- "token": each row h_i (one token vector, one position) is clipped to C on its own. Neighbouring =
  replace one token vector (one row of h_A); Δ = 2C, multiplier z/2. A guarantee for m rows (a whole
  example of m positions, or one input token spread by attention into every later row when p ≥ 1 head
  blocks) needs Δ = 2C√m: `epsilon(steps, vectors=m)`. Only a head of bare embeddings (p = 0) maps one
  input token to one row.
Releases: each call releases each unit once; k calls involving it compose (prefill + each KV-cached decode
step, epochs, a prompt re-sent without a KV cache) — `accounting(releases=k)`.

Padding: the defense receives h only (`splits.parties.ClientParty._send_hidden` calls `defense(h,
generator)`), so with the sequence unit an example's norm is taken over ALL its T rows, padded ones
included. This is sound (the rows actually sent are a subset of a block of norm ≤ C, so Δ ≤ 2C still) and
costs only utility: padded rows — computed from pad tokens, dropped by `splits.sequence.pack` before the
wire — take part of the clip budget. A caller that can pass the attention mask would let the clip use real
rows only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from defenses.accounting import accountant_name
from defenses.base import register
from defenses.clipping import ClippedGaussian
from flbench.core.params import PositiveFloat, UnitIntervalOpen

PRIVACY_UNITS = {
    "sequence": "one example (its whole h_A block, all positions) replaced by one of the same length",
    "token": "one token vector (one row of h_A) replaced",
}
NEIGHBOURING = {
    "sequence": ("replace one example by another of the same length: each example's whole (T, d) block of "
                 "h_A is clipped to Frobenius norm C (padded rows included), so it moves by at most 2C in L2 and "
                 "the noise multiplier is z/2; each call releases each example once and calls compose (RDP, "
                 "Mironov 2017; opacus RDPAccountant, sample_rate=1)"),
    "token": ("replace one token vector: neighbouring inputs differ in one row (one position) of h_A; "
              "clipped rows differ by at most 2C in L2, so the effective noise multiplier is z/2 "
              "(z/(2*sqrt(m)) if m rows may differ); each call releases each row once and repeated "
              "releases compose (RDP, Mironov 2017; opacus RDPAccountant, sample_rate=1)"),
}


@register("dp-forward")
@dataclass
class DPForward(ClippedGaussian):
    """Clip each example's h_A (or each token vector) to L2 norm `clip` (C), add N(0, (noise_multiplier·C)²).

    DP-Forward (Du et al., CCS 2023) with the isotropic Gaussian mechanism; assumes neighbours differ in one
    unit (`unit`) and that lengths are public. clip: C > 0, in the units of h_A (see stats()["norm_mean"]
    to pick it: it is the norm of the unit, so a whole example's C is ≈ √T times a token's). noise_multiplier:
    z > 0; noise std is z·C. delta: δ in (0, 1) for the (ε, δ) report. unit: "sequence" (default: the whole
    (T, d) block of each example, padded rows included) or "token" (each row).
    clip and noise_multiplier have no defaults: a DP mechanism's clip and noise are always chosen explicitly.
    Clipping and noise are computed in at least fp32; the cast back to h's dtype happens after the noise
    is added (post-processing), so low-precision rounding never widens the sensitivity.
    """

    clip: PositiveFloat = field(metadata={
        "flag": "--dp-clip", "help": "L2 clip C of each privacy unit (--dp-unit: an example's h_A, or a token's)"})
    noise_multiplier: PositiveFloat = field(metadata={"flag": "--noise-multiplier", "help": "noise std = z × C"})
    delta: UnitIntervalOpen = field(default=1e-5, metadata={"flag": "--dp-delta", "help": "δ of the (ε, δ) report"})
    unit: Literal["sequence", "token"] = field(default="sequence", metadata={
        "flag": "--dp-unit", "help": "privacy unit: 'sequence' (clip each example's whole h_A; DP-Forward) or "
                                     "'token' (clip each token vector)"})

    @property
    def per_example(self) -> bool:
        return self.unit == "sequence"

    @property
    def privacy_unit(self) -> str:
        return PRIVACY_UNITS[self.unit]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "noise": (("each example's (T, d) block" if self.per_example else "each row") +
                      " L2-clipped to C, then i.i.d. N(0, (z*C)^2) on every coordinate of h_A"),
            "sigma": self.sigma,
            "formal_dp": True,
            "unit": self.unit,
            "neighbouring": NEIGHBOURING[self.unit],
            "sensitivity_l2": 2.0 * self.clip,
            "effective_noise_multiplier": self.effective_noise_multiplier(),
            "accountant": accountant_name(),
            "epsilon_per_release": self.epsilon(1),
            "likelihood": ("profile over the example's clip factor (approximate, see defenses.clipping)"
                           if self.per_example else "exact: candidate clipped, then Gaussian"),
            "source": "DP-Forward (Du et al., CCS 2023); Gaussian mechanism + RDP accounting",
        }
