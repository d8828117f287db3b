"""One shared suite over every registered attack (opacus' BasePrivacyEngineTest habit): on the tiny random
LLaMA, each attack beats a trivial baseline (always the most frequent auxiliary token) on an undefended split
and does worse under heavy noise; plus registry names, construction-time failures and observation capture."""
from __future__ import annotations

import numpy as np
import pytest

from attacks import (
    Knowledge,
    attacks,
    capture,
    make_attack,
    most_frequent_token,
    observe,
)
from attacks.base import tokenize_aux
from defenses import make_defense, make_generator
from flbench.data import load_corpus
from flbench.core.errors import FlbenchError
from flbench.metrics import token_accuracy
from splits import SplitRuntime, SplitSpec
from splits.wire import RecordingTap

# Small, fast parameters per registered attack; test_every_attack_has_an_example keeps this complete.
EXAMPLES = {
    "embedding-nn": {},
    "learned-inversion": {"steps": 40, "batch_size": 8, "max_aux": 64, "max_length": 64, "lr": 3e-3},
    "output-inversion": {"decoder": "mlp", "target": "current", "steps": 40, "batch_size": 8, "max_aux": 64,
                         "max_length": 64, "lr": 3e-3},
    "map-inversion": {"top_k": 16},
    "relaxation": {"steps": 100, "top_k": 64},
    "gradient-label": {},  # reads training traffic: its suite run is in tests/attacks/test_gradient_label.py
    "joint-inversion": {},  # reads training traffic: tests/attacks/test_joint_inversion.py
}
SPLIT = SplitSpec(1, 1)


@pytest.fixture(scope="module")
def texts():
    aux = [r.text for r in load_corpus("xsum", limit=64, seed=0)]
    victims = [r.text for r in load_corpus("private-records", limit=12, seed=1)]
    return aux, victims


def _run(tiny, name, aux, victims, sigma):
    rt = SplitRuntime(tiny, SPLIT, defense=make_defense("gaussian", sigma=sigma, relative=True),
                      generator=make_generator(seed=3))
    knowledge = Knowledge.from_runtime(rt)
    obs, ids = capture(rt, victims, batch_size=6)
    rec = make_attack(name, knowledge, **EXAMPLES[name]).fit(aux, knowledge).invert(obs)
    assert [len(r) for r in rec] == [len(i) for i in ids]
    return float(np.mean(token_accuracy(ids, rec))), ids


def test_registry_names():
    assert attacks.names() == ["embedding-nn", "gradient-label", "joint-inversion", "learned-inversion",
                               "map-inversion", "output-inversion", "relaxation"]
    with pytest.raises(FlbenchError, match="known: embedding-nn, gradient-label, joint-inversion, learned-inversion, "
                                           "map-inversion, output-inversion, relaxation"):
        make_attack("no-such-attack")


def test_every_attack_has_an_example():
    assert set(EXAMPLES) == set(attacks.names())


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_attack_beats_baseline_and_noise_hurts(tiny, texts, name):
    if "grad_b" in attacks.get(name).requires:  # no gradients in eval traffic; the same contract on training
        pytest.skip("gradient attacks read training traffic: tests/attacks/test_gradient_label.py, test_joint_inversion.py")
    aux, victims = texts
    clean, ids = _run(tiny, name, aux, victims, 0.0)
    guess = most_frequent_token(tokenize_aux(tiny.tokenizer, aux, 64))
    baseline = float(np.mean(token_accuracy(ids, [[guess] * len(i) for i in ids])))
    noisy, _ = _run(tiny, name, aux, victims, 8.0)
    print(name, f"clean {clean:.3f} baseline {baseline:.3f} noisy {noisy:.3f}")
    assert clean > baseline + 0.05, (name, clean, baseline)
    assert noisy < clean - 0.05, (name, clean, noisy)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_attack_params_are_printable(name):
    a = make_attack(name, **EXAMPLES[name])
    d = a.describe()
    assert d["name"] == name and d["params"] == a.params() and name != d["summary"] != ""
    assert type(a).__doc__ and "assumes" in type(a).__doc__.lower()


def test_missing_observations_fail_at_construction(tiny):
    rt = SplitRuntime(tiny, SPLIT)
    uplink_only = Knowledge.from_runtime(rt, observes={"h_a"})
    with pytest.raises(FlbenchError, match="output-inversion.*needs h_b"):
        make_attack("output-inversion", uplink_only)
    downlink_only = Knowledge.from_runtime(rt, observes={"h_b"})
    for name in ("embedding-nn", "learned-inversion"):
        with pytest.raises(FlbenchError, match="needs h_a"):
            make_attack(name, downlink_only)


def test_bad_params_and_invert_before_fit():
    with pytest.raises(FlbenchError, match="metric='dot'"):
        make_attack("embedding-nn", metric="dot")
    with pytest.raises(FlbenchError, match="takes no parameter 'sigma'"):
        make_attack("learned-inversion", sigma=1.0)
    with pytest.raises(FlbenchError, match="decoder='big'"):
        make_attack("learned-inversion", decoder="big")
    with pytest.raises(FlbenchError, match="steps=0"):
        make_attack("learned-inversion", steps=0)
    with pytest.raises(FlbenchError, match="target='next'"):
        make_attack("output-inversion", target="current")
    with pytest.raises(FlbenchError, match="before invert"):
        make_attack("embedding-nn").invert(None)


def test_capture_splits_per_sample_and_decode_steps_append(tiny):
    rt = SplitRuntime(tiny, SPLIT)
    obs, ids = capture(rt, ["a", "hello world", "xyz"], batch_size=2)
    assert obs.lengths == [len(i) for i in ids] == [1, 11, 3]
    assert [tuple(h.shape) for h in obs.h_a] == [(n, 64) for n in obs.lengths]
    assert [h.shape[0] for h in obs.h_b] == obs.lengths
    # generation: the prompt's prefill, then one vector per sample per decode step
    import torch

    tap = RecordingTap()
    rt.wire.taps.append(tap)
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    rt.prefill(torch.tensor([[0, 5, 6], [7, 8, 9]]), mask)
    rt.decode(torch.tensor([10, 11]))
    rt.decode(torch.tensor([12, 13]))
    got = observe(tap, observes={"h_a"})
    assert got.lengths == [4, 5] and got.h_b is None and got.available() == {"h_a"}
