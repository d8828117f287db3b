"""`dp-forward`: the clip per privacy unit (a whole example, or a token vector), the noise, the SNR of what is
sent, the accounting, and the attacker's law for both units."""
import math
from itertools import pairwise

import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from scipy import stats

from defenses import DPForward, make_defense, make_generator
from defenses.accounting import gaussian_epsilon
from flbench.core.errors import FlbenchError


def _h(shape=(3, 10, 32), seed=0, scale=1.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def test_default_unit_is_the_sequence():
    d = DPForward(clip=1.0, noise_multiplier=1.0)
    assert d.unit == "sequence" and "example" in d.accounting(1)["unit"]
    assert "token vector" in DPForward(clip=1.0, noise_multiplier=1.0, unit="token").accounting(1)["unit"]


def test_sequence_unit_clips_each_example_as_a_whole():
    c = 5.0
    h = _h(scale=0.6)  # example norms ≈ 0.6·sqrt(320) ≈ 10.7 > c
    h[0] *= 0.05  # example 0 below c: unchanged
    norms = torch.linalg.vector_norm(h, dim=(1, 2))
    out = DPForward(clip=c, noise_multiplier=1e-9)(h, make_generator(0))
    out_norms = torch.linalg.vector_norm(out, dim=(1, 2))
    assert norms[0] < c and (norms[1:] > c).all()
    assert torch.allclose(out[0], h[0], atol=1e-5)
    assert torch.allclose(out_norms[1:], torch.full_like(out_norms[1:], c), rtol=1e-5)
    for b in (1, 2):  # one factor per example: every row of it is scaled by the same c/||H_b||
        assert torch.allclose(out[b], h[b] * (c / norms[b]), atol=1e-5)


def test_sequence_unit_clips_over_all_rows_padded_ones_included():
    """The defense receives h only: an example's norm includes its padded rows (sound: the rows sent are a
    subset of a block of norm ≤ C; the receiver drops padded rows)."""
    c = 1.0
    h = _h((2, 5, 8))
    h[1, :2] = 3.0  # left padding of example 1: pad-token rows, large on purpose
    out = DPForward(clip=c, noise_multiplier=1e-9)(h, make_generator(0))
    all_rows = float(torch.linalg.vector_norm(h[1]))
    assert torch.allclose(out[1, 2:], h[1, 2:] * (c / all_rows), atol=1e-6)
    assert float(torch.linalg.vector_norm(out[1, 2:])) < c  # the real rows get less than the whole budget


def test_token_unit_clips_each_token_to_c_before_noise():
    c = 1.5
    h = _h(scale=0.6)  # row norms ~ 0.6*sqrt(32) ~ 3.4, some rows scaled below c below
    h[0, :3] *= 0.05
    norms = torch.linalg.vector_norm(h, dim=-1)
    assert (norms > c).any() and (norms < c).any()
    out = DPForward(clip=c, noise_multiplier=1e-9, unit="token")(h, make_generator(0, secure=False))
    out_norms = torch.linalg.vector_norm(out, dim=-1)
    assert (out_norms <= c * (1 + 1e-5)).all()
    big = norms > c
    assert torch.allclose(out_norms[big], torch.full_like(out_norms[big], c), rtol=1e-5)
    assert torch.allclose(out[~big], h[~big], atol=1e-5)  # short rows pass unchanged
    cos = torch.nn.functional.cosine_similarity(out, h, dim=-1)
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)  # clipping keeps the direction


@pytest.mark.parametrize("unit", ["sequence", "token"])
def test_noise_has_std_z_times_c(unit):
    c, z = 20.0, 0.4
    h = _h((4, 32, 64), scale=0.01)  # every unit far below c: nothing is clipped
    out = DPForward(clip=c, noise_multiplier=z, unit=unit)(h, make_generator(1, secure=False))
    noise = (out - h).double().flatten().numpy()
    assert stats.kstest(noise, "norm", args=(0.0, z * c)).pvalue > 0.01


@pytest.mark.parametrize("unit", ["sequence", "token"])
def test_zero_rows_have_finite_gradients(unit):
    h = torch.zeros(2, 3, 8, requires_grad=True)
    DPForward(clip=1.0, noise_multiplier=0.5, unit=unit)(h, make_generator(2, secure=False)).sum().backward()
    assert torch.isfinite(h.grad).all()


# ---------------------------------------------------------------------- SNR of what is sent (audit fix)

