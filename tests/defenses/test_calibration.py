"""A calibrated relative σ (gaussian `scale`): σ_eff = sigma × scale, a fixed public number, whatever the
private batch; the attacker's law uses it; the uncalibrated defense is unchanged. And the per-token SNR of
NoiseStats (`snr_token_median`), which one outlying (attention-sink) row cannot move."""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from defenses import make_defense, make_generator
from defenses.base import ABSOLUTE, RELATIVE_RMS, NoiseStats
from flbench.core.errors import FlbenchError


def _batch(seed: int, scale: float, shape=(4, 12, 32)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def test_calibrated_noise_std_is_sigma_times_scale_whatever_the_batch():
    d = make_defense("gaussian", sigma=0.5, relative=True, scale=3.0)
    for seed, rms in ((0, 0.01), (1, 100.0)):  # private batches four orders of magnitude apart
        h = _batch(seed, rms, (64, 32, 48))
        noise = (d(h, make_generator(seed=7)) - h).double().flatten()
        assert float(noise.std()) == pytest.approx(1.5, rel=0.01)
        sample = (noise[:5000] / 1.5).numpy()
        assert stats.kstest(sample, "norm").pvalue > 0.01  # N(0, (sigma × scale)²), with a fixed seed


def test_calibrated_draws_do_not_depend_on_the_private_batch():
    d = make_defense("gaussian", sigma=0.5, relative=True, scale=3.0)
    a, b = _batch(0, 0.1), _batch(1, 50.0)
    na = d(a, make_generator(seed=3)) - a
    nb = d(b, make_generator(seed=3)) - b
    assert torch.allclose(na, nb, rtol=0, atol=1e-3)  # same draws (up to rounding of h + noise − h)
    # the per-call relative σ instead follows each batch's own RMS
    r = make_defense("gaussian", sigma=0.5, relative=True)
    ra, rb = r(a, make_generator(seed=3)) - a, r(b, make_generator(seed=3)) - b
    assert float(rb.std() / ra.std()) == pytest.approx(float(b.square().mean().sqrt() / a.square().mean().sqrt()),
                                                       rel=1e-3)


def test_uncalibrated_default_is_unchanged():
    """scale left at 0: the same draws, parameters, repr and self-description as before `scale` existed."""
    h = _batch(0, 2.0)
    d = make_defense("gaussian", sigma=0.5, relative=True)
    want = h + torch.randn(h.shape, generator=make_generator(seed=4)) * (0.5 * float(h.double().square().mean().sqrt()))
    assert torch.equal(d(h, make_generator(seed=4)), want)
    assert d.params() == {"sigma": 0.5, "relative": True}
    assert repr(d) == "GaussianNoise(sigma=0.5, relative=True)"
    assert d.noise_scale().unit == RELATIVE_RMS and d.noise_scale().value == 0.5
    assert "noise_reference" not in d.record_block() and d.describe()["sigma_meaning"] == "multiple of RMS(h_A) per call"
    a = make_defense("gaussian", sigma=0.3)
    assert a.params() == {"sigma": 0.3, "relative": False} and repr(a) == "GaussianNoise(sigma=0.3, relative=False)"


def test_calibrated_self_description():
    d = make_defense("gaussian", sigma=0.5, relative=True, scale=3)
    assert d.params() == {"sigma": 0.5, "relative": True, "scale": 3.0}
    assert repr(d) == "GaussianNoise(sigma=0.5, relative=True, scale=3.0)"
    assert d.noise_scale().unit == ABSOLUTE and d.noise_scale().value == 1.5
    assert d.noise_scale().per_coordinate_std(48, signal_rms=1000.0) == 1.5
    block = d.record_block()
    assert block["noise_sigma"] == 1.5 and block["relative"] is False and block["params"] == d.params()
    assert block["noise_multiple"] == 0.5 and block["noise_reference_rms"] == 3.0
    assert block["noise_reference"].startswith("calibrated: sigma × scale")
    desc = d.describe()
    assert desc["sigma_meaning"] == "calibrated: sigma × scale (public token-RMS median)"
    assert desc["paper_noise_scale"] == pytest.approx(1.5 * math.sqrt(2 / math.pi))
    assert type(d)(**d.params()) == d  # the attacker's copy (Knowledge.fresh_defense)


@pytest.mark.parametrize("params", [{"sigma": 0.5, "scale": 3.0}, {"sigma": 0.5, "relative": False, "scale": 1}])
def test_scale_without_relative_is_refused(params):
    with pytest.raises(FlbenchError) as e:
        make_defense("gaussian", **params)
    msg = str(e.value)
    assert "\n" not in msg and "scale=" in msg and "relative=True" in msg


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, None, "3", True])
def test_bad_scales_are_refused(bad):
    with pytest.raises(FlbenchError, match=r"scale=.* is not accepted; expected a finite number ≥ 0"):
        make_defense("gaussian", sigma=0.5, relative=True, scale=bad)


