"""`defenses.accounting` against an independent closed form: the analytic Gaussian mechanism (Balle & Wang,
"Improving the Gaussian Mechanism for Differential Privacy: Analytical Calibration and Optimal Denoising",
ICML 2018, Thm. 8): a Gaussian mechanism with sensitivity Δ and std σ is (ε, δ)-DP exactly for
δ(ε) = Φ(Δ/(2σ) − εσ/Δ) − e^ε Φ(−Δ/(2σ) − εσ/Δ), and k releases at multiplier m = σ/Δ are one release at
m/√k. Solved for ε here with scipy (brentq on the log-space form)."""
from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from defenses.accounting import (
    compose_gaussian,
    gaussian_accounting,
    gaussian_epsilon,
    guessing_ceiling,
)
from flbench.core.errors import FlbenchError


def exact_epsilon(m: float, k: int, delta: float) -> float:
    """The smallest ε with δ(ε) ≤ delta for k releases at multiplier m (one release at m/√k)."""
    mu = math.sqrt(k) / m  # Δ/σ of the composed mechanism

    def gap(eps: float) -> float:
        return norm.cdf(mu / 2 - eps / mu) - np.exp(eps + norm.logcdf(-mu / 2 - eps / mu)) - delta

    return 0.0 if gap(0.0) <= 0 else brentq(gap, 0.0, 1e4, xtol=1e-12)


def test_the_closed_form_at_a_hand_checked_point():
    # m = 1, k = 1, δ = 1e-5: ε = 4.3772 (Φ(0.5 − 4.3772) − e^4.3772·Φ(−0.5 − 4.3772) = 5.3e-5 − 4.3e-5 ≈ 1e-5)
    eps = exact_epsilon(1.0, 1, 1e-5)
    assert eps == pytest.approx(4.3772, abs=1e-4)
    assert norm.cdf(0.5 - eps) - math.exp(eps) * norm.cdf(-0.5 - eps) == pytest.approx(1e-5, rel=1e-6)
    rdp = gaussian_epsilon(1.0, 1, 1e-5)
    assert eps <= rdp <= 1.1 * eps  # RDP: an upper bound, here 8 % above the exact value (4.7285)
    assert rdp == pytest.approx(4.7285, abs=1e-4)


@pytest.mark.parametrize("m,k,delta", [(0.5, 1, 1e-5), (1.0, 10, 1e-5), (2.0, 10, 1e-5), (4.0, 100, 1e-6),
                                       (0.25, 3, 1e-5), (10.0, 1, 1e-5), (3.0, 1000, 1e-5), (100.0, 1, 1e-5)])
def test_rdp_upper_bounds_the_exact_epsilon_within_a_factor(m, k, delta):
    exact = exact_epsilon(m, k, delta)
    rdp = gaussian_epsilon(m, k, delta)
    assert exact <= rdp <= 1.5 * exact, (exact, rdp)


def test_epsilon_grows_with_releases_as_the_closed_form_says():
    m, delta = 2.0, 1e-5
    ks = [1, 2, 4, 8, 16, 64, 256]
    exact = [exact_epsilon(m, k, delta) for k in ks]
    rdp = [gaussian_epsilon(m, k, delta) for k in ks]
    assert all(a < b for a, b in pairwise(exact)) and all(a < b for a, b in pairwise(rdp))
    for e, r in zip(exact, rdp):
        assert e <= r <= 1.2 * e
    # k releases at m are one release at m/√k (both in the closed form and in the accountant)
    for k in ks:
        assert gaussian_epsilon(m, k, delta) == pytest.approx(gaussian_epsilon(m / math.sqrt(k), 1, delta), rel=1e-9)


@pytest.mark.parametrize("m,k", [(1.0, 1), (2.0, 10), (0.5, 4), (4.0, 100)])
def test_prv_accountant_is_tighter_and_still_an_upper_bound(m, k):
    exact = exact_epsilon(m, k, 1e-5)
    prv = gaussian_epsilon(m, k, 1e-5, accountant="prv")
    assert exact - 1e-9 <= prv <= gaussian_epsilon(m, k, 1e-5)
    assert prv <= exact + 0.02  # opacus' eps_error = 0.01


