"""The clipped Gaussian mechanism shared by `dp-forward` (h_A edge) and `grad-dp` (gradient edge).

Each privacy unit — one row (token vector) or one example (its whole (T, d) block) — is clipped to L2 norm C
(clip_C(v) = v·min(1, C/||v||), opacus' per-sample form), then i.i.d. N(0, (zC)²) noise is added to every
coordinate. Neighbouring inputs replace one unit: its clipped value moves by at most 2C in L2 (sensitivity
Δ = 2C), the other units are noised independently, so each call is a Gaussian mechanism with noise
multiplier σ/Δ = z/2 on that unit (Dwork & Roth 2014, "The Algorithmic Foundations of Differential
Privacy", Thm. A.1; accounting in `defenses.accounting`).

The attacker's law (`clipped_gaussian_log_likelihood`):
- per row: exact, −Σ_i ||o_i − clip_C(c)||² / (2σ²) (the candidate's clip depends on the candidate only);
- per example: the clip factor s = min(1, C/||H||_F) of a row depends on the whole example H, which a
  per-position likelihood does not see. Approximation (a profile likelihood, s a nuisance parameter):
  each release i is scored at its best factor s_i ∈ [0, min(1, C/||c||)] — the upper bound is exact, since
  the candidate row c is part of H, so ||H||_F ≥ ||c|| — i.e. −Σ_i min_s ||o_i − s·c||² / (2σ²). It upper-
  bounds the exact log-likelihood at the true s, is exact when the profile picks the true s (e.g. a one-row
  release whose row is clipped), and at small noise peaks at the true row (a wrong row only reaches the same
  value when it is parallel to the true one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from defenses.accounting import gaussian_accounting, gaussian_epsilon
from defenses.base import (
    ABSOLUTE,
    BaseDefense,
    NoiseScale,
    _work_dtype,
    check_observation_shapes,
    draw_noise,
    gaussian_log_likelihood,
)
from flbench.core.errors import FlbenchError
from flbench.core.params import (
    NonNegativeInt,
    PositiveInt,
    UnitIntervalOpen,
    check_value,
)

if TYPE_CHECKING:
    import torch

# Same form as opacus' per-sample clipping: the 1e-6 keeps ||out|| <= C strictly and avoids 0/0.
_EPS = 1e-6


def clip_rows(x: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(each row (last dim) of x clipped to L2 norm C, the row norms before clipping (..., 1))."""
    import torch

    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x * (clip / (norms + _EPS)).clamp(max=1.0), norms


