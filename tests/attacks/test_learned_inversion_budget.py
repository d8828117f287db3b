"""The learned attacks' training budget on the tiny LLaMA: by default they train to a validation plateau on
held-out PUBLIC auxiliary text (never victim data) and keep the best-validation weights; patience=0 is the
earlier fixed budget; the parameters that tie the budget together are validated at construction."""
from __future__ import annotations

import pytest

import attacks.decoders
import attacks.learned_inversion
from attacks import Knowledge, capture, make_attack
from attacks.base import SimulatedClient, tokenize_aux
from defenses import make_defense, make_generator
from flbench.core.errors import FlbenchError
from flbench.data import load_corpus
from splits import SplitRuntime, SplitSpec

FAST = {"batch_size": 8, "max_aux": 64, "max_length": 32, "lr": 3e-3}


@pytest.fixture(scope="module")
def aux():
    return [r.text for r in load_corpus("xsum", limit=64, seed=0)]


def _knowledge(tiny, sigma: float = 0.5):
    rt = SplitRuntime(tiny, SplitSpec(1, 1), defense=make_defense("gaussian", sigma=sigma, relative=True),
                      generator=make_generator(seed=3))
    return rt, Knowledge.from_runtime(rt)


def test_learned_inversion_stops_at_a_plateau_with_its_best_weights(tiny, aux):
    _, k = _knowledge(tiny)
    a = make_attack("learned-inversion", k, steps=3000, eval_every=20, patience=2, **FAST).fit(aux, k)
    log = a.fit_log
    assert log["stop_reason"] == "plateau" and log["stopped_at"] < 3000 == log["budget"]
    assert log["aux_texts"] == 64 and log["val_texts"] == 12 and log["train_texts"] == 52 and log["val_tokens"] > 0
    curve = log["curve"]
    assert [c[0] for c in curve] == list(range(0, log["stopped_at"] + 1, 20))
    best = max(c[1] for c in curve)
    assert log["val_accuracy"] == pytest.approx(best, abs=1e-6) and best > curve[0][1]
    assert log["best_step"] in [c[0] for c in curve if c[1] == best]
    assert len(log["lr_cut_steps"]) == 1  # default lr_cuts=1: one cut, then the next plateau stops


def test_validation_uses_held_out_aux_texts_only(tiny, aux, monkeypatch):
    """Every sequence the attacker runs through its simulated client is an auxiliary text; the validation
    batch (the second replay, seed + 2) is computed once, from texts disjoint from the training ones, and no
    victim text is ever seen by the fit."""
    calls: list[tuple[int, list[tuple[int, ...]]]] = []

    class Spy(SimulatedClient):
        def h_a(self, ids, mask, pos):
            calls.append((self.noise_gen.initial_seed(), [tuple(r[m.bool()].tolist()) for r, m in zip(ids, mask)]))
            return super().h_a(ids, mask, pos)

    monkeypatch.setattr(attacks.learned_inversion, "SimulatedClient", Spy)
    monkeypatch.setattr(attacks.decoders, "SimulatedClient", Spy)
    rt, k = _knowledge(tiny)
    victims = [r.text for r in load_corpus("private-records", limit=6, seed=1)]
    obs, true_ids = capture(rt, victims)
    a = make_attack("learned-inversion", k, steps=60, eval_every=20, patience=2, random_tokens=0.0, seed=5, **FAST)
    a.fit(aux, k).invert(obs)
    allowed = {tuple(s) for s in tokenize_aux(tiny.tokenizer, aux, FAST["max_length"])}
    train = {row for seed, rows in calls if seed == 6 for row in rows}
    val_calls = [rows for seed, rows in calls if seed == 7]
    assert len(val_calls) == 1 and len(val_calls[0]) == a.fit_log["val_texts"] == 12
    val = set(val_calls[0])
    assert train and train | val <= allowed and not train & val
    assert not {tuple(t) for t in true_ids} & (train | val)
    assert {seed for seed, _ in calls} == {6, 7}


def test_patience_zero_is_the_fixed_budget(tiny, aux):
    _, k = _knowledge(tiny)
    a = make_attack("learned-inversion", k, steps=30, patience=0, **FAST).fit(aux, k)
    log = a.fit_log
    assert log["steps"] == log["stopped_at"] == 30 and log["stop_reason"] == "budget"
    assert log["train_texts"] == log["aux_texts"] == 64 and log["val_texts"] == 0 and "curve" not in log


def test_output_inversion_mlp_trains_to_a_plateau(tiny, aux):
    _, k = _knowledge(tiny)
    a = make_attack("output-inversion", k, decoder="mlp", target="current", steps=3000, eval_every=20, patience=2,
                    mlp_hidden=64, **FAST).fit(aux, k)
    assert a.fit_log["stop_reason"] == "plateau" and a.fit_log["stopped_at"] < 3000
    assert a.fit_log["curve"][-1][0] == a.fit_log["stopped_at"]


def test_budget_parameters_are_validated():
    with pytest.raises(FlbenchError, match=r"eval_every=500 is more than steps=100.*patience=0"):
        make_attack("learned-inversion", steps=100, eval_every=500)
    make_attack("learned-inversion", steps=100, eval_every=500, patience=0)  # no validation: allowed
    assert make_attack("learned-inversion", steps=3000).eval_interval() == 100
    assert make_attack("learned-inversion", steps=40).eval_interval() == 4
    with pytest.raises(FlbenchError, match=r"min_delta=1\.0 is not accepted; expected a number in \[0, 1\)"):
        make_attack("learned-inversion", min_delta=1.0)
    with pytest.raises(FlbenchError, match="patience=-1"):
        make_attack("output-inversion", decoder="mlp", patience=-1)
    with pytest.raises(FlbenchError, match="val_texts=0"):
        make_attack("learned-inversion", val_texts=0)


def test_one_aux_text_needs_the_fixed_budget(tiny):
    _, k = _knowledge(tiny)
    with pytest.raises(FlbenchError, match="1 auxiliary text cannot be split.*patience=0"):
        make_attack("learned-inversion", k, steps=5, **FAST).fit(["only one public text"], k)
    a = make_attack("learned-inversion", k, steps=5, patience=0, **FAST).fit(["only one public text"], k)
    assert a.fit_log["steps"] == 5
