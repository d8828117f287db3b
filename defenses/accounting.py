"""Privacy accounting for every DP defense: (ε, δ) of Gaussian mechanisms composed over releases, and the
"guessing ceiling" an ε-DP release puts on an attacker.

Every DP defense (dp-forward, grad-dp, ...) asks this module, never opacus directly, so the accountant, its
orders and its caveats live in one place.

Gaussian mechanism: a release y = f(x) + N(0, σ² I) of a function with L2 sensitivity Δ has noise multiplier
m = σ/Δ. `releases` k releases of the same privacy unit compose. Accountants (opacus, Yousefpour et al. 2021,
"Opacus: User-Friendly Differential Privacy Library in PyTorch", arXiv 2109.12298):

- "rdp" (default): opacus' `RDPAccountant` — Rényi DP (Mironov 2017, "Rényi Differential Privacy", CSF 2017),
  converted to (ε, δ) with opacus' conversion (Balle et al. 2020, "Hypothesis testing interpretations and
  Rényi differential privacy"). An upper bound on the exact ε: ≈ 5–10 % above it for m ≈ 0.5–4. The orders
  are opacus' defaults widened on both sides (`ORDERS`), because the defaults (1.1 … 63) floor ε at ≈ 0.1
  for very large multipliers and loosen it for very small ones; inside the default range nothing changes.
- "prv": opacus' `PRVAccountant` (Gopi, Lee, Wutschitz 2021, "Numerical Composition of Differential Privacy",
  NeurIPS 2021), its upper estimate (eps_upper). It works in opacus 1.6 at sample_rate = 1, with two
  caveats measured here: (1) composing many unsubsampled steps makes its discretisation domain huge (1000
  steps at m = 1 took 7 s; 5000 steps at m = 0.5 ran out of memory), so at sample_rate = 1 this module
  collapses the k releases into ONE Gaussian of multiplier 1/sqrt(Σ k_i/m_i²) (exact: a composition of
  Gaussian mechanisms is a Gaussian mechanism, Dong, Roth & Su 2019, "Gaussian Differential Privacy",
  Cor. 3.3 — the one identity written by hand here); (2) for ε ≳ 300 (m_eff ≲ 0.03) it overflows (returns
  ≈ 709.8 = log(max float)) or raises; those cases are refused with a FlbenchError (use "rdp").
  With sample_rate < 1 the history is passed as is (Poisson subsampling, opacus' model).

Guessing ceiling (`guessing_ceiling`): an (ε, δ)-DP release lets an attacker whose best prior guess of a
secret succeeds with probability p_best succeed with probability at most e^ε·p_best + δ (the DP inequality
applied to the event "the guess is right"; reconstruction robustness, Balle, Cherubin & Hayes 2022,
"Reconstructing Training Data with Informed Adversaries", IEEE S&P 2022, Sec. 4).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Field

from flbench.core.errors import FlbenchError
from flbench.core.params import (
    NonNegativeInt,
    PositiveFloat,
    UnitIntervalOpen,
    check_value,
)

Accountant = Literal["rdp", "prv"]
SampleRate = Annotated[float, Field(gt=0, le=1)]
Probability = Annotated[float, Field(ge=0, le=1)]
NonNegativeEpsilon = Annotated[float, Field(ge=0)]  # +inf allowed (no guarantee)
DeltaOrZero = Annotated[float, Field(ge=0, lt=1)]

# opacus' RDPAccountant.DEFAULT_ALPHAS (1.1 … 63), widened: 1.001 … 1.05 (very small multipliers) and 80 … 10⁶
# (very large multipliers, where the defaults floor ε at ≈ 0.1). Any order gives a valid bound; opacus' warning
# that the best one is at the edge of the list is silenced (it only means the bound could be tighter).
ORDERS: tuple[float, ...] = (
    (1.001, 1.002, 1.005, 1.01, 1.02, 1.05) + tuple(1 + x / 10.0 for x in range(1, 100))
    + tuple(float(a) for a in range(12, 64))
    + (80.0, 100.0, 128.0, 160.0, 200.0, 256.0, 320.0, 400.0, 512.0, 640.0, 800.0, 1024.0, 1500.0, 2048.0,
       3000.0, 4096.0, 6000.0, 8192.0, 1e4, 2e4, 5e4, 1e5, 1e6))

# PRV's result above this is its float overflow, not an ε (see the module docstring).
PRV_EPSILON_LIMIT = 300.0

ACCOUNTANT_NAMES = {
    "rdp": "opacus.accountants.RDPAccountant (Rényi DP, Mironov 2017; orders 1.001–1e6)",
    "prv": "opacus.accountants.PRVAccountant (Gopi et al. 2021; eps_upper)",
}

OWNER = "privacy accounting"


def accountant_name(accountant: str = "rdp", sample_rate: float = 1.0) -> str:
    """How a record names the accountant: library class, method, sample rate."""
    accountant = check_value(OWNER, "accountant", accountant, Accountant)
    return f"{ACCOUNTANT_NAMES[accountant]}, sample_rate={sample_rate:g}"


def gaussian_epsilon(noise_multiplier: float, releases: int, delta: float, *, sample_rate: float = 1.0,
                     accountant: str = "rdp") -> float:
    """ε of a Gaussian mechanism with noise multiplier m = σ/Δ released `releases` times, at δ.

    sample_rate: the probability that a release includes the privacy unit (Poisson subsampling, as in
    DP-SGD); 1 (the default) = every release includes it. releases = 0 gives ε = 0.
    """
    return compose_gaussian([(noise_multiplier, releases)], delta, sample_rate=sample_rate, accountant=accountant)


def compose_gaussian(mechanisms: Sequence[tuple[float, int]], delta: float, *, sample_rate: float = 1.0,
                     accountant: str = "rdp") -> float:
    """ε at δ of several Gaussian mechanisms on the same privacy unit, each (noise multiplier m_i, releases
    k_i), composed (e.g. a client's h_A edge and its gradient edge in the same training step)."""
    delta = check_value(OWNER, "delta", delta, UnitIntervalOpen)
    sample_rate = check_value(OWNER, "sample_rate", sample_rate, SampleRate)
    accountant = check_value(OWNER, "accountant", accountant, Accountant)
    history = []
    for m, k in mechanisms:
        m = check_value(OWNER, "noise_multiplier", m, PositiveFloat)
        k = check_value(OWNER, "releases", k, NonNegativeInt)
        if k:
            history.append((m, sample_rate, k))
    if not history:
        return 0.0
    if accountant == "rdp":
        from opacus.accountants import (
            RDPAccountant,  # lazy: opacus imports torch (~1 s)
        )

        acc = RDPAccountant()
        acc.history = history  # what k calls of acc.step(noise_multiplier=m, sample_rate=q) would build
        with warnings.catch_warnings():  # "optimal order is the smallest/largest alpha": still a valid bound
            warnings.filterwarnings("ignore", message="Optimal order", category=UserWarning)
            return float(acc.get_epsilon(delta=delta, alphas=list(ORDERS)))
    return _prv_epsilon(history, delta, sample_rate)


def _prv_epsilon(history: list[tuple[float, float, int]], delta: float, sample_rate: float) -> float:
    import numpy as np
    from opacus.accountants import PRVAccountant

    if sample_rate == 1.0:  # k Gaussians of multipliers m_i ≡ one Gaussian of 1/sqrt(Σ k_i/m_i²) (GDP Cor. 3.3)
        history = [(1.0 / math.sqrt(sum(k / (m * m) for m, _, k in history)), 1.0, 1)]
    acc = PRVAccountant()
    acc.history = history
    shown = ", ".join(f"m={m:g}×{k}" for m, _, k in history)
    try:
        # q = 1 takes log(1 - q) = -inf inside opacus' PRV (handled there by np.where), and its domain bound
        # asks RDP at opacus' default orders (warning at their edge): silence both, the result is checked below
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)
            eps = float(acc.get_epsilon(delta=delta))
    except (RuntimeError, ValueError, MemoryError) as e:
        raise FlbenchError(f"{OWNER}: the prv accountant failed for {shown} at delta={delta:g} "
                           f"({type(e).__name__}); use accountant='rdp'") from None
    if not (math.isfinite(eps) and eps < PRV_EPSILON_LIMIT):
        raise FlbenchError(f"{OWNER}: the prv accountant is unreliable for {shown} at delta={delta:g} "
                           f"(ε={eps:.4g} ≥ {PRV_EPSILON_LIMIT:g}); use accountant='rdp'")
    return eps


