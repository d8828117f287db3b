"""The one parameter validator (flbench.core.params) and its one-line errors, over every registered defense
and attack: bad types, out-of-range values, unknown keys and missing required parameters."""
from __future__ import annotations

import math
import typing
from typing import Annotated, Literal

import pytest
from pydantic import Field

from attacks import attacks, make_attack
from defenses import defenses, make_defense
from flbench.core.errors import FlbenchError
from flbench.core.params import (
    PositiveInt,
    UnitIntervalOpen,
    check_params,
    check_value,
    expected,
    field_info,
    is_required,
    param_fields,
)

# Parameters a registered class requires (no default) get these values when another parameter is tested.
REQUIRED = {"dp-forward": {"clip": 1.0, "noise_multiplier": 1.0}, "dx-privacy": {"eta": 1.0},
            "grad-dp": {"clip": 1.0, "noise_multiplier": 1.0}, "nopeek": {"weight": 1.0}}


@pytest.mark.parametrize("annotation,text", [
    (PositiveInt, "an integer ≥ 1"),
    (Annotated[float, Field(ge=0, allow_inf_nan=False)], "a finite number ≥ 0"),
    (UnitIntervalOpen, "a number in (0, 1)"),
    (Annotated[float, Field(ge=0, lt=1)], "a number in [0, 1)"),
    (Literal["cosine", "l2"], "one of 'cosine', 'l2'"),
    (bool, "true or false"),
    (int | None, "an integer or null"),
])
def test_expected_says_what_is_accepted(annotation, text):
    assert expected(annotation) == text


@pytest.mark.parametrize("value", ["abc", 0, -5, 1.5, True, None])
def test_check_value_one_line(value):
    with pytest.raises(FlbenchError) as e:
        check_value("attack 'embedding-nn'", "chunk", value, PositiveInt)
    assert str(e.value) == f"attack 'embedding-nn': chunk={value!r} is not accepted; expected an integer ≥ 1"


def test_ints_become_floats_and_strict_types():
    assert check_value("x", "lr", 1, Annotated[float, Field(gt=0)]) == 1.0
    assert isinstance(check_value("x", "lr", 1, Annotated[float, Field(gt=0)]), float)
    for bad in ("1", True):
        with pytest.raises(FlbenchError):
            check_value("x", "lr", bad, Annotated[float, Field(gt=0)])


def _bad_values(info) -> list:
    """Values a parameter must refuse, derived from its annotation and constraints."""
    ann = info.annotation
    if typing.get_origin(ann) is Literal:
        return ["no-such-choice", 1]
    if ann is bool:
        return ["yes", 1]
    if ann is str:
        return [1]
    args = typing.get_args(ann)
    optional = type(None) in args  # `X | None`: None is a valid value (e.g. "derive it")
    if optional:
        ann = next(a for a in args if a is not type(None))
    out: list = ["abc", True] + ([] if optional else [None])
    if ann is int:
        out.append(1.5)
    for m in info.metadata:
        for attr, delta in (("ge", -1), ("gt", 0), ("le", 1), ("lt", 0)):
            bound = getattr(m, attr, None)
            if bound is not None:
                out.append(bound + delta if ann is int or delta else bound)
        if getattr(m, "allow_inf_nan", True) is False:
            out += [math.nan, math.inf]
    return out


def _cases():
    for kind, registry in (("defense", defenses), ("attack", attacks)):
        for name, cls in registry.items():
            for f in param_fields(cls):
                for bad in _bad_values(field_info(cls, f.name)):
                    yield pytest.param(kind, name, f.name, bad, id=f"{kind}-{name}-{f.name}={bad!r}")


def _make(kind: str, name: str, **params):
    return make_defense(name, **params) if kind == "defense" else make_attack(name, None, **params)


def test_every_class_has_parameters_to_check():
    cases = list(_cases())
    for kind, registry in (("defense", defenses), ("attack", attacks)):
        for name, cls in registry.items():
            if param_fields(cls):
                assert any(c.values[:2] == (kind, name) for c in cases), name


@pytest.mark.parametrize("kind,name,param,bad", list(_cases()))
def test_bad_value_is_one_line_naming_parameter_and_accepted(kind, name, param, bad):
    with pytest.raises(FlbenchError) as e:
        _make(kind, name, **{**REQUIRED.get(name, {}), param: bad})
    msg = str(e.value)
    want = expected(field_info(defenses.get(name) if kind == "defense" else attacks.get(name), param))
    assert msg == f"{kind} {name!r}: {param}={bad!r} is not accepted; expected {want}"
    assert "\n" not in msg


@pytest.mark.parametrize("kind,name", [("defense", n) for n in defenses.names()] + [("attack", n) for n in attacks.names()])
def test_unknown_key_and_defaults(kind, name):
    cls = defenses.get(name) if kind == "defense" else attacks.get(name)
    accepted = ", ".join(f.name for f in param_fields(cls)) or "(none)"
    with pytest.raises(FlbenchError) as e:
        _make(kind, name, **REQUIRED.get(name, {}), bogus=1)
    assert str(e.value) == f"{kind} {name!r} takes no parameter 'bogus'; accepted: {accepted}"
    obj = _make(kind, name, **REQUIRED.get(name, {}))  # valid defaults pass their own validator
    checked = check_params("x", cls, obj.params())
    # params() may leave out a parameter at its neutral default (so older records keep their exact config):
    # the validator fills it back with that default, nothing else changes
    defaults = {f.name: f.default for f in param_fields(cls)}
    assert {k: v for k, v in checked.items() if k in obj.params()} == obj.params()
    assert all(checked[k] == defaults[k] for k in checked if k not in obj.params())


def test_missing_required_parameters_are_named():
    required = [(n, f.name) for n, cls in defenses.items() for f in param_fields(cls) if is_required(f)]
    assert ("dp-forward", "clip") in required and ("dp-forward", "noise_multiplier") in required
    for name, param in required:
        params = {k: v for k, v in REQUIRED[name].items() if k != param}
        with pytest.raises(FlbenchError, match=rf"^defense '{name}': {param} is required; expected a finite"):
            make_defense(name, **params)


def test_direct_construction_is_validated_too():
    from attacks import EmbeddingNN
    from defenses import GaussianNoise

    with pytest.raises(FlbenchError, match="sigma=-1"):
        GaussianNoise(sigma=-1)
    with pytest.raises(FlbenchError, match="chunk=0"):
        EmbeddingNN(chunk=0)
    assert GaussianNoise(sigma=1).sigma == 1.0 and isinstance(GaussianNoise(sigma=1).sigma, float)
