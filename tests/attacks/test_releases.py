"""Repeated releases: the same texts cross the wire k times with fresh noise; attacks combine them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks import Knowledge, capture, make_attack
from defenses import make_defense, make_generator
from flbench.core.errors import FlbenchError
from flbench.data import load_corpus
from flbench.metrics import token_accuracy
from splits import SplitRuntime, SplitSpec


@pytest.fixture(scope="module")
def victims():
    return [r.text for r in load_corpus("private-records", limit=6, seed=2)]


def _capture(tiny, victims, sigma, releases, seed=5):
    defense = make_defense("gaussian", sigma=sigma, relative=True)
    rt = SplitRuntime(tiny, SplitSpec(1, 1), defense=defense, generator=make_generator(seed=seed))
    obs, ids = capture(rt, victims, batch_size=3, max_length=16, releases=releases)
    return Knowledge.from_runtime(rt), obs, ids


def test_capture_records_every_release_with_fresh_noise(tiny, victims):
    _, obs, ids = _capture(tiny, victims, 1.0, 3)
    assert obs.releases == 3 and len(obs.h_a_releases) == len(ids)
    for i, r in enumerate(obs.h_a_releases):
        assert r.shape == (3, len(ids[i]), obs.h_a[i].shape[-1])
        assert torch.equal(r[0], obs.h_a[i])  # release 0 is the single-release view
        assert not torch.allclose(r[0], r[1])  # fresh noise every time
    # the pooled view is the mean, which is what single-release attacks are given
    pooled = obs.pooled()
    assert pooled.releases == 1 and torch.allclose(pooled.h_a[0], obs.h_a_releases[0].mean(0))


def test_one_release_keeps_the_plain_observations(tiny, victims):
    _, obs, _ = _capture(tiny, victims, 1.0, 1)
    assert obs.h_a_releases is None and obs.releases == 1 and obs.pooled() is obs


def test_releases_must_be_positive(tiny, victims):
    with pytest.raises(FlbenchError, match="releases=0"):
        _capture(tiny, victims, 1.0, 0)


def _acc(knowledge, obs, ids, **params) -> float:
    attack = make_attack("map-inversion", knowledge, candidates="all", **params).fit([], knowledge)
    return float(np.mean(token_accuracy(ids, attack.invert(obs))))


def test_map_inversion_gains_from_repeated_releases(tiny, victims):
    # at a σ where one release leaves many tokens unrecovered, 8 releases (summed log-likelihood, i.e. σ/√8)
    # recover more; the first release of the same capture is the single-release baseline
    knowledge, obs, ids = _capture(tiny, victims, 6.0, 8)
    one = type(obs)(obs.lengths, obs.h_a, obs.h_b)
    single, many = _acc(knowledge, one, ids), _acc(knowledge, obs, ids)
    assert single < 0.9 and many > single + 0.1, (single, many)


def test_summed_likelihood_equals_the_mean_under_gaussian_noise(tiny, victims):
    # for a Gaussian law the k releases' summed log-likelihood ranks candidates exactly as one release at σ/√k
    # of their mean would: map-inversion over all releases and over the pooled mean with σ/√k agree
    knowledge, obs, ids = _capture(tiny, victims[:3], 3.0, 4)
    rec_all = make_attack("map-inversion", knowledge, candidates="all", prior=False).fit([], knowledge).invert(obs)
    # the pooled mean scored at σ/√k (= 1.5 × RMS; the attacker's RMS estimate from release 0 is kept equal)
    k = Knowledge(knowledge.loaded, knowledge.spec, make_defense("gaussian", sigma=1.5, relative=True))
    attack = make_attack("map-inversion", k, candidates="all", prior=False).fit([], k)
    pooled = obs.pooled()
    ref_rms = knowledge.fresh_defense().reference_rms_from_observed(torch.cat(obs.h_a).float())
    k.defense.reference_rms_from_observed = lambda _o: ref_rms  # same RMS estimate as the k-release attack
    attack._defense = k.defense
    rec_pooled = attack.invert(pooled)
    assert rec_all == rec_pooled
