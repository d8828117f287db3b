"""The self-description every registered defense gives the harness (family, noise scale, accounting, CLI
flags, record block), checked against what the defense actually does; one shared suite for all."""
from __future__ import annotations

import json
import math
from itertools import pairwise

import pytest
import torch

from defenses import (
    EDGES,
    NOISE_UNITS,
    NoDefense,
    NoiseScale,
    defenses,
    make_defense,
    make_generator,
)
from flbench.core.errors import FlbenchError
from flbench.core.params import field_info, param_fields

RECORD_KEYS = {"name", "params", "family", "edges", "noise_sigma", "noise_unit", "relative", "epsilon", "delta",
               "privacy_unit", "releases", "accountant"}


def _h(shape=(3, 9, 16), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 2.0


def test_every_defense_has_zero_strength_and_ladder_entries(zero_strength, strengths):
    assert set(zero_strength) == set(defenses.names()) == set(strengths)


def test_family_edges_summary(defense_name):
    cls = defenses.get(defense_name)
    assert isinstance(cls.family, str) and cls.family not in ("", "?")
    assert isinstance(cls.edges, tuple) and cls.edges and set(cls.edges) <= set(EDGES)
    assert cls.summary() and "\n" not in cls.summary()


def test_family_noise_scale_and_accounting(defense_name, example_defense):
    cls = defenses.get(defense_name)
    scale = example_defense.noise_scale()
    assert isinstance(scale, NoiseScale) and scale.unit in NOISE_UNITS
    assert math.isfinite(scale.value) and scale.value >= 0
    acc = example_defense.accounting(1)
    if acc is not None:
        assert {"epsilon", "delta", "unit", "releases", "accountant"} <= set(acc)
        assert 0 < acc["epsilon"] < math.inf and 0 <= acc["delta"] < 1 and acc["releases"] == 1
        assert isinstance(acc["unit"], str) and acc["unit"] and isinstance(acc["accountant"], str)
        assert example_defense.accounting(4)["epsilon"] > acc["epsilon"]  # releases compose
        assert example_defense.accounting(0)["epsilon"] == 0.0
        with pytest.raises(FlbenchError, match="releases=-1"):
            example_defense.accounting(-1)
    desc = json.loads(json.dumps(example_defense.describe()))
    assert desc["family"] == cls.family and desc["noise_scale"] == scale.as_dict()
    assert desc["edges"] == list(cls.edges)
    assert desc["accounting"] == (None if acc is None else json.loads(json.dumps(acc)))


def test_record_block(defense_name, example_defense):
    block = json.loads(json.dumps(example_defense.record_block(releases=3)))
    assert set(block) == RECORD_KEYS
    assert block["name"] == defense_name and block["params"] == example_defense.params()
    scale = example_defense.noise_scale()
    assert block["noise_sigma"] == scale.value and block["relative"] == scale.relative
    assert block["noise_unit"] == scale.unit and block["edges"] == list(example_defense.edges)
    acc = example_defense.accounting(3)
    if acc is None:
        assert all(block[k] is None for k in ("epsilon", "delta", "privacy_unit", "releases", "accountant"))
    else:  # the record states the privacy unit, the releases composed, (ε, δ) and the accountant
        assert (block["epsilon"], block["delta"], block["privacy_unit"], block["releases"], block["accountant"]) == \
            (acc["epsilon"], acc["delta"], acc["unit"], 3, acc["accountant"])


def test_noise_scale_is_what_the_defense_adds(defense_name, example_defense, gen):
    """noise_scale() (× RMS(h) when relative; × √(d+1) for 1/η) is the noise std the defense really draws."""
    h = _h((4, 32, 64))
    example_defense(h, gen)
    s = example_defense.stats()
    scale = example_defense.noise_scale()
    want = scale.per_coordinate_std(64, s["signal_rms"])
    assert s["sigma_effective_rms"] == pytest.approx(want, rel=1e-6)
    if want > 0:
        assert s["noise_rms_measured"] == pytest.approx(want, rel=0.05)


def test_zero_strength_is_identity(defense_name, zero_strength, gen):
    params = zero_strength[defense_name]
    if isinstance(params, str):
        pytest.skip(f"{defense_name} has no zero strength: {params}")
    d = make_defense(defense_name, **params)
    assert d.noise_scale().value == 0.0 and d.accounting(1) is None
    h = _h()
    state = gen.get_state()
    assert torch.equal(d(h, gen), h) and torch.equal(gen.get_state(), state)


def test_noise_grows_with_strength(defense_name, strengths):
    """Along the defense's ladder (weakest first) the noise it draws grows, what it sends moves further from h,
    and a formal ε (if any) falls."""
    ladder = strengths[defense_name]
    if isinstance(ladder, str):
        pytest.skip(f"{defense_name}: {ladder}")
    h = _h((4, 32, 64))
    noise, moved, eps = [], [], []
    for params in ladder:
        d = make_defense(defense_name, **params)
        out = d(h, make_generator(7))
        noise.append(d.stats()["noise_rms_measured"])
        moved.append(float((out - h).square().mean().sqrt()))
        acc = d.accounting(1)
        eps.append(None if acc is None else acc["epsilon"])
    assert all(a < b for a, b in pairwise(noise)), noise
    assert all(a < b for a, b in pairwise(moved)), moved
    if eps[0] is not None:
        assert all(a > b for a, b in pairwise(eps)), eps


def _bad_values(info) -> list:
    """Values a parameter must refuse, from its annotation and constraints (as tests/core/test_params.py)."""
    import typing

    ann = info.annotation
    if typing.get_origin(ann) is typing.Literal:
        return ["no-such-choice", 1]
    if ann is bool:
        return ["yes", 1]
    out: list = ["abc", True, None]
    for m in info.metadata:
        for attr, delta in (("ge", -1), ("gt", 0), ("le", 1), ("lt", 0)):
            bound = getattr(m, attr, None)
            if bound is not None:
                out.append(bound + delta if delta else bound)
        if getattr(m, "allow_inf_nan", True) is False:
            out += [math.nan, math.inf]
    return out


def test_bad_parameters_are_one_line_errors(defense_name, examples):
    cls = defenses.get(defense_name)
    for f in param_fields(cls):
        for bad in _bad_values(field_info(cls, f.name)):
            with pytest.raises(FlbenchError) as e:
                make_defense(defense_name, **{**examples[defense_name], f.name: bad})
            msg = str(e.value)
            assert f"{f.name}={bad!r} is not accepted; expected " in msg and "\n" not in msg, msg
            with pytest.raises(FlbenchError):  # direct construction is validated too
                cls(**{**examples[defense_name], f.name: bad})


def test_every_parameter_declares_a_cli_flag(defense_name):
    cls = defenses.get(defense_name)
    flags = cls.cli_flags()
    assert [f.param for f in flags] == [f.name for f in param_fields(cls)]
    assert all(f.flag.startswith("--") and f.help for f in flags)
    assert len({f.flag for f in flags}) == len(flags)


def test_flags_shared_between_defenses_agree_on_type():
    seen: dict[str, tuple] = {}
    for name, cls in defenses.items():
        for f in cls.cli_flags():
            kind = (f.switch, f.annotation)
            assert seen.setdefault(f.flag, kind) == kind, (f.flag, name)


def test_exactly_one_none_family_and_it_is_the_identity():
    assert [n for n, cls in defenses.items() if cls.family == "none"] == ["none"]
    assert defenses.get("none") is NoDefense
    h = _h()
    assert make_defense("none")(h, make_generator(0)) is h


def test_importing_defenses_does_not_import_torch():
    """The CLI builds its options from the defense classes; `flbench --help` must not pay for torch."""
    import subprocess
    import sys

    code = "import sys, defenses; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_defense_flags_do_not_collide_with_other_cli_options():
    """Every command's options are distinct once the defenses' flags are added (click would silently let a
    later duplicate shadow an earlier one)."""
    import click

    from flbench.cli.app import cli

    def walk(cmd, path):
        opts = [o for p in cmd.params for o in (*p.opts, *getattr(p, "secondary_opts", ())) if o.startswith("-")]
        dup = sorted({o for o in opts if opts.count(o) > 1})
        assert not dup, (path, dup)
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), f"{path} {name}")

    walk(cli, "flbench")
