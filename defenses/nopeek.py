"""`nopeek`: a training-time defense; the client adds α·dCor(X, h_A) to its fine-tuning loss.

Source: Vepakomma, Singh, Gupta, Raskar, "NoPeek: Information leakage reduction to share activations in
distributed deep learning", ICDMW 2020 (arXiv 2008.09161). The client minimises
    L = task loss + α · dCor(X, h_A)
where X are the head's inputs (here: the input token embeddings) and h_A the activations it sends (the
head's output), so the head learns activations that reveal less about its inputs. Distance correlation is
the sample statistic of Székely, Rizzo & Bakirov, "Measuring and testing dependence by correlation of
distances", Annals of Statistics 35(6), 2007: double-centred pairwise Euclidean distance matrices A, B,
dCov²(X, Y) = mean(A∘B), dCor² = dCov²(X, Y) / sqrt(dCov²(X, X)·dCov²(Y, Y)).

On the wire it changes nothing (identity, no noise, no formal guarantee): its effect is on the fine-tuned
head, so attacks measure it on the trained victim (`--checkpoint`). The split trainer asks the client's
defense for `training_penalty(x, h, mask)` (duck typing; splits never imports defenses).

Samples: every real (unpadded) token position of the batch is one sample (its embedding row and its h_A
row). The statistic is O(n²) in the number of rows n, so a batch with more than `MAX_ROWS` real rows is
subsampled to `MAX_ROWS` rows chosen without replacement by a generator seeded from the batch size, so a
run is reproducible and never draws from the global RNG.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from defenses.base import ABSOLUTE, BaseDefense, NoiseScale, register
from defenses.identity import NoDefense
from flbench.core.params import NonNegativeFloat

if TYPE_CHECKING:
    import torch

MAX_ROWS = 512  # token rows per dCor estimate (O(n²) memory and time)
_TINY = 1e-18  # squared distances below this count as 0 (a finite gradient of the square root)


def _centred_distances(z: torch.Tensor) -> torch.Tensor:
    """The double-centred pairwise Euclidean distance matrix of the rows of z (n, d) (Székely et al. 2007)."""
    import torch

    z = z - z.mean(0, keepdim=True)  # distances are translation invariant; centring keeps the Gram form accurate
    sq = z.square().sum(-1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)).clamp_min(0.0)
    pos = d2 > _TINY
    dist = torch.where(pos, d2.clamp_min(_TINY).sqrt(), torch.zeros_like(d2))
    return dist - dist.mean(0, keepdim=True) - dist.mean(1, keepdim=True) + dist.mean()


def distance_correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sample distance correlation dCor(x, y) in [0, 1] of paired rows x (n, p), y (n, q) (Székely et al.
    2007, the V-statistic), computed in float64 and differentiable; 0 when either sample is constant."""
    import torch

    a = _centred_distances(x.double())
    b = _centred_distances(y.double())
    dcov2 = (a * b).mean()
    dvar2 = (a * a).mean() * (b * b).mean()
    if float(dvar2.detach()) <= 0.0:
        return torch.zeros((), dtype=torch.float64, device=x.device) + 0.0 * dcov2
    r2 = (dcov2 / dvar2.sqrt()).clamp_min(0.0)
    return r2.clamp_min(_TINY).sqrt() * (r2 > _TINY)


def real_rows(x: torch.Tensor, h: torch.Tensor, mask: torch.Tensor, max_rows: int = MAX_ROWS
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The real (mask ≠ 0) positions of x (B, T, p) and h (B, T, q) as paired rows, at most `max_rows` of
    them (a seeded subsample without replacement when there are more)."""
    import torch

    keep = mask.to(device=h.device).reshape(h.shape[:-1]).bool()
    xs, hs = x.to(h.device)[keep], h[keep]
    n = hs.shape[0]
    if n > max_rows:
        gen = torch.Generator().manual_seed(n)  # seeded: reproducible, never the global RNG
        idx = torch.randperm(n, generator=gen)[:max_rows].to(h.device)
        xs, hs = xs[idx], hs[idx]
    return xs, hs


@register("nopeek")
@dataclass
class NoPeek(BaseDefense):
    """NoPeek: the client adds weight·dCor(input embeddings, h_A) to its training loss; identity on the wire.

    Vepakomma et al., ICDMW 2020. A training-time defense: it changes the fine-tuned head, not what is sent,
    so it is measured by attacking the victim trained with it (--checkpoint). weight: α ≥ 0 (0 = plain
    training). dCor over the batch's real token rows (at most 512, subsampled with a seeded choice).
    """

    family = "training"
    weight: NonNegativeFloat = field(metadata={
        "flag": "--nopeek-weight", "help": "weight α of the dCor(input embeddings, h_A) training penalty (0: plain training)"})
    _last: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def _apply(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self._stats.add(h, None, 0.0)
        return h

    def training_penalty(self, x: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """α·dCor(X, h_A) over the real token rows: x the head's input embeddings (B, T, p), h its clean output
        (B, T, d), mask (B, T) with 1 = real token. A scalar in h's dtype, differentiable in h. With α = 0 it is
        computed without a graph (an exact zero that adds no gradient, not even NaN·0)."""
        import torch

        xs, hs = real_rows(x.detach(), h, mask)
        if self.weight == 0:
            with torch.no_grad():
                dcor = distance_correlation(xs, hs)
            penalty = torch.zeros((), dtype=h.dtype, device=h.device)
        else:
            dcor = distance_correlation(xs, hs)
            penalty = (self.weight * dcor).to(h.dtype)
        self._last = {"dcor": float(dcor.detach()), "penalty": float(penalty.detach()), "rows": int(hs.shape[0])}
        return penalty

    def penalty_info(self) -> dict[str, Any]:
        """The last `training_penalty` call's dCor, penalty and row count (for the training log)."""
        return dict(self._last)

    # identity on the wire: the same law as `none`
    observation_log_likelihood = NoDefense.observation_log_likelihood

    def noise_scale(self) -> NoiseScale:
        return NoiseScale(0.0, ABSOLUTE)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "noise": None, "formal_dp": False, "training_time": True,
                "penalty": "weight * dCor(input token embeddings, h_A) over the batch's real token rows "
                           f"(at most {MAX_ROWS}, seeded subsample), added to the client's loss",
                "source": "NoPeek (Vepakomma et al., ICDMW 2020); dCor of Székely et al. 2007"}