def clip_examples(x: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(each example of x clipped to Frobenius norm C, the example norms before clipping).

    A 3-D x is (B, T, d): example b is x[b], all its T rows (padded ones included). A 2-D (T, d) or 1-D x is
    one example. Norms have x's rank with size-1 example dims ((B, 1, 1) for 3-D)."""
    import torch

    dims = tuple(range(1, x.ndim)) if x.ndim >= 3 else tuple(range(x.ndim))
    norms = torch.linalg.vector_norm(x, dim=dims, keepdim=True)
    return x * (clip / (norms + _EPS)).clamp(max=1.0), norms


def clipped_gaussian_log_likelihood(observed: torch.Tensor, candidates: torch.Tensor, clip: float, sigma: float,
                                    per_example: bool) -> torch.Tensor:
    """log p(observed | clean row = candidate) up to a candidate-independent constant, for the clipped Gaussian
    mechanism (shapes as in `defenses.base.squared_distance_sum`); see the module docstring for the law.
    Computed in at least fp32."""
    import torch

    check_observation_shapes(observed, candidates)
    work = _work_dtype(observed, candidates)
    c = candidates.to(work)
    if not per_example:
        return gaussian_log_likelihood(observed, clip_rows(c, clip)[0], sigma)
    single = observed.ndim < 3
    o = observed.reshape(1, -1, observed.shape[-1]).to(work) if single else observed.to(work)  # (B, n, d)
    shared = c.ndim == 2 and not single
    if single:
        c = c.unsqueeze(0)  # (1, K, d): the per-row form
    cc = c.square().sum(-1)  # (B, K) or (K,)
    s_max = (clip / (cc.sqrt() + _EPS)).clamp(max=1.0)
    dots = o @ c.T if shared else torch.einsum("bnd,bkd->bnk", o, c)  # (B, n, K)
    s = torch.minimum((dots / cc.clamp_min(1e-30).unsqueeze(-2)).clamp_min(0.0), s_max.unsqueeze(-2))
    if shared:  # one matrix product against a shared table (e.g. a vocabulary): expanded squares
        resid = (o.square().sum(-1, keepdim=True) - 2.0 * s * dots + s.square() * cc).clamp_min(0.0)
    else:  # by differences: no cancellation
        resid = (o.unsqueeze(2) - s.unsqueeze(-1) * c.unsqueeze(1)).square().sum(-1)  # (B, n, K)
    out = -resid.sum(1) / (2.0 * sigma * sigma)
    return out[0] if single else out


@dataclass
class ClippedGaussian(BaseDefense):
    """Base of the clipped Gaussian mechanisms (not registered): clip each privacy unit to L2 norm C, add
    N(0, (zC)²) to every coordinate. Subclasses declare the fields `clip`, `noise_multiplier`, `delta`, and say
    what their unit is (`per_example`, `privacy_unit`)."""

    family: ClassVar[str] = "dp"
    _norm_sum: float = field(default=0.0, init=False, repr=False, compare=False)
    _norm_max: float = field(default=0.0, init=False, repr=False, compare=False)
    _norm_sq_sum: float = field(default=0.0, init=False, repr=False, compare=False)
    _units: int = field(default=0, init=False, repr=False, compare=False)
    _clipped: int = field(default=0, init=False, repr=False, compare=False)

    # ------------------------------------------------------------------ what a subclass says

    @property
    def per_example(self) -> bool:
        """True: the unit is one example (clip its whole block); False: one row (clip each row)."""
        raise NotImplementedError

    @property
    def privacy_unit(self) -> str:
        raise NotImplementedError

    # ------------------------------------------------------------------ the mechanism

    @property
    def sigma(self) -> float:
        return self.noise_multiplier * self.clip

    def noise_scale(self) -> NoiseScale:
        return NoiseScale(self.sigma, ABSOLUTE)

    def clip_units(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x with each privacy unit clipped to L2 norm C, the units' norms before clipping)."""
        return clip_examples(x, self.clip) if self.per_example else clip_rows(x, self.clip)

    def _apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        import torch

        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        clipped, norms = self.clip_units(work)
        noise = draw_noise(work, self.sigma, generator)
        n = norms.detach().double()  # statistics only: detached values, no graph
        self._units += n.numel()
        self._norm_sum += float(n.sum())
        self._norm_sq_sum += float(n.square().sum())
        self._norm_max = max(self._norm_max, float(n.max())) if n.numel() else self._norm_max
        self._clipped += int((n > self.clip).sum())
        self._stats.add(clipped, noise, self.sigma)  # the SNR of what is sent: the clipped signal
        # The cast back to x's dtype happens after the noise (post-processing): rounding never widens Δ.
        return (clipped + noise).to(x.dtype)

    def observation_log_likelihood(self, observed: torch.Tensor, candidates: torch.Tensor, *,
                                   reference_rms: float | None = None) -> torch.Tensor:
        """The mechanism's law with the candidate clipped first, as `_apply` clips the clean tensor: exact
        per row; per example the profile likelihood of `clipped_gaussian_log_likelihood` (the clip factor
        depends on the whole example). reference_rms is not used (the scale is absolute)."""
        return clipped_gaussian_log_likelihood(observed, candidates, self.clip, self.sigma, self.per_example)

    def widened_log_likelihood(self, observed: torch.Tensor, candidates: torch.Tensor, total_var: float, *,
                               reference_rms: float | None = None) -> torch.Tensor:
        """The mechanism's own law (candidate clipped first) with its variance σ² widened to `total_var`:
        the clipped log-likelihood rescaled by σ²/total_var, rather than comparing the observation with the
        unclipped candidate (which misreads every clipped row). Without noise (σ = 0) the base law."""
        if self.sigma <= 0:
            return super().widened_log_likelihood(observed, candidates, total_var, reference_rms=reference_rms)
        ll = self.observation_log_likelihood(observed, candidates, reference_rms=reference_rms)
        return ll * (self.sigma ** 2 / total_var)

    # ------------------------------------------------------------------ accounting

    def effective_noise_multiplier(self, vectors: int = 1) -> float:
        """Noise std over L2 sensitivity: z*C / (2C*sqrt(vectors)) = z / (2*sqrt(vectors))."""
        return self.noise_multiplier / (2.0 * math.sqrt(vectors))

    def epsilon(self, steps: int, delta: float | None = None, vectors: int = 1) -> float:
        """ε after `steps` releases of each privacy unit, at `delta` (default: self.delta), by the RDP
        accountant (`defenses.accounting`, sample_rate 1) at noise multiplier z/(2*sqrt(vectors)).

        `vectors` (row unit only): how many rows may differ between neighbours (1 = one token vector)."""
        owner = f"{self.name} epsilon"
        steps = check_value(owner, "steps", steps, NonNegativeInt)
        vectors = check_value(owner, "vectors", vectors, PositiveInt)
        if vectors != 1 and self.per_example:
            raise FlbenchError(f"{owner}: vectors={vectors} applies to a per-token unit only; this defense's "
                               f"unit is {self.privacy_unit!r}; expected vectors=1")
        delta = self.delta if delta is None else check_value(owner, "delta", delta, UnitIntervalOpen)
        return gaussian_epsilon(self.effective_noise_multiplier(vectors), steps, delta)

    def accounting(self, releases: int = 1) -> dict[str, Any]:
        releases = check_value(f"{self.name} accounting", "releases", releases, NonNegativeInt)
        return gaussian_accounting(self.effective_noise_multiplier(), releases, self.delta, self.privacy_unit,
                                   sensitivity_l2=2.0 * self.clip)

    # ------------------------------------------------------------------ measurements

    def stats(self) -> dict[str, Any]:
        """SNR of what is sent (both conventions, on the CLIPPED signal), clipping statistics per privacy
        unit, and releases.

        The defense cannot tell examples apart across calls, so `releases_per_example_max` = number of calls:
        each call releases each unit at most once. It is exact for a prompt re-sent at every generation step
        and conservative when calls carry different examples; `epsilon_upper_bound` is ε at that count.
        Callers that know their schedule (epochs, prefill + decode steps) call `accounting(releases)`."""
        s = super().stats()
        units = max(self._units, 1)
        calls = s["calls"]
        return {
            **s,
            "privacy_unit": self.privacy_unit,
            "units": self._units,
            "norm_mean": self._norm_sum / units,
            "norm_max": self._norm_max,
            "clipped_fraction": self._clipped / units,
            "signal_rms_unclipped": math.sqrt(self._norm_sq_sum / max(s["coords"], 1)),
            "releases_per_example_max": calls,
            "epsilon_upper_bound": self.epsilon(calls),
            "delta": self.delta,
        }

    def reset_stats(self) -> None:
        super().reset_stats()
        self._norm_sum = self._norm_max = self._norm_sq_sum = 0.0
        self._units = self._clipped = 0