def test_prv_refuses_where_it_overflows():
    with pytest.raises(FlbenchError, match="prv accountant.*use accountant='rdp'") as e:
        gaussian_epsilon(0.5, 5000, 1e-5, accountant="prv")  # m_eff = 0.007: ε ≈ 1e4
    assert "\n" not in str(e.value)
    assert math.isfinite(gaussian_epsilon(0.5, 5000, 1e-5))


def test_composition_of_different_mechanisms():
    # h_A edge at m = 1 for 3 releases + gradient edge at m = 2 for 5: one Gaussian at 1/sqrt(3/1 + 5/4)
    both = compose_gaussian([(1.0, 3), (2.0, 5)], 1e-5)
    assert both == pytest.approx(gaussian_epsilon(1.0 / math.sqrt(3 + 5 / 4), 1, 1e-5), rel=1e-9)
    assert both >= exact_epsilon(1.0 / math.sqrt(3 + 5 / 4), 1, 1e-5)
    assert compose_gaussian([(1.0, 0), (2.0, 0)], 1e-5) == 0.0 == gaussian_epsilon(1.0, 0, 1e-5)


def test_subsampling_amplifies():
    assert gaussian_epsilon(1.0, 100, 1e-5, sample_rate=0.01) < gaussian_epsilon(1.0, 100, 1e-5)


def test_accounting_dict():
    acc = gaussian_accounting(1.5, 4, 1e-6, "one thing", sensitivity_l2=2.0)
    assert acc["epsilon"] == gaussian_epsilon(1.5, 4, 1e-6) and acc["delta"] == 1e-6 and acc["releases"] == 4
    assert acc["unit"] == "one thing" and acc["sensitivity_l2"] == 2.0 and acc["noise_multiplier"] == 1.5
    assert "RDPAccountant" in acc["accountant"] and "sample_rate=1" in acc["accountant"]


@pytest.mark.parametrize("kwargs,bad", [
    ({"noise_multiplier": 0.0}, "noise_multiplier=0.0"),
    ({"noise_multiplier": -1.0}, "noise_multiplier=-1.0"),
    ({"releases": -1}, "releases=-1"),
    ({"releases": 2.5}, "releases=2.5"),
    ({"delta": 1.0}, "delta=1.0"),
    ({"delta": 0.0}, "delta=0.0"),
    ({"sample_rate": 0.0}, "sample_rate=0.0"),
    ({"sample_rate": 1.5}, "sample_rate=1.5"),
    ({"accountant": "moments"}, "accountant='moments'"),
])
def test_bad_arguments_are_one_line_errors(kwargs, bad):
    args = {"noise_multiplier": 1.0, "releases": 1, "delta": 1e-5, **kwargs}
    with pytest.raises(FlbenchError) as e:
        gaussian_epsilon(args.pop("noise_multiplier"), args.pop("releases"), args.pop("delta"), **args)
    assert bad in str(e.value) and "expected" in str(e.value) and "\n" not in str(e.value)


def test_guessing_ceiling():
    assert guessing_ceiling(0.01, 0.0) == 0.01  # ε = 0: the release does not help
    assert guessing_ceiling(0.01, 1.0, 1e-5) == pytest.approx(math.e * 0.01 + 1e-5)
    assert guessing_ceiling(0.5, 1.0) == 1.0 and guessing_ceiling(1e-9, 1e4) == 1.0  # capped, no overflow
    assert guessing_ceiling(0.3, math.inf) == 1.0
    assert guessing_ceiling(0.0, 5.0, 0.1) == 0.1
    eps = [0.1, 0.5, 1.0, 2.0, 4.0]
    ceil = [guessing_ceiling(0.001, e, 1e-5) for e in eps]
    assert all(a < b for a, b in pairwise(ceil))
    for kwargs, bad in [({"p_best": 1.5}, "p_best=1.5"), ({"epsilon": -1.0}, "epsilon=-1.0"),
                        ({"delta": 1.0}, "delta=1.0"), ({"epsilon": math.nan}, "epsilon=nan")]:
        with pytest.raises(FlbenchError, match=bad):
            guessing_ceiling(**{"p_best": 0.1, "epsilon": 1.0, **kwargs})
