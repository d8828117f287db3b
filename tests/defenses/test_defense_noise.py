"""Invariants every defense must keep on the client's outgoing edge, plus the Gaussian noise's distribution."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from defenses import make_defense, make_generator


def _h(shape=(3, 7, 16), seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 2.0).requires_grad_(requires_grad)


def test_input_is_never_modified(example_defense, gen):
    h = _h(requires_grad=True)
    before, version = h.detach().clone(), h._version
    out = example_defense(h, gen)
    out.sum().backward()
    assert torch.equal(h.detach(), before) and h._version == version


def test_gradients_flow_through(example_defense, gen):
    h = _h(requires_grad=True)
    out = example_defense(h, gen)
    assert out.shape == h.shape and out.dtype == h.dtype and out.requires_grad
    (out * torch.arange(out.numel()).view_as(out)).sum().backward()
    assert h.grad is not None and torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0


def test_low_precision_input_keeps_its_dtype(example_defense, gen):
    h = _h().bfloat16()
    out = example_defense(h, gen)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_none_is_identity(gen):
    h = _h()
    assert make_defense("none")(h, gen) is h


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 4), t=st.integers(1, 9), d=st.integers(1, 24), relative=st.booleans(),
       seed=st.integers(0, 2**32))
def test_sigma_zero_changes_nothing(b, t, d, relative, seed):
    h = _h((b, t, d), seed=seed % 1000)
    g = make_generator(seed, secure=False)
    state = g.get_state()
    out = make_defense("gaussian", sigma=0.0, relative=relative)(h, g)
    assert torch.equal(out, h)
    assert torch.equal(g.get_state(), state)  # no draw either


@pytest.mark.parametrize("name,params", [("gaussian", {"sigma": 0.7, "relative": True}),
                                         ("dp-forward", {"clip": 2.0, "noise_multiplier": 0.3, "unit": "token"})])
def test_noise_differs_between_calls_and_repeats_with_the_seed(name, params):
    _differs_and_repeats(make_defense(name, **params))


def test_every_noisy_defense_differs_between_calls_and_repeats_with_the_seed(defense_name, example_defense):
    if example_defense.noise_scale().value == 0:  # asks the defense (none; nopeek, a training-time defense)
        pytest.skip(f"{defense_name} draws no noise")
    _differs_and_repeats(example_defense)


def _differs_and_repeats(d):
    h = _h()
    g = make_generator(99, secure=False)
    a, b = d(h, g), d(h, g)
    assert not torch.equal(a, b)
    g2 = make_generator(99, secure=False)
    assert torch.equal(d(h, g2), a) and torch.equal(d(h, g2), b)


def test_gaussian_noise_is_normal_with_the_stated_sigma():
    sigma = 0.37
    h = _h((4, 32, 64))
    noise = (make_defense("gaussian", sigma=sigma)(h, make_generator(5, secure=False)) - h).double().flatten()
    assert stats.kstest(noise.numpy(), "norm", args=(0.0, sigma)).pvalue > 0.01
    assert stats.kstest(noise.numpy(), "norm", args=(0.0, 1.2 * sigma)).pvalue < 1e-6  # the test has power


def test_relative_sigma_is_a_multiple_of_the_call_rms():
    h = _h((4, 32, 64)) * 5.0
    rms = float(h.double().square().mean().sqrt())
    noise = (make_defense("gaussian", sigma=0.5, relative=True)(h, make_generator(6, secure=False)) - h)
    assert stats.kstest(noise.double().flatten().numpy(), "norm", args=(0.0, 0.5 * rms)).pvalue > 0.01


def test_gaussian_stats_report_snr_in_both_conventions():
    sigma = 0.5
    d = make_defense("gaussian", sigma=sigma)
    g = make_generator(3, secure=False)
    hs = [_h((2, 16, 32), seed=s) for s in range(3)]
    for h in hs:
        d(h, g)
    s = d.stats()
    allh = torch.cat([h.flatten() for h in hs]).double()
    assert s["calls"] == 3 and s["vectors"] == 3 * 32 and s["coords"] == allh.numel()
    assert s["snr_rms"] == pytest.approx(float(allh.square().mean().sqrt()) / sigma)
    # paper convention: mean|h| / mean|noise|, with mean|noise| ~ sigma*sqrt(2/pi)
    expected = float(allh.abs().mean()) / (sigma * math.sqrt(2 / math.pi))
    assert s["snr_mean_abs"] == pytest.approx(expected, rel=0.05)
    assert s["noise_rms_measured"] == pytest.approx(sigma, rel=0.05)
    d.reset_stats()
    assert d.stats()["calls"] == 0
    assert make_defense("gaussian", sigma=0.0).stats()["calls"] == 0
    z = make_defense("gaussian", sigma=0.0)
    z(hs[0], g)
    assert z.stats()["snr_rms"] == math.inf
