"""The self-description every registered defense gives the harness (family, noise scale, accounting, CLI
flags, record block), checked against what the defense actually does; one shared suite for all."""
from __future__ import annotations

import json
import math

import pytest
import torch

from defenses import ABSOLUTE, RELATIVE_RMS, NoDefense, NoiseScale, defenses, make_defense, make_generator
from flbench.core.params import param_fields

RECORD_KEYS = {"name", "params", "family", "noise_sigma", "noise_unit", "relative", "epsilon", "delta",
               "privacy_unit"}


def _h(shape=(3, 9, 16), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 2.0


def test_every_defense_has_a_zero_strength_entry(zero_strength):
    assert set(zero_strength) == set(defenses.names())


def test_family_noise_scale_and_accounting(defense_name, example_defense):
    cls = defenses.get(defense_name)
    assert isinstance(cls.family, str) and cls.family not in ("", "?")
    scale = example_defense.noise_scale()
    assert isinstance(scale, NoiseScale) and scale.unit in (ABSOLUTE, RELATIVE_RMS)
    assert math.isfinite(scale.value) and scale.value >= 0
    acc = example_defense.accounting(1)
    if acc is not None:
        assert {"epsilon", "delta", "unit", "releases", "accountant"} <= set(acc)
        assert 0 < acc["epsilon"] < math.inf and 0 < acc["delta"] < 1 and acc["releases"] == 1
        assert example_defense.accounting(4)["epsilon"] > acc["epsilon"]  # releases compose
    desc = json.loads(json.dumps(example_defense.describe()))
    assert desc["family"] == cls.family and desc["noise_scale"] == scale.as_dict()
    assert desc["accounting"] == (None if acc is None else json.loads(json.dumps(acc)))


def test_record_block(defense_name, example_defense):
    block = json.loads(json.dumps(example_defense.record_block()))
    assert set(block) == RECORD_KEYS
    assert block["name"] == defense_name and block["params"] == example_defense.params()
    scale = example_defense.noise_scale()
    assert block["noise_sigma"] == scale.value and block["relative"] == scale.relative


def test_noise_scale_is_what_the_defense_adds(defense_name, example_defense, gen):
    """σ from noise_scale() (× RMS(h) when relative) is the noise std the defense really draws."""
    h = _h((4, 32, 64))
    example_defense(h, gen)
    s = example_defense.stats()
    scale = example_defense.noise_scale()
    want = scale.value * (s["signal_rms"] if scale.relative else 1.0)
    assert s["sigma_effective_rms"] == pytest.approx(want, rel=1e-6)
    if want > 0:
        assert s["noise_rms_measured"] == pytest.approx(want, rel=0.05)


def test_zero_strength_is_identity(defense_name, zero_strength, gen):
    params = zero_strength[defense_name]
    if params is None:
        pytest.skip(f"{defense_name} has no zero strength")
    d = make_defense(defense_name, **params)
    assert d.noise_scale().value == 0.0 and d.accounting(1) is None
    h = _h()
    state = gen.get_state()
    assert torch.equal(d(h, gen), h) and torch.equal(gen.get_state(), state)


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
