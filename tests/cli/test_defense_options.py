"""The defense options every command shares are built from what the registered defenses declare; flags the
chosen defense ignores, missing DP parameters and --seed with --secure-noise are one-line errors (exit 2)
before any model is loaded."""
from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from defenses import defenses

BASE = ["attack", "--model", "no-such-model-is-ever-loaded", "--split", "0,1", "--attack", "embedding-nn"]


@pytest.mark.parametrize("extra,message", [
    (["--defense", "dp-forward"],
     "--defense dp-forward needs --dp-clip (L2 clip C of each privacy unit (--dp-unit: an example's h_A, or a "
     "token's): a finite number > 0)"),
    (["--defense", "dp-forward", "--dp-clip", "1"],
     "--defense dp-forward needs --noise-multiplier (noise std = z × C: a finite number > 0)"),
    (["--defense", "dp-forward", "--dp-clip", "1", "--noise-multiplier", "1", "--noise-sigma", "0.5"],
     "--noise-sigma 0.5 does not apply to --defense dp-forward (it is a flag of gaussian); "
     "--defense dp-forward takes --dp-clip, --noise-multiplier, --dp-delta"),
    (["--noise-sigma", "0.5", "--dp-clip", "2"],
     "--dp-clip 2.0 does not apply to --defense gaussian (it is a flag of dp-forward); "
     "--defense gaussian takes --noise-sigma, --noise-relative"),
    (["--noise-relative", "--defense", "none"],
     "--noise-relative does not apply to --defense none (it is a flag of gaussian); --defense none takes no flags"),
    (["--dp-delta", "1e-3"], "--dp-delta 0.001 does not apply to --defense none"),
    (["--seed", "0", "--secure-noise"],
     "--seed 0 has no effect with --secure-noise (the noise generator is seeded from the OS); drop one of them"),
    (["--noise-sigma", "-1"], "--noise-sigma -1.0 is not accepted (sigma of --defense gaussian: noise standard "
                              "deviation σ); expected a finite number ≥ 0"),
    (["--defense", "laplace"], "'laplace' is not one of 'dp-forward', 'dx-privacy', 'gaussian', 'grad-dp', 'none'"),
    (["--defense", "grad-dp"], "grad-dp"),  # a gradient-edge defense on h_A: refused in one line
])
def test_refused_before_any_work(cli, extra, message):
    code, out, err = cli(*BASE, *extra)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flbench: error: ") and message in lines[0], err


def _probe():
    from flbench.cli.common import defense_options, defense_spec, make_cli_defense

    @click.command()
    @defense_options
    def probe(**opts):
        d, gen = make_cli_defense(**opts)
        spec = defense_spec(**opts)
        assert d.name == spec["name"] and all(d.params()[k] == v for k, v in spec.items() if k != "name")
        click.echo(json.dumps({"spec": spec, "seed": None if opts["secure_noise"] else gen.initial_seed()}))

    return probe


@pytest.mark.parametrize("argv,spec", [
    ([], {"name": "none"}),
    (["--noise-sigma", "0.5"], {"name": "gaussian", "sigma": 0.5, "relative": False}),
    (["--noise-sigma", "1", "--noise-relative"], {"name": "gaussian", "sigma": 1.0, "relative": True}),
    (["--defense", "gaussian"], {"name": "gaussian", "relative": False}),
    (["--defense", "dp-forward", "--dp-clip", "2", "--noise-multiplier", "0.5"],
     {"name": "dp-forward", "clip": 2.0, "noise_multiplier": 0.5}),
])
def test_specs(argv, spec):
    res = CliRunner().invoke(_probe(), argv, catch_exceptions=False)
    assert json.loads(res.output) == {"spec": spec, "seed": 0}


def test_secure_noise_without_seed_is_fine():
    res = CliRunner().invoke(_probe(), ["--secure-noise", "--noise-sigma", "1"], catch_exceptions=False)
    assert res.exit_code == 0 and json.loads(res.output)["seed"] is None


def test_every_declared_flag_is_an_option():
    """Each defense's flags are options of the edge(s) it declares: as declared on h_A (--defense), with a
    "--grad-" prefix (unless they have it) on the gradient edge (--grad-defense); never on an edge it does not
    fit. Both options offer every name (a defense on the wrong edge gets a one-line refusal)."""
    from flbench.cli.common import grad_defense_options

    params = {p.opts[0]: p for p in _probe().params}
    grad = {p.opts[0]: p for p in grad_defense_options(click.command()(lambda **kw: None)).params}
    assert list(params)[0] == "--defense" and list(params)[-2:] == ["--seed", "--secure-noise"]
    assert list(params["--defense"].type.choices) == defenses.names() == list(grad["--grad-defense"].type.choices)
    for name, cls in defenses.items():
        edges = getattr(cls, "edges", ("h_a",))
        for f in cls.cli_flags():
            g = f.flag if f.flag.startswith("--grad-") else "--grad-" + f.flag[2:]
            for on, opts, flag in (("h_a" in edges, params, f.flag), ("grad_b" in edges, grad, g)):
                if on:
                    assert flag in opts and f"{name}: {f.help}" in opts[flag].help
                    assert opts[flag].is_flag == f.switch
            if "h_a" not in edges:
                assert f.flag not in params or any(f.flag in [x.flag for x in c.cli_flags()]
                                                   for _, c in defenses.items() if "h_a" in getattr(c, "edges", ("h_a",)))