@pytest.mark.parametrize("unit,shape", [("token", (3, 10, 32)), ("sequence", (3, 10, 32))])
def test_snr_is_measured_on_the_clipped_signal(unit, shape):
    """Every unit is clipped to norm C, so the sent signal's RMS is C/sqrt(coordinates per unit) whatever h was:
    SNR_rms = 1/(z·sqrt(d)) per token, 1/(z·sqrt(T·d)) per example — not RMS(h)/(zC) (the old, overstated
    value, which used the unclipped h)."""
    c, z = 1.0, 3.0
    _, t, dim = shape
    h = _h(shape, scale=2.0)  # token norms ≈ 11, example norms ≈ 36: all clipped
    d = DPForward(clip=c, noise_multiplier=z, unit=unit)
    d(h, make_generator(3))
    s = d.stats()
    per_unit = dim if unit == "token" else t * dim
    assert s["clipped_fraction"] == 1.0
    assert s["snr_rms"] == pytest.approx(1.0 / (z * math.sqrt(per_unit)), rel=1e-5)
    unclipped = float(h.double().square().mean().sqrt())
    assert s["signal_rms_unclipped"] == pytest.approx(unclipped, rel=1e-6)  # fp32 norms
    assert unclipped / (z * c) > 5 * s["snr_rms"]  # what the old statistic would have said


def test_snr_with_some_units_unclipped():
    """Mixed: the sent signal energy is Σ_b min(||H_b||, C)² over the coordinates (computed here from the norms)."""
    c, z = 8.0, 0.5
    h = _h((4, 6, 16))
    h[0] *= 0.2
    h[1] *= 0.4
    norms = torch.linalg.vector_norm(h.double(), dim=(1, 2))
    assert (norms < c).any() and (norms > c).any()
    d = DPForward(clip=c, noise_multiplier=z)
    d(h, make_generator(4))
    want = math.sqrt(float(norms.clamp(max=c).square().sum()) / h.numel()) / (z * c)
    assert d.stats()["snr_rms"] == pytest.approx(want, rel=1e-5)
    assert d.stats()["units"] == 4 and d.stats()["clipped_fraction"] == pytest.approx(float((norms > c).double().mean()))


# ---------------------------------------------------------------------- accounting

def _opacus_eps(z_eff, steps, delta):
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = compute_rdp(q=1.0, noise_multiplier=z_eff, steps=steps, orders=orders)
    return float(get_privacy_spent(orders=orders, rdp=rdp, delta=delta)[0])


@pytest.mark.parametrize("z,steps,delta", [(1.0, 1, 1e-5), (4.0, 10, 1e-5), (8.0, 100, 1e-6)])
@pytest.mark.parametrize("unit", ["sequence", "token"])
def test_epsilon_matches_opacus_with_noise_multiplier_z_over_2(z, steps, delta, unit):
    d = DPForward(clip=3.0, noise_multiplier=z, delta=delta, unit=unit)
    assert d.epsilon(steps) == pytest.approx(_opacus_eps(z / 2, steps, delta), rel=1e-12)
    acc = d.accounting(steps)
    assert acc["epsilon"] == d.epsilon(steps) and acc["releases"] == steps and acc["delta"] == delta
    assert acc["noise_multiplier"] == z / 2 and acc["sensitivity_l2"] == 6.0 and "RDPAccountant" in acc["accountant"]
    if unit == "token":  # m rows may differ: multiplier z/(2 sqrt(m)); widened orders never worse than opacus'
        assert d.epsilon(steps, vectors=16) <= _opacus_eps(z / 8, steps, delta) * (1 + 1e-12)
        assert d.epsilon(steps, vectors=16) == pytest.approx(gaussian_epsilon(z / 8, steps, delta))


def test_epsilon_falls_as_z_grows_and_grows_with_steps():
    eps = [DPForward(clip=1.0, noise_multiplier=z).epsilon(10) for z in (0.5, 1.0, 2.0, 4.0, 8.0)]
    assert all(a > b for a, b in pairwise(eps))
    d = DPForward(clip=1.0, noise_multiplier=2.0)
    assert d.epsilon(0) == 0.0 < d.epsilon(1) < d.epsilon(2) < d.epsilon(50)
    assert d.epsilon(5, delta=1e-3) < d.epsilon(5, delta=1e-7)


@pytest.mark.parametrize("kwargs", [{"steps": -1}, {"steps": 1.5}, {"steps": 3, "delta": 0.0},
                                    {"steps": 3, "vectors": 0}])
def test_epsilon_rejects_bad_arguments(kwargs):
    with pytest.raises(FlbenchError):
        DPForward(clip=1.0, noise_multiplier=1.0).epsilon(**kwargs)


