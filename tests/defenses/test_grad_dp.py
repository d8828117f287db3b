"""`grad-dp`: per-example clip + Gaussian noise on the gradient dL/dh_B (gradient edge only)."""
import math

import pytest
import torch
from scipy import stats

from defenses import (
    EDGE_GRAD_B,
    EDGE_H_A,
    GradDP,
    defenses,
    make_defense,
    make_generator,
)
from defenses.accounting import gaussian_epsilon


def _grad(shape=(3, 8, 16), seed=0, pad=None):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    if pad is not None:  # rows of padded positions are zero (the runtime's contract)
        for b, n in enumerate(pad):
            g[b, :n] = 0.0
    return g


def test_sits_on_the_gradient_edge_only():
    assert GradDP.edges == (EDGE_GRAD_B,)
    assert all(defenses.get(n).edges == (EDGE_H_A,) for n in defenses.names() if n != "grad-dp")
    assert make_defense("grad-dp", clip=1.0, noise_multiplier=1.0).record_block()["edges"] == ["grad_b"]


def test_clips_each_examples_gradient_as_a_whole():
    c = 2.0
    g = _grad(pad=[0, 3, 5]) * 2.0
    g[0] *= 0.05  # example 0 below c: unchanged
    norms = torch.linalg.vector_norm(g, dim=(1, 2))
    out = GradDP(clip=c, noise_multiplier=1e-9)(g, make_generator(0))
    assert torch.allclose(out[0], g[0], atol=1e-5)
    for b in (1, 2):
        assert torch.allclose(out[b], g[b] * (c / norms[b]), atol=1e-5)
    # padded rows carry only noise (and the receiver drops them)
    assert float(out[2, :5].abs().max()) < 1e-6


def test_noise_has_std_z_times_c():
    c, z = 50.0, 0.7
    g = _grad((4, 32, 64)) * 0.01
    noise = (GradDP(clip=c, noise_multiplier=z)(g, make_generator(1)) - g).double().flatten().numpy()
    assert stats.kstest(noise, "norm", args=(0.0, z * c)).pvalue > 0.01


def test_accounting_per_example_and_step():
    d = make_defense("grad-dp", clip=1.0, noise_multiplier=4.0, delta=1e-6)
    acc = d.accounting(releases=20)  # the example appeared in 20 steps
    assert acc["epsilon"] == pytest.approx(gaussian_epsilon(2.0, 20, 1e-6)) and acc["releases"] == 20
    assert "gradient" in acc["unit"] and "steps" in acc["unit"] and acc["sensitivity_l2"] == 2.0
    assert d.epsilon(20) == acc["epsilon"] and math.isfinite(d.describe()["epsilon_per_release"])


def test_snr_on_the_clipped_gradient():
    c, z = 1.0, 2.0
    g = _grad((2, 5, 8)) * 3.0  # every example clipped: sent RMS = C/sqrt(T·d)
    d = make_defense("grad-dp", clip=c, noise_multiplier=z)
    d(g, make_generator(2))
    assert d.stats()["snr_rms"] == pytest.approx(1.0 / (z * math.sqrt(40)), rel=1e-5)


def test_likelihood_peaks_at_the_true_gradient_row():
    g = _grad((1, 6, 32), seed=3)[0]
    d = make_defense("grad-dp", clip=1.0, noise_multiplier=1e-3)
    sent = d(g.unsqueeze(0), make_generator(4))[0]
    cands = torch.cat([g, torch.randn(30, 32, generator=torch.Generator().manual_seed(5))])
    assert d.observation_log_likelihood(sent.unsqueeze(1), cands).argmax(1).tolist() == list(range(6))
