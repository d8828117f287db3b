import json

import pytest
import torch

from defenses import BaseDefense, defenses, make_defense, make_generator
from flbench.core.errors import FlbenchError


def test_registry_lists_the_builtin_defenses():
    assert {"none", "gaussian", "dp-forward", "dx-privacy", "grad-dp"} <= set(defenses.names())


def test_every_defense_has_an_example(examples):
    assert set(defenses.names()) == set(examples)


def test_duplicate_registration_raises_and_keeps_the_original():
    original = defenses.get("gaussian")
    with pytest.raises(ValueError, match="duplicate defense name 'gaussian'"):
        defenses.register("gaussian")(BaseDefense)
    assert defenses.get("gaussian") is original


def test_unknown_name_and_unknown_param_are_user_errors():
    with pytest.raises(FlbenchError, match="unknown defense 'laplace'.*gaussian"):
        make_defense("laplace")
    with pytest.raises(FlbenchError, match="'none' takes no parameter 'sigma'"):
        make_defense("none", sigma=0.1)
    with pytest.raises(FlbenchError, match="accepted: clip, noise_multiplier, delta, unit$"):
        make_defense("dp-forward", sigma=0.1)


def test_describe_is_json_and_names_params(defense_name, example_defense, examples):
    desc = json.loads(json.dumps(example_defense.describe()))
    assert desc["name"] == defense_name
    for k, v in examples[defense_name].items():
        assert desc["params"][k] == v
    assert desc["repr"] == repr(example_defense)
    assert repr(example_defense).startswith(type(example_defense).__name__ + "(")


def test_make_generator_seeded_is_reproducible_and_secure_is_not():
    a, b = make_generator(7, secure=False), make_generator(7, secure=False)
    assert torch.equal(torch.randn(16, generator=a), torch.randn(16, generator=b))
    s1, s2 = make_generator(None, secure=True), make_generator(None, secure=True)
    assert not torch.equal(torch.randn(16, generator=s1), torch.randn(16, generator=s2))


@pytest.mark.parametrize("seed,secure", [(None, False), (3, True), (-1, False), (2**64, False), (1.5, False),
                                         (True, False)])
def test_make_generator_rejects_bad_input(seed, secure):
    with pytest.raises(FlbenchError, match="seed"):
        make_generator(seed, secure=secure)


def test_missing_generator_falls_back_to_os_seed_and_is_counted():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    d = make_defense("gaussian", sigma=1.0)
    h = torch.zeros(2, 3, 4)
    out1, out2 = d(h, None), d(h)
    assert not torch.equal(out1, out2)
    assert d.stats()["unseeded_calls"] == 2
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG was never touched


@pytest.mark.parametrize("name,params,bad", [
    ("gaussian", {"sigma": -0.1}, "sigma=-0.1"),
    ("gaussian", {"sigma": float("nan")}, "sigma=nan"),
    ("gaussian", {"sigma": float("inf")}, "sigma=inf"),
    ("gaussian", {"sigma": "0.1"}, "sigma='0.1'"),
    ("gaussian", {"sigma": True}, "sigma=True"),
    ("gaussian", {"relative": "yes"}, "relative='yes'"),
    ("dp-forward", {"clip": 0.0}, "clip=0.0"),
    ("dp-forward", {"clip": -1.0}, "clip=-1.0"),
    ("dp-forward", {"clip": float("nan")}, "clip=nan"),
    ("dp-forward", {"noise_multiplier": 0.0}, "noise_multiplier=0.0"),
    ("dp-forward", {"noise_multiplier": -2}, "noise_multiplier=-2"),
    ("dp-forward", {"noise_multiplier": float("nan")}, "noise_multiplier=nan"),
    ("dp-forward", {"delta": 0.0}, "delta=0.0"),
    ("dp-forward", {"delta": 1.0}, "delta=1.0"),
    ("dp-forward", {"delta": 1.5}, "delta=1.5"),
    ("dp-forward", {"delta": float("nan")}, "delta=nan"),
    ("dp-forward", {"unit": "word"}, "unit='word'"),
    ("dx-privacy", {"eta": 0.0}, "eta=0.0"),
    ("dx-privacy", {"eta": float("inf")}, "eta=inf"),
    ("grad-dp", {"clip": -1.0}, "clip=-1.0"),
    ("grad-dp", {"noise_multiplier": 0}, "noise_multiplier=0"),
])
def test_invalid_params_raise_a_user_error_naming_value_and_range(name, params, bad, examples):
    with pytest.raises(FlbenchError) as exc:
        make_defense(name, **{**examples[name], **params})
    msg = str(exc.value)
    assert bad in msg and "accepted" in msg and "\n" not in msg
