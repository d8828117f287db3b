"""A new defense is one file + one registration: it shows up in `flbench ls defenses`, in the CLI's
--defense choices and flags, in a leaderboard row and in the plots, without editing CLI or reporting code.

Runs in a subprocess so the extra registration (and the CLI options built from it at import) cannot leak
into other tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r'''
import json, sys
from dataclasses import dataclass, field

import click
from click.testing import CliRunner

from defenses import ABSOLUTE, BaseDefense, NoiseScale, draw_noise, register
from flbench.core.params import NonNegativeFloat


@register("laplace-ish")
@dataclass
class LaplaceIsh(BaseDefense):
    """Test double: Gaussian noise of std `scale` under another name and family (assumes nothing)."""

    family = "test-noise"
    scale: NonNegativeFloat = field(default=0.0, metadata={"flag": "--test-scale", "help": "noise std"})

    def _apply(self, h, generator):
        noise = draw_noise(h, self.scale, generator)
        self._stats.add(h, noise, self.scale)
        return h + noise

    def noise_scale(self):
        return NoiseScale(self.scale, ABSOLUTE)


from flbench.cli.app import cli  # imported after the registration, like any defense module
from flbench.cli.common import defense_options, make_cli_defense
from flbench.core.errors import FlbenchError


@click.command()
@defense_options
def probe(**opts):
    d, _ = make_cli_defense(**opts)
    click.echo(json.dumps(d.record_block()))


r = CliRunner()
out = {"ls": r.invoke(cli, ["ls", "defenses"]).output,
       "help": r.invoke(cli, ["attack", "--help"]).output,
       "probe": r.invoke(probe, ["--defense", "laplace-ish", "--test-scale", "0.5"]).output}
bad = r.invoke(probe, ["--defense", "gaussian", "--test-scale", "0.5"])
out["bad"] = str(bad.exception) if isinstance(bad.exception, FlbenchError) else repr(bad.exception)
bad = r.invoke(probe, ["--defense", "laplace-ish", "--test-scale", "-1"])
out["bad_value"] = str(bad.exception)

from flbench.reporting import leaderboard as lb
from flbench.reporting.plots import plot_all

def record(defense, params, ap, h):
    cell = {"model": "m", "split": "1,1", "defense": {"name": defense, "params": params}, "task": None,
            "finetune": None, "attacks": ["embedding-nn"], "seed": 0}
    return {"schema": 1, "config_hash": h, "config": cell, "model": {"name": "m"}, "split": "1,1",
            "defense": {"name": defense, "params": params}, "finetune": None, "task": None,
            "attack": {"name": "embedding-nn", "data": "d", "n": 5,
                       "metrics": {"token_accuracy": {"mean": ap, "ci_low": ap - .01, "ci_high": ap + .01}}},
            "wire": {"bytes_total": 1}, "timings": {"total_s": 1.0}}

recs = [record("none", {}, 0.9, "a"), record("laplace-ish", {"scale": 0.5}, 0.5, "b"),
        record("laplace-ish", {"scale": 2.0}, 0.1, "c")]
df = lb.build(recs)
out["rows"] = df[["defense", "noise_sigma", "relative"]].astype(object).where(df.notna(), None).values.tolist()
res = plot_all(df, sys.argv[1])
out["plots"] = sorted(p.name for p in res["paths"])
out["svg"] = next(p.read_text() for p in res["paths"] if p.suffix == ".svg" and "recovery" in p.name)
print(json.dumps(out))
'''


def test_a_new_defense_needs_no_edit_elsewhere(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[2], timeout=600)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert "laplace-ish" in out["ls"] and "[test-noise; --test-scale]" in out["ls"]
    assert "laplace-ish" in out["help"] and "--test-scale" in out["help"] and "laplace-ish: noise std" in out["help"]
    block = json.loads(out["probe"])
    assert block["name"] == "laplace-ish" and block["family"] == "test-noise" and block["noise_sigma"] == 0.5
    assert block["edges"] == ["h_a"] and block["epsilon"] is None and block["accountant"] is None  # defaults
    assert out["bad"].startswith("--test-scale 0.5 does not apply to --defense gaussian (it is a flag of laplace-ish)")
    assert out["bad_value"].startswith("--test-scale -1.0 is not accepted (scale of --defense laplace-ish")
    assert out["rows"] == [["none", 0.0, False], ["laplace-ish", 0.5, False], ["laplace-ish", 2.0, False]]
    assert "recovery_vs_sigma__m__embedding-nn__absolute.svg" in out["plots"]
    assert "laplace-ish" in out["svg"]
