"""`relaxation`: softmax-relaxed inputs optimised through the public head (tiny random LLaMA, split 1,1)."""
from __future__ import annotations

import numpy as np
import pytest

from attacks import Knowledge, capture, make_attack
from defenses import make_defense, make_generator
from flbench.core.errors import FlbenchError
from flbench.data import load_corpus
from flbench.metrics import token_accuracy
from splits import SplitRuntime, SplitSpec


@pytest.fixture(scope="module")
def victims():
    return [r.text for r in load_corpus("private-records", limit=4, seed=1)]


def _setup(tiny, victims, defense):
    rt = SplitRuntime(tiny, SplitSpec(1, 1), defense=defense, generator=make_generator(seed=3))
    knowledge = Knowledge.from_runtime(rt)
    obs, ids = capture(rt, victims, batch_size=4)
    return knowledge, obs, ids


def test_near_exact_recovery_undefended_and_deterministic(tiny, victims):
    knowledge, obs, ids = _setup(tiny, victims, make_defense("none"))
    attack = make_attack("relaxation", knowledge, steps=200, top_k=0, batch_size=2, seed=5).fit([], knowledge)
    rec = attack.invert(obs)
    acc = float(np.mean(token_accuracy(ids, rec)))
    diag = attack.diagnostics(ids)
    print(f"relaxation undefended acc {acc:.3f} recall {diag['candidate_recall']:.3f}")
    assert acc >= 0.9, acc
    assert diag["candidate_recall"] == 1.0 and diag["positions"] == sum(len(i) for i in ids)
    assert attack.fit_log["objective"] == "defense likelihood"
    again = make_attack("relaxation", knowledge, steps=200, top_k=0, batch_size=2, seed=5).fit([], knowledge)
    assert again.invert(obs) == rec


def test_full_vocabulary_and_uniform_init_run(tiny, victims):
    knowledge, obs, ids = _setup(tiny, victims[:2], make_defense("none"))
    rec = make_attack("relaxation", knowledge, steps=20, top_k=0, init="uniform", entropy=0.5).fit(
        [], knowledge).invert(obs)
    assert [len(r) for r in rec] == [len(i) for i in ids]


def test_noise_aware_objective_under_dp_forward(tiny, victims):
    knowledge, obs, ids = _setup(tiny, victims[:2], make_defense("dp-forward", clip=1.0, noise_multiplier=0.1))
    for first_stage in ("gradient+cosine", "gradient", "cosine"):
        attack = make_attack("relaxation", knowledge, steps=20, top_k=16, first_stage=first_stage).fit([], knowledge)
        rec = attack.invert(obs)
        assert [len(r) for r in rec] == [len(i) for i in ids]
        assert attack.fit_log["objective"] == "defense likelihood"
        assert 0.0 <= attack.diagnostics(ids)["candidate_recall"] <= 1.0


@pytest.mark.parametrize("params, message", [
    ({"steps": 0}, "steps=0"),
    ({"lr": 0.0}, "lr=0.0"),
    ({"init": "random"}, "init='random'"),
    ({"top_k": -1}, "top_k=-1"),
    ({"temperature_start": 0.1, "temperature_end": 1.0}, "temperature_end=1.0 > temperature_start=0.1"),
    ({"entropy": -1.0}, "entropy=-1.0"),
    ({"first_stage": "prior"}, "first_stage='prior'"),
])
def test_bad_params(params, message):
    with pytest.raises(FlbenchError, match=message):
        make_attack("relaxation", **params)
