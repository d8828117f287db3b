import math

import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from scipy import stats

from defenses import DPForward, make_defense, make_generator
from flbench.core.errors import FlbenchError


def _h(shape=(3, 10, 32), seed=0, scale=1.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def test_clips_each_token_to_c_before_noise():
    c = 1.5
    h = _h(scale=0.6)  # row norms ~ 0.6*sqrt(32) ~ 3.4, some rows scaled below c below
    h[0, :3] *= 0.05
    norms = torch.linalg.vector_norm(h, dim=-1)
    assert (norms > c).any() and (norms < c).any()
    out = DPForward(clip=c, noise_multiplier=1e-9)(h, make_generator(0, secure=False))
    out_norms = torch.linalg.vector_norm(out, dim=-1)
    assert (out_norms <= c * (1 + 1e-5)).all()
    big = norms > c
    assert torch.allclose(out_norms[big], torch.full_like(out_norms[big], c), rtol=1e-5)
    assert torch.allclose(out[~big], h[~big], atol=1e-5)  # short rows pass unchanged
    cos = torch.nn.functional.cosine_similarity(out, h, dim=-1)
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)  # clipping keeps the direction


def test_noise_has_std_z_times_c():
    c, z = 2.0, 0.4
    h = _h((4, 32, 64), scale=0.01)  # all rows far below c: nothing is clipped
    out = DPForward(clip=c, noise_multiplier=z)(h, make_generator(1, secure=False))
    noise = (out - h).double().flatten().numpy()
    assert stats.kstest(noise, "norm", args=(0.0, z * c)).pvalue > 0.01


def test_zero_rows_have_finite_gradients():
    h = torch.zeros(2, 3, 8, requires_grad=True)
    DPForward(clip=1.0, noise_multiplier=0.5)(h, make_generator(2, secure=False)).sum().backward()
    assert torch.isfinite(h.grad).all()


def _opacus_eps(z_eff, steps, delta):
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = compute_rdp(q=1.0, noise_multiplier=z_eff, steps=steps, orders=orders)
    return float(get_privacy_spent(orders=orders, rdp=rdp, delta=delta)[0])


@pytest.mark.parametrize("z,steps,delta", [(1.0, 1, 1e-5), (4.0, 10, 1e-5), (8.0, 100, 1e-6)])
def test_epsilon_matches_opacus_with_noise_multiplier_z_over_2(z, steps, delta):
    d = DPForward(clip=3.0, noise_multiplier=z, delta=delta)
    assert d.epsilon(steps) == pytest.approx(_opacus_eps(z / 2, steps, delta), rel=1e-12)
    assert d.epsilon(steps, vectors=16) == pytest.approx(_opacus_eps(z / 8, steps, delta), rel=1e-12)


def test_epsilon_falls_as_z_grows_and_grows_with_steps():
    eps = [DPForward(clip=1.0, noise_multiplier=z).epsilon(10) for z in (0.5, 1.0, 2.0, 4.0, 8.0)]
    assert all(a > b for a, b in zip(eps, eps[1:]))
    d = DPForward(clip=1.0, noise_multiplier=2.0)
    assert d.epsilon(0) == 0.0 < d.epsilon(1) < d.epsilon(2) < d.epsilon(50)
    assert d.epsilon(5, delta=1e-3) < d.epsilon(5, delta=1e-7)


@pytest.mark.parametrize("kwargs", [{"steps": -1}, {"steps": 1.5}, {"steps": 3, "delta": 0.0},
                                    {"steps": 3, "vectors": 0}])
def test_epsilon_rejects_bad_arguments(kwargs):
    with pytest.raises(FlbenchError):
        DPForward(clip=1.0, noise_multiplier=1.0).epsilon(**kwargs)


def test_stats_count_releases_and_bound_epsilon():
    d = make_defense("dp-forward", clip=1.0, noise_multiplier=3.0)
    g = make_generator(4, secure=False)
    h = _h(scale=1.0)
    for _ in range(4):  # e.g. a prompt re-sent at every generation step without a KV cache
        d(h, g)
    s = d.stats()
    assert s["calls"] == s["releases_per_example_max"] == 4 and s["vectors"] == 4 * 30
    assert s["epsilon_upper_bound"] == pytest.approx(d.epsilon(4))
    assert s["clipped_fraction"] == 1.0 and s["norm_max"] >= s["norm_mean"] > 1.0
    assert s["snr_rms"] == pytest.approx(float(h.double().square().mean().sqrt()) / 3.0)
    desc = d.describe()
    assert desc["effective_noise_multiplier"] == 1.5 and desc["sensitivity_l2"] == 2.0
    assert "2C" in desc["neighbouring"] and "z/2" in desc["neighbouring"]
    assert math.isfinite(desc["epsilon_per_release"])
