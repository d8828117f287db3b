"""`dx-privacy`: noise ∝ exp(−η‖z‖) per row (Feyisetan et al., WSDM 2020), checked against its closed forms."""
import math

import pytest
import torch
from scipy import stats

from defenses import INVERSE_ETA, DXPrivacy, make_defense, make_generator


def _h(shape=(4, 64, 32), seed=0, scale=1.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def test_noise_norm_is_gamma_d_over_eta_and_direction_is_uniform():
    eta, dim = 3.0, 32
    h = _h((8, 128, dim))
    noise = (make_defense("dx-privacy", eta=eta)(h, make_generator(1)) - h).double().reshape(-1, dim)
    radius = noise.norm(dim=-1).numpy()
    assert stats.kstest(radius, "gamma", args=(dim, 0, 1 / eta)).pvalue > 0.01
    assert stats.kstest(radius, "gamma", args=(dim, 0, 1.1 / eta)).pvalue < 1e-6  # the test has power
    # uniform direction in d dims: (1 + u·x)/2 ~ Beta((d−1)/2, (d−1)/2) for any fixed unit vector u
    u = torch.nn.functional.normalize(torch.ones(dim, dtype=torch.float64), dim=0)
    proj = ((1 + (noise / noise.norm(dim=-1, keepdim=True)) @ u) / 2).numpy()
    assert stats.kstest(proj, "beta", args=((dim - 1) / 2, (dim - 1) / 2)).pvalue > 0.01


def test_noise_scale_unit_and_per_coordinate_std():
    d = make_defense("dx-privacy", eta=4.0)
    scale = d.noise_scale()
    assert scale.unit == INVERSE_ETA and scale.value == 0.25 and not scale.relative
    assert scale.per_coordinate_std(32) == pytest.approx(math.sqrt(33) / 4.0)


def test_likelihood_is_minus_eta_times_the_distance():
    d = make_defense("dx-privacy", eta=2.5)
    g = torch.Generator().manual_seed(2)
    obs, cands = torch.randn(3, 16, generator=g), torch.randn(5, 16, generator=g)
    want = -2.5 * torch.stack([sum((o - c).norm() for o in obs) for c in cands])
    assert torch.allclose(d.observation_log_likelihood(obs, cands), want, rtol=1e-5)
    assert torch.allclose(d.observation_log_likelihood(obs[0], cands), -2.5 * (obs[0] - cands).norm(dim=-1))
    assert float(d.observation_log_likelihood(obs[0], obs[:1])[0]) == 0.0  # exact at o = c


def test_likelihood_peaks_at_the_true_row_at_small_noise():
    h = _h((1, 6, 32))[0]
    d = make_defense("dx-privacy", eta=1e4)
    sent = d(h.unsqueeze(0), make_generator(3))[0]
    cands = torch.cat([h, torch.randn(30, 32, generator=torch.Generator().manual_seed(4))])
    assert d.observation_log_likelihood(sent.unsqueeze(1), cands).argmax(1).tolist() == list(range(6))


def test_accounting_is_metric_dp_composing_linearly():
    d = make_defense("dx-privacy", eta=0.5)
    acc = d.accounting(1)
    assert acc["epsilon"] == 0.5 and acc["delta"] == 0.0 and "per unit" in acc["unit"]
    assert d.accounting(7)["epsilon"] == pytest.approx(3.5) and d.accounting(0)["epsilon"] == 0.0
    # the guarantee itself: |log p(y|x) − log p(y|x')| ≤ η‖x − x'‖ for any y (triangle inequality)
    g = torch.Generator().manual_seed(5)
    x, x2, y = torch.randn(3, 8, generator=g).double()
    gap = d.observation_log_likelihood(y, x.unsqueeze(0)) - d.observation_log_likelihood(y, x2.unsqueeze(0))
    assert abs(float(gap)) <= 0.5 * float((x - x2).norm()) + 1e-12


def test_stats_measure_the_median_distance_between_distinct_rows():
    a, dim = 3.0, 16
    rows = torch.eye(dim) * a  # distinct rows, every pair at distance a·√2
    h = torch.cat([rows, rows]).unsqueeze(0)  # duplicates are not distinct: ignored
    d = make_defense("dx-privacy", eta=2.0)
    assert d.stats()["row_distance_median"] is None
    d(h, make_generator(6))
    d(h, make_generator(7))
    s = d.stats()
    assert s["row_distance_median"] == pytest.approx(a * math.sqrt(2))
    assert s["epsilon_median_distance_per_release"] == pytest.approx(2.0 * a * math.sqrt(2))
    assert s["epsilon_median_distance_upper_bound"] == pytest.approx(2 * 2.0 * a * math.sqrt(2))
    d.reset_stats()
    assert d.stats()["row_distance_median"] is None and d.stats()["calls"] == 0


def test_no_snap_and_describe():
    desc = DXPrivacy(eta=1.0).describe()
    assert desc["snap"] is False and "Feyisetan" in desc["source"] and desc["family"] == "metric-dp"
