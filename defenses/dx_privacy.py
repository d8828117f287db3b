"""`dx-privacy`: metric local DP on each row of h_A — noise with density ∝ exp(−η‖z‖₂) (the L2 "Laplace").

Source: Feyisetan, Balle, Drake & Diethe, "Privacy- and Utility-Preserving Textual Analysis via Calibrated
Multivariate Perturbations", WSDM 2020 (arXiv 1910.08902), after d_χ-privacy (Chatzikokolakis, Andrés,
Bordenabe & Palamidessi, "Broadening the Scope of Differential Privacy Using Metrics", PETS 2013). They
perturb word embeddings and snap to the nearest word; here the rows of h_A are perturbed.

Mechanism: for every row x (one token vector, d coordinates), send x + z with p(z) ∝ exp(−η‖z‖₂). Sampled as
the paper does: a direction uniform on the sphere (a normalised standard normal vector) times a radius
r ~ Gamma(shape d, scale 1/η) (the radial density ∝ r^(d−1) e^(−ηr)); the Gamma draw is a sum of d Exp(1)
draws divided by η (exact for integer d; torch's Gamma sampler takes no generator). E‖z‖ = d/η, per-coordinate
std √(d+1)/η (E‖z‖² = d(d+1)/η²).

Guarantee: p(y | x) / p(y | x') = exp(−η(‖y − x‖ − ‖y − x'‖)) ≤ exp(η‖x − x'‖): ε = η·‖x − x'‖₂ for any two
rows — metric DP, ε per unit of L2 distance, with no clipping (rows far apart are barely protected). Rows are
noised independently; k releases of the same row compose linearly, kη per unit distance. δ = 0.
`stats()` measures the median L2 distance between distinct clean rows it has seen, so a run can quote the
typical ε = η × that distance.

No snapping: the paper's post-processing snaps the noisy vector to the nearest vocabulary embedding. That
needs the embedding table and only makes sense when rows ARE embeddings (p = 0 head blocks); a defense
receives h only (`defense(h, generator)`), with no clean interface to the table, so snapping is left out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from defenses.base import (
    INVERSE_ETA,
    BaseDefense,
    NoiseScale,
    _work_dtype,
    check_observation_shapes,
    register,
)
from flbench.core.params import NonNegativeInt, PositiveFloat, check_value

if TYPE_CHECKING:
    import torch

PRIVACY_UNIT = ("one token vector (a row of h_A); metric DP: ε = η·‖x − x'‖₂ for rows x, x', so 'epsilon' is "
                "per unit of L2 distance")
ACCOUNTANT = "metric DP (Chatzikokolakis et al. 2013): linear composition, k releases → k·η per unit L2 distance"
_DISTANCE_ROWS = 256  # rows per call used to measure the median distance between distinct rows


@register("dx-privacy")
@dataclass
class DXPrivacy(BaseDefense):
    """Add noise with density ∝ exp(−eta·‖z‖₂) to each row of h_A: metric DP (Feyisetan et al., WSDM 2020).

    eta: η > 0, ε per unit L2 distance between two rows per release (larger = less noise); the noise norm
    is Gamma(d, 1/η) (mean d/η), its direction uniform. No clipping, no δ; no snapping to a vocabulary (see
    the module docstring). Assumes neighbours are two values of one row, at their L2 distance.
    """

    family = "metric-dp"
    eta: PositiveFloat = field(metadata={
        "flag": "--dx-eta", "help": "η: ε per unit L2 distance between rows (noise ∝ exp(−η‖z‖), larger = less)"})
    _medians: list = field(default_factory=list, init=False, repr=False, compare=False)

    def noise_scale(self) -> NoiseScale:
        return NoiseScale(1.0 / self.eta, INVERSE_ETA)

    def draw(self, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Noise of the shape of `like` (rows of d = like.shape[-1]), density ∝ exp(−η‖z‖) per row."""
        import torch

        direction = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        direction = direction / torch.linalg.vector_norm(direction, dim=-1, keepdim=True).clamp_min(1e-30)
        exp = torch.empty(like.shape, device=like.device, dtype=like.dtype).exponential_(1.0, generator=generator)
        return direction * (exp.sum(-1, keepdim=True) / self.eta)  # radius ~ Gamma(d, 1/η)

    def _apply(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        import torch

        work = h if h.dtype in (torch.float32, torch.float64) else h.float()
        noise = self.draw(work, generator)
        self._stats.add(h, noise, math.sqrt(h.shape[-1] + 1) / self.eta)
        self._measure_distances(work)
        return (work + noise).to(h.dtype)

    def _measure_distances(self, h: torch.Tensor) -> None:
        import torch

        rows = h.detach().reshape(-1, h.shape[-1])
        if len(rows) > _DISTANCE_ROWS:  # evenly spaced rows: deterministic, no draw from the generator
            rows = rows[torch.linspace(0, len(rows) - 1, _DISTANCE_ROWS).long()]
        dist = torch.cdist(rows.double(), rows.double(), compute_mode="donot_use_mm_for_euclid_dist")
        pairs = dist[torch.triu_indices(len(rows), len(rows), 1).unbind()]
        pairs = pairs[pairs > 1e-9 * (float(pairs.max()) if pairs.numel() else 0.0)]  # distinct rows only
        if pairs.numel():
            self._medians.append(float(pairs.median()))

    def observation_log_likelihood(self, observed: torch.Tensor, candidates: torch.Tensor, *,
                                   reference_rms: float | None = None) -> torch.Tensor:
        """−η Σ_i ‖o_i − c‖₂ (the normaliser depends on η and d only); shapes as in
        `defenses.base.squared_distance_sum`. reference_rms is not used (the scale is absolute)."""
        import torch

        check_observation_shapes(observed, candidates)
        work = _work_dtype(observed, candidates)
        single = observed.ndim < 3
        o = observed.reshape(1, -1, observed.shape[-1]).to(work) if single else observed.to(work)
        c = candidates.to(work)
        if c.ndim == 3 or single:  # by differences: exact at o = c
            c = c.unsqueeze(0) if single else c
            dist = torch.cdist(o, c, compute_mode="donot_use_mm_for_euclid_dist")  # (B, n, K)
        else:  # shared candidates: one matrix product
            dist = torch.cdist(o, c.unsqueeze(0).expand(len(o), -1, -1), compute_mode="use_mm_for_euclid_dist")
        out = -self.eta * dist.sum(1)
        return out[0] if single else out

    def accounting(self, releases: int = 1) -> dict[str, Any]:
        """ε per unit L2 distance after `releases` releases of each row (k·η), δ = 0."""
        releases = check_value(f"{self.name} accounting", "releases", releases, NonNegativeInt)
        return {"epsilon": releases * self.eta, "delta": 0.0, "unit": PRIVACY_UNIT, "releases": releases,
                "accountant": ACCOUNTANT, "epsilon_kind": "per unit L2 distance (metric DP)"}

    def stats(self) -> dict[str, Any]:
        """Noise statistics, plus the median L2 distance between distinct clean rows seen (median over calls
        of each call's median over up to 256 rows) and ε at that distance, per release and at releases = calls
        (exact for a re-sent prompt, conservative otherwise; see dp-forward's stats)."""
        s = super().stats()
        med = sorted(self._medians)[len(self._medians) // 2] if self._medians else None
        return {**s, "row_distance_median": med,
                "epsilon_median_distance_per_release": None if med is None else self.eta * med,
                "epsilon_median_distance_upper_bound": None if med is None else s["calls"] * self.eta * med}

    def reset_stats(self) -> None:
        super().reset_stats()
        self._medians = []

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "noise": "per row of h_A: density ∝ exp(−η‖z‖₂); direction uniform, norm ~ Gamma(d, 1/η)",
            "expected_noise_norm": "d/η",
            "per_coordinate_std": "sqrt(d+1)/η",
            "formal_dp": True,
            "neighbouring": PRIVACY_UNIT,
            "snap": False,
            "source": "Feyisetan et al., WSDM 2020 (arXiv 1910.08902); d_χ-privacy, Chatzikokolakis et al. 2013",
        }
