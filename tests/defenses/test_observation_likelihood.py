"""The law each defense states for the attacker (`observation_log_likelihood`), checked against closed forms."""
from __future__ import annotations

import math

import pytest
import torch

from defenses import BaseDefense, defenses, make_defense, make_generator
from defenses.base import EXACT_RELATIVE_TOLERANCE
from flbench.core.errors import FlbenchError


def _normal_log_prob(o: torch.Tensor, c: torch.Tensor, sigma: float) -> torch.Tensor:
    """Σ over rows and coordinates of log N(o; c, σ²), for each candidate row c of (K, d)."""
    o = o.reshape(-1, o.shape[-1]).double()
    return torch.stack([torch.distributions.Normal(ci.double(), sigma).log_prob(o).sum() for ci in c])


def _same_up_to_constant(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> None:
    a, b = a.double(), b.double()
    assert torch.allclose(a - a[0], b - b[0], rtol=tol, atol=tol), (a - a[0], b - b[0])


@pytest.fixture
def rows():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 16, generator=g) * 2.0, torch.randn(5, 16, generator=g) * 2.0  # observed, candidates


def test_every_registered_defense_states_its_likelihood():
    """Likelihood attacks decode h_A: every defense that may sit on h_A states its law (the gradient-edge
    ones do too, for attacks on dL/dh_B)."""
    assert all(defenses.get(n).states_likelihood() for n in defenses.names())
    assert not BaseDefense.states_likelihood()


def test_gaussian_absolute_is_the_normal_log_density(rows):
    o, c = rows
    d = make_defense("gaussian", sigma=0.7)
    _same_up_to_constant(d.observation_log_likelihood(o[0], c), _normal_log_prob(o[0], c, 0.7))
    # n releases of one position: their log-likelihoods add
    _same_up_to_constant(d.observation_log_likelihood(o, c), _normal_log_prob(o, c, 0.7))
    expected = -((o[0] - c) ** 2).sum(-1) / (2 * 0.7**2)
    assert torch.allclose(d.observation_log_likelihood(o[0], c), expected, atol=1e-4)
    assert d.reference_rms_from_observed(o) is None


def test_gaussian_relative_uses_the_reference_rms_and_the_attacker_can_estimate_it(rows):
    o, c = rows
    d = make_defense("gaussian", sigma=2.0, relative=True)
    with pytest.raises(FlbenchError, match="needs reference_rms"):
        d.observation_log_likelihood(o[0], c)
    _same_up_to_constant(d.observation_log_likelihood(o[0], c, reference_rms=1.5), _normal_log_prob(o[0], c, 3.0))
    # E[o²] = RMS² (1 + sigma²): the estimate from noised rows recovers the clean RMS
    h = torch.randn(64, 50, 576, generator=torch.Generator().manual_seed(1)) * 3.0
    sent = d(h, make_generator(seed=2))
    est = d.reference_rms_from_observed(sent.reshape(-1, 576))
    assert est == pytest.approx(float(h.square().mean().sqrt()), rel=0.01)


def test_dp_forward_clips_the_candidate_first(rows):
    o, _ = rows
    d = make_defense("dp-forward", clip=1.0, noise_multiplier=0.5, unit="token")
    direction = torch.nn.functional.normalize(torch.randn(16, generator=torch.Generator().manual_seed(3)), dim=0)
    c = torch.stack([direction * 0.5, direction * 3.0, direction * 30.0])  # inside, above, far above C
    ll = d.observation_log_likelihood(o[0], c)
    clipped = torch.stack([direction * 0.5, direction * (1.0 / (1 + 1e-6 / 3)), direction * (1.0 / (1 + 1e-6 / 30))])
    _same_up_to_constant(ll, _normal_log_prob(o[0], clipped, 0.5))
    assert ll[1] == pytest.approx(float(ll[2]), abs=1e-4)  # both clip to the same point


def test_none_is_exact_acceptance(rows):
    o, c = rows
    d = make_defense("none")
    cands = torch.cat([c, o[:1]])  # the true row is the last candidate
    ll = d.observation_log_likelihood(o[0], cands)
    assert int(ll.argmax()) == len(c) and float(ll[-1]) == 0.0
    tau_sq = EXACT_RELATIVE_TOLERANCE**2 * float(o[0].square().mean())
    assert torch.allclose(ll[:-1].double(), -((o[0] - c) ** 2).sum(-1).double() / (2 * tau_sq), rtol=1e-5)
    assert float(ll[:-1].max()) < -1e3  # any other row: far below any log-prior difference
    sigma0 = make_defense("gaussian", sigma=0.0)
    assert torch.allclose(sigma0.observation_log_likelihood(o[0], cands), ll)


@pytest.mark.parametrize("name,params", [("gaussian", {"sigma": 0.7}), ("none", {}),
                                         ("dp-forward", {"clip": 5.0, "noise_multiplier": 0.5, "unit": "token"}),
                                         ("dp-forward", {"clip": 5.0, "noise_multiplier": 0.5}),
                                         ("grad-dp", {"clip": 5.0, "noise_multiplier": 0.5}),
                                         ("dx-privacy", {"eta": 2.0})])
def test_batched_forms_agree_with_one_row_at_a_time(rows, name, params):
    o, c = rows
    d = make_defense(name, **params)
    one = torch.stack([d.observation_log_likelihood(o[b], c) for b in range(3)])
    per_row = d.observation_log_likelihood(o.unsqueeze(1), c.expand(3, -1, -1))
    shared = d.observation_log_likelihood(o.unsqueeze(1), c)
    assert torch.allclose(per_row, one, rtol=1e-5)
    assert torch.allclose(shared, one, rtol=1e-4, atol=1e-2 if name == "none" else 1e-4)


def test_shape_errors_are_one_line(rows):
    o, c = rows
    d = make_defense("gaussian", sigma=1.0)
    with pytest.raises(FlbenchError, match="expected"):
        d.observation_log_likelihood(o.unsqueeze(0).unsqueeze(0), c)
    with pytest.raises(FlbenchError, match="does not match"):
        d.observation_log_likelihood(o[0], c[:, :8])
    assert math.isfinite(float(d.observation_log_likelihood(o[0].double(), c).sum()))


def test_widened_likelihood_at_the_law_variance_is_the_law(rows):
    """`widened_log_likelihood` with total_var = the law's own variance gives the law back (up to a constant):
    Gaussian by default; dp-forward with the candidate clipped first. Wider variance flattens it by that
    ratio; a non-positive variance is refused."""
    o, c = rows
    g = make_defense("gaussian", sigma=0.7)
    _same_up_to_constant(g.widened_log_likelihood(o, c, 0.49), g.observation_log_likelihood(o, c))
    clip = float(c.norm(dim=-1).median())  # binds on some candidates
    dp = make_defense("dp-forward", clip=clip, noise_multiplier=0.1, unit="token")
    law = dp.observation_log_likelihood(o, c)
    _same_up_to_constant(dp.widened_log_likelihood(o, c, dp.sigma ** 2), law)
    _same_up_to_constant(dp.widened_log_likelihood(o, c, 4 * dp.sigma ** 2), law / 4)
    # the base (unclipped) law ranks the candidates differently once the clip binds
    base = BaseDefense.widened_log_likelihood(dp, o, c, dp.sigma ** 2)
    assert not torch.allclose(base - base[0], law - law[0], rtol=1e-3, atol=1e-3)
    with pytest.raises(FlbenchError, match="total_var"):
        g.widened_log_likelihood(o, c, 0.0)