def gaussian_accounting(noise_multiplier: float, releases: int, delta: float, unit: str, *,
                        sample_rate: float = 1.0, accountant: str = "rdp", **extra: Any) -> dict[str, Any]:
    """The `accounting()` dict of a Gaussian-mechanism defense: {"epsilon", "delta", "unit", "releases",
    "accountant", "noise_multiplier" (σ/Δ), "sample_rate", **extra}."""
    return {"epsilon": gaussian_epsilon(noise_multiplier, releases, delta, sample_rate=sample_rate,
                                        accountant=accountant),
            "delta": delta, "unit": unit, "releases": releases,
            "accountant": accountant_name(accountant, sample_rate),
            "noise_multiplier": noise_multiplier, "sample_rate": sample_rate, **extra}


def guessing_ceiling(p_best: float, epsilon: float, delta: float = 0.0) -> float:
    """The most an (ε, δ)-DP release can raise the probability of guessing a secret (e.g. one token) right:
    min(1, e^ε · p_best + δ), where p_best is the best guess's probability without the release (the
    attacker's prior, e.g. the public model's top next-token probability). See the module docstring."""
    p_best = check_value("guessing ceiling", "p_best", p_best, Probability)
    epsilon = check_value("guessing ceiling", "epsilon", epsilon, NonNegativeEpsilon)
    delta = check_value("guessing ceiling", "delta", delta, DeltaOrZero)
    if p_best == 0.0:
        return min(1.0, delta)
    if epsilon + math.log(p_best) >= 0.0:  # e^ε·p_best ≥ 1 (checked in logs: e^ε overflows for large ε)
        return 1.0
    return min(1.0, math.exp(epsilon) * p_best + delta)
