"""`flbench attack`: attack the traffic the server saw on victim data."""
from __future__ import annotations

import click

from flbench.cli.common import (
    DEFAULT_MODEL,
    defense_options,
    emit,
    make_cli_defense,
    parse_kv,
    wire_options,
)
from flbench.core.errors import FlbenchError


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="registry name, local directory or HF id")
@click.option("--split", "split_text", default="2,2", show_default=True, help="P,Q: blocks in the client head and tail")
@click.option("--attack", "attack_name", default="learned-inversion", show_default=True, help="flbench ls attacks")
@click.option("--attack-param", "attack_params", multiple=True, help="attack parameter key=value (repeatable)")
@click.option("--data", default="private-records", show_default=True, help="victim corpus: private-records, enron")
@click.option("--data-file", default=None, help="victim texts: one per line, or JSONL with a 'text' field")
@click.option("--aux-data", default="xsum,sst2", show_default=True, help="public auxiliary corpora (comma-separated)")
@click.option("--aux-limit", type=int, default=2000, show_default=True, help="auxiliary texts per corpus")
@click.option("--limit", type=int, default=50, show_default=True, help="victim examples")
@click.option("--max-length", type=int, default=64, show_default=True, help="victim tokens per example")
@wire_options
@defense_options
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def attack(model, split_text, attack_name, attack_params, data, data_file, aux_data, aux_limit, limit, max_length,
           wire_dtype, as_json, **defense_opts) -> None:
    """Attack the traffic the server saw on victim data; score recovery with 95% bootstrap CIs."""
    from flbench.pipeline.attack import AttackConfig, run_attack

    for name, v in (("--limit", limit), ("--aux-limit", aux_limit), ("--max-length", max_length)):
        if v < 1:
            raise FlbenchError(f"{name} {v}: must be a positive integer")
    cfg = AttackConfig(model=model, split=split_text, attack=attack_name, attack_params=parse_kv(attack_params),
                       data=data, data_file=data_file, limit=limit, max_length=max_length, wire_dtype=wire_dtype,
                       aux_data=tuple(a.strip() for a in aux_data.split(",") if a.strip()), aux_limit=aux_limit,
                       seed=defense_opts["seed"])
    defense, gen = make_cli_defense(**defense_opts)
    res = run_attack(cfg, defense, gen)

    def human(o):
        click.echo(f"{o['attack']} on {o['model']} --split {o['split']}, defense {o['defense']} "
                   f"{o['defense_params']}, SNR {o['snr']}, n={o['n']}")
        click.echo(f"{'metric':16s} {'mean':>7s} {'95% CI':>17s}")
        for k, v in o["metrics"].items():
            if v["mean"] is None:
                click.echo(f"{k:16s} {'n/a':>7s}")
            else:
                click.echo(f"{k:16s} {v['mean']:7.3f}   [{v['ci_low']:.3f}, {v['ci_high']:.3f}]")
        for ex in o["examples"]:
            click.echo(f"\n  original : {ex['original']}\n  recovered: {ex['recovered']}")
        click.echo(f"\nfit {o['seconds']['fit']:.1f} s, invert {o['seconds']['invert']:.1f} s")

    emit(res, as_json, human)
