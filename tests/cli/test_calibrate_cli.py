"""`flbench calibrate`: strict JSON on stdout; bad input is one line on stderr, exit 2, nothing on stdout; and
`--noise-scale` reaches the gaussian defense through the shared defense options."""
from __future__ import annotations

import json

import pytest

ARGS = ["calibrate", "--model", "tiny-llama", "--split", "2,1", "--limit", "6", "--max-length", "16"]


def test_json(cli):
    code, out, err = cli(*ARGS, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["split"] == "2,1" and res["model"]["name"] == "tiny-llama" and res["n_texts"] == 12
    assert res["token_rms_p05"] <= res["token_rms_median"] <= res["token_rms_p95"]
    assert res["data"] == ["xsum", "sst2"] and res["limit"] == 6 and res["max_length"] == 16


def test_human(cli):
    code, out, err = cli(*ARGS)
    assert code == 0, err
    assert "token_rms_median" in out and "--noise-scale" in out and "first_position_rms_median" in out


@pytest.mark.parametrize("extra,message", [
    (["--split", "2;1"], "--split '2;1' is not accepted; expected \"P,Q\""),
    (["--split", "3,3"], "--split 3,3: the trunk must keep at least one block, so P + Q ≤ 3"),
    (["--data", "xsum,private-records"], "--data xsum,private-records is not accepted; expected public corpora"),
    (["--limit", "0"], "--limit 0 is not accepted; expected an integer >= 1"),
    (["--max-length", "-3"], "--max-length -3 is not accepted; expected an integer >= 1"),
    (["--model", "no-such-model"], "--model no-such-model is not accepted; expected a registered model"),
    (["--limit", "abc"], "'abc' is not a valid integer"),
])
def test_bad_input_is_one_line_exit_2(cli, extra, message):
    code, out, err = cli(*ARGS, *extra, "--json")
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, (code, out, err)
    assert lines[0].startswith("flbench: error: ") and message in lines[0], lines[0]


def test_noise_scale_flag_builds_a_calibrated_gaussian():
    import click
    from click.testing import CliRunner

    from flbench.cli.common import defense_options, make_cli_defense

    @click.command()
    @defense_options
    def probe(**opts):
        d, _ = make_cli_defense(**opts)
        click.echo(json.dumps({"params": d.params(), "sigma_eff": d.noise_scale().value}))

    res = CliRunner().invoke(probe, ["--noise-sigma", "0.5", "--noise-relative", "--noise-scale", "3"],
                             catch_exceptions=False)
    assert json.loads(res.output) == {"params": {"sigma": 0.5, "relative": True, "scale": 3.0}, "sigma_eff": 1.5}


def test_noise_scale_without_relative_is_one_line_exit_2(cli):
    code, out, err = cli("attack", "--model", "tiny-llama", "--split", "0,1",
                         "--noise-sigma", "0.5", "--noise-scale", "3")
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, err
    assert "scale=3.0 (--noise-scale) applies only to a relative sigma" in lines[0]