def test_vectors_apply_to_the_token_unit_only():
    with pytest.raises(FlbenchError, match="vectors=4 applies to a per-token unit only"):
        DPForward(clip=1.0, noise_multiplier=1.0).epsilon(3, vectors=4)


def test_record_block_states_unit_releases_epsilon_and_accountant():
    d = make_defense("dp-forward", clip=4.0, noise_multiplier=2.0)
    block = d.record_block(releases=7)
    assert block["privacy_unit"].startswith("one example") and block["releases"] == 7
    assert block["epsilon"] == pytest.approx(gaussian_epsilon(1.0, 7, 1e-5)) and block["delta"] == 1e-5
    assert "RDPAccountant" in block["accountant"] and "sample_rate=1" in block["accountant"]
    assert block["params"]["unit"] == "sequence"


def test_stats_count_releases_and_bound_epsilon():
    d = make_defense("dp-forward", clip=1.0, noise_multiplier=3.0, unit="token")
    g = make_generator(4, secure=False)
    h = _h(scale=1.0)
    for _ in range(4):  # e.g. a prompt re-sent at every generation step without a KV cache
        d(h, g)
    s = d.stats()
    assert s["calls"] == s["releases_per_example_max"] == 4 and s["vectors"] == 4 * 30 and s["units"] == 4 * 30
    assert s["epsilon_upper_bound"] == pytest.approx(d.epsilon(4))
    assert s["clipped_fraction"] == 1.0 and s["norm_max"] >= s["norm_mean"] > 1.0
    desc = d.describe()
    assert desc["effective_noise_multiplier"] == 1.5 and desc["sensitivity_l2"] == 2.0
    assert "2C" in desc["neighbouring"] and "z/2" in desc["neighbouring"]
    assert math.isfinite(desc["epsilon_per_release"])
    seq = make_defense("dp-forward", clip=1.0, noise_multiplier=3.0)
    seq(h, g)
    assert seq.stats()["units"] == 3 and "same length" in seq.describe()["neighbouring"]


# ---------------------------------------------------------------------- the attacker's law, sequence unit

def _example(t=6, dim=32, seed=5):
    return torch.randn(t, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("unit", ["sequence", "token"])
def test_likelihood_peaks_at_the_true_row_at_small_noise(unit):
    c = 3.0  # the example's norm ≈ sqrt(6·32) ≈ 14: clipped by ≈ 0.2 as a whole (rows ≈ 5.7: clipped per token too)
    h = _example()
    d = make_defense("dp-forward", clip=c, noise_multiplier=1e-3, unit=unit)
    sent = d(h.unsqueeze(0), make_generator(6))[0]
    others = torch.randn(40, 32, generator=torch.Generator().manual_seed(7))
    cands = torch.cat([h, others])  # candidate k < 6 is the clean row of position k
    for t in range(len(h)):
        ll = d.observation_log_likelihood(sent[t], cands)
        assert int(ll.argmax()) == t
        assert float(ll[t]) > float(ll[torch.arange(len(cands)) != t].max()) + 100
    batched = d.observation_log_likelihood(sent.unsqueeze(1), cands)  # (T, K): every position at once
    assert batched.argmax(1).tolist() == list(range(len(h)))


def test_sequence_likelihood_is_the_profile_over_the_clip_factor():
    """Independent check: the stated law is max over s in [0, min(1, C/||c||)] of −Σ_i ||o_i − s·c||²/(2σ²),
    here by a grid over s; and it upper-bounds the law at any fixed admissible s."""
    c, z = 2.0, 0.3
    d = make_defense("dp-forward", clip=c, noise_multiplier=z)
    g = torch.Generator().manual_seed(8)
    obs = torch.randn(3, 16, generator=g).double() * 0.4  # 3 releases of one position
    cands = torch.cat([torch.randn(5, 16, generator=g).double(), obs[:1] * 0.1]).double()
    ll = d.observation_log_likelihood(obs, cands).double()
    sigma = z * c
    for k, cand in enumerate(cands):
        s_max = min(1.0, c / float(cand.norm()))
        grid = torch.linspace(0.0, s_max, 20001, dtype=torch.float64)
        per_release = -((obs.unsqueeze(0) - grid.view(-1, 1, 1) * cand).square().sum(-1)) / (2 * sigma**2)
        want = float(per_release.max(0).values.sum())  # each release its own factor
        assert float(ll[k]) == pytest.approx(want, abs=1e-4)
        assert float(ll[k]) >= float(per_release[-1].sum()) - 1e-9  # ≥ the law at s = s_max
