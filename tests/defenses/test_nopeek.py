"""NoPeek's distance correlation (Székely et al. 2007) and its training-penalty contract."""
from __future__ import annotations

import pytest
import torch

from defenses import make_defense, make_generator
from defenses.nopeek import MAX_ROWS, distance_correlation, real_rows


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_dcor_of_independent_samples_tends_to_zero():
    g = _g(0)
    small = [float(distance_correlation(torch.randn(n, 8, generator=g), torch.randn(n, 8, generator=g)))
             for n in (200, 2000)]
    # the V-statistic is biased upwards by O(1/sqrt(n)): ≈ 0.12 at n = 2000, shrinking with n
    assert small[1] < 0.15 and small[1] < small[0]


def test_dcor_is_one_under_a_similarity_and_invariant_to_scale_and_shift():
    g = _g(1)
    x = torch.randn(300, 8, generator=g)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    y = 3.0 * (x.double() @ q) + 5.0  # dCor = 1 iff y = a + b·x·C, C orthonormal (Székely et al. 2007, Thm 3)
    assert float(distance_correlation(x, y)) == pytest.approx(1.0, abs=1e-6)
    assert float(distance_correlation(x, x)) == pytest.approx(1.0, abs=1e-6)
    a = torch.randn(8, 5, generator=g)
    z = x @ a  # a general linear map: strongly dependent, below 1, and scale/shift invariant
    base = float(distance_correlation(x, z))
    assert 0.5 < base < 1.0
    assert float(distance_correlation(0.01 * x - 2.0, 100.0 * z + 7.0)) == pytest.approx(base, abs=1e-6)


def test_dcor_of_a_constant_is_zero_with_finite_gradient():
    x = torch.randn(20, 4, generator=_g(2))
    y = torch.ones(20, 3, requires_grad=True)
    d = distance_correlation(x, y)
    d.backward()
    assert float(d.detach()) == 0.0 and bool(torch.isfinite(y.grad).all())


def test_real_rows_drop_padding_and_subsample_with_a_seeded_choice():
    b, t = 3, 400
    x, h = torch.randn(b, t, 5, generator=_g(3)), torch.randn(b, t, 6, generator=_g(4))
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, 300:] = 0
    xs, hs = real_rows(x, h, mask)
    assert xs.shape == (MAX_ROWS, 5) and hs.shape == (MAX_ROWS, 6)
    xs2, hs2 = real_rows(x, h, mask)
    assert torch.equal(xs, xs2) and torch.equal(hs, hs2)  # reproducible, not the global RNG
    small = torch.zeros(b, t, dtype=torch.long)
    small[1, :7] = 1
    xs, hs = real_rows(x, h, small)
    assert torch.equal(xs, x[1, :7]) and torch.equal(hs, h[1, :7])


def test_training_penalty_is_weight_times_dcor_and_differentiable():
    x = torch.randn(2, 10, 8, generator=_g(5))
    h = (x @ torch.randn(8, 8, generator=_g(6))).requires_grad_(True)
    mask = torch.ones(2, 10)
    d = make_defense("nopeek", weight=2.5)
    pen = d.training_penalty(x, h, mask)
    pen.backward()
    info = d.penalty_info()
    assert float(pen.detach()) == pytest.approx(2.5 * info["dcor"], rel=1e-6) and info["rows"] == 20
    assert h.grad is not None and bool(torch.isfinite(h.grad).all()) and float(h.grad.abs().sum()) > 0
    zero = make_defense("nopeek", weight=0.0).training_penalty(x, h, mask)
    assert float(zero) == 0.0 and not zero.requires_grad  # weight 0 adds no gradient at all


def test_identity_on_the_wire_with_the_law_of_none():
    h = torch.randn(2, 5, 16, generator=_g(7))
    d = make_defense("nopeek", weight=1.0)
    assert d(h, make_generator(0)) is h
    assert d.states_likelihood() and d.accounting() is None and d.noise_scale().value == 0.0
    cand = torch.randn(7, 16, generator=_g(8))
    assert torch.equal(d.observation_log_likelihood(h[0], cand),
                       make_defense("none").observation_log_likelihood(h[0], cand))
    assert d.describe()["family"] == "training" and [f.flag for f in d.cli_flags()] == ["--nopeek-weight"]