def test_likelihood_uses_the_fixed_scale():
    g = torch.Generator().manual_seed(0)
    o, c = torch.randn(3, 16, generator=g), torch.randn(5, 16, generator=g)
    d = make_defense("gaussian", sigma=0.5, relative=True, scale=3.0)
    absolute = make_defense("gaussian", sigma=1.5)
    want = absolute.observation_log_likelihood(o, c)
    assert torch.allclose(d.observation_log_likelihood(o, c), want)  # no reference_rms needed
    assert torch.allclose(d.observation_log_likelihood(o, c, reference_rms=123.0), want)  # nor used
    assert d.reference_rms_from_observed(o * 1000) == 3.0  # public: not estimated from the traffic


def test_stats_snr_token_median_is_per_row_and_robust_to_a_sink():
    d = make_defense("gaussian", sigma=0.5, relative=True, scale=2.0)
    h = torch.ones(2, 10, 16)  # every row RMS 1 …
    h[:, 0] = 40.0  # … but position 0, a sink row with most of the energy
    d(h, make_generator(seed=0))
    s = d.stats()
    assert s["snr_token_median"] == pytest.approx(1.0 / (0.5 * 2.0))
    assert s["snr_rms"] == pytest.approx(float(h.square().mean().sqrt()) / 1.0)  # the sink inflates this one
    assert s["snr_rms"] > 10 * s["snr_token_median"]


def test_noise_stats_rows_masks_and_conventions():
    st = NoiseStats()
    assert st.as_dict()["snr_token_median"] is None  # nothing released yet
    h = torch.zeros(2, 3, 4)
    h[0, :2] = 2.0  # rows of RMS 2
    h[1, 0] = 6.0  # one row of RMS 6; the other rows are zero (zeroed padding: left out)
    st.add(h, torch.zeros_like(h), 1.0)
    assert st.snr_token_median() == pytest.approx(2.0)  # median of {2, 2, 6}
    mask = torch.tensor([[1, 0, 0], [1, 0, 0]])  # a caller that knows the padding: rows (0,0) and (1,0) only
    st2 = NoiseStats()
    st2.add(h, None, 2.0, mask=mask)
    assert st2.snr_token_median() == pytest.approx((1.0 + 3.0) / 2)
    assert st2.as_dict()["coords"] == h.numel()  # the sums still count every released coordinate
    st3 = NoiseStats()
    st3.add(h, None, 0.0)
    assert st3.as_dict()["snr_token_median"] == math.inf  # no noise: infinite SNR, as snr_rms
    # every existing key is still there, with the same meaning
    assert {"calls", "vectors", "coords", "signal_rms", "signal_mean_abs", "sigma_effective_rms",
            "noise_rms_measured", "noise_mean_abs_measured", "snr_rms", "snr_mean_abs"} <= set(st.as_dict())


def test_the_token_snr_of_split_traffic_leaves_padding_out(tiny):
    """The head zeroes padded rows before the defense, so the per-token SNR counts the real rows only."""
    from splits import SplitRuntime, SplitSpec
    from splits.wire import Kind, RecordingTap

    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [0, 0, 0, 11, 12, 13]])  # left-padded second row
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]])
    clean = SplitRuntime(tiny, SplitSpec(1, 1))
    tap = RecordingTap()
    clean.wire.taps.append(tap)
    clean.forward(ids, mask)
    real_rows = next(m.tensor for m in tap.received if m.kind == Kind.HIDDEN_A)  # packed: the 9 real rows only
    assert real_rows.shape[0] == 9
    sigma_eff = 0.5 * 2.0
    want = float(real_rows.double().square().mean(-1).sqrt().median()) / sigma_eff
    d = make_defense("gaussian", sigma=0.5, relative=True, scale=2.0)
    SplitRuntime(tiny, SplitSpec(1, 1), defense=d, generator=make_generator(seed=0)).forward(ids, mask)
    rows = d._stats.row_snr[0]
    assert rows.numel() == 9  # the three padded rows (zero when the defense sees them) were left out
    assert sorted(rows.tolist()) == pytest.approx(sorted((real_rows.double().square().mean(-1).sqrt() / sigma_eff).tolist()),
                                                  rel=1e-5)
    assert d.stats()["snr_token_median"] == pytest.approx(want, rel=1e-5)
