"""`flbench run`: one benchmark cell."""
from __future__ import annotations

from pathlib import Path

import click

from flbench.cli.common import (
    DEFAULT_MODEL,
    defense_options,
    defense_spec,
    emit,
    parse_kv,
)
from flbench.core.errors import FlbenchError


def _attack_params(items: tuple[str, ...], attacks: list[str]) -> dict:
    """--attack-param ATTACK.key=value (or key=value when one attack is given) → {attack: {key: value}}."""

    out: dict[str, dict] = {}
    for item in items:
        head, _, rest = item.partition("=")
        if "." in head:
            name, key = head.split(".", 1)
        elif len(attacks) == 1:
            name, key = attacks[0], head
        else:
            raise FlbenchError(f"--attack-param {item!r}: with several attacks write ATTACK.key=value")
        if name not in attacks:
            raise FlbenchError(f"--attack-param {item!r}: attack {name!r} is not among --attack {', '.join(attacks)}")
        out.setdefault(name, {}).update(dict(parse_kv((f"{key}={rest}",))))
    return out



@click.command("run")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="registry name, local directory or HF id")
@click.option("--split", "split_text", default="2,2", show_default=True, help="P,Q: blocks in the client head and tail")
@click.option("--centralized", is_flag=True, help="the unsplit reference cell (no wire: no defense, no attacks)")
@click.option("--task", "task_name", default=None, help="utility task (flbench ls tasks)")
@click.option("--task-limit", type=int, default=100, show_default=True, help="eval examples of the task")
@click.option("--finetune-steps", type=int, default=None, help="LoRA fine-tune on the task's training portion first")
@click.option("--finetune-batch-size", type=int, default=8, show_default=True)
@click.option("--finetune-lr", type=float, default=1e-3, show_default=True)
@click.option("--attack", "attacks", multiple=True, help="attack on the captured traffic (repeatable; flbench ls attacks)")
@click.option("--attack-param", "attack_params", multiple=True, help="ATTACK.key=value (repeatable)")
@click.option("--victims", default="private-records", show_default=True, help="victim corpus the attacks try to recover")
@click.option("--victim-limit", type=int, default=50, show_default=True)
@click.option("--aux-data", default="xsum,sst2", show_default=True, help="public auxiliary corpora for learned attacks")
@defense_options
@click.option("--out", default="results/runs", show_default=True, help="directory for the records")
@click.option("--json", "as_json", is_flag=True, help="print the records as one JSON object on stdout")
def run_cmd(model, split_text, centralized, task_name, task_limit, finetune_steps, finetune_batch_size,
            finetune_lr, attacks, attack_params, victims, victim_limit, aux_data, defense, noise_sigma,
            noise_relative, dp_clip, noise_multiplier, dp_delta, seed, secure_noise, out, as_json) -> None:
    """One benchmark cell: [fine-tune] → utility → capture → attacks; one record per attack under --out."""
    from attacks import attacks as attack_registry
    from flbench.experiments.records import config_hash, write_cell
    from flbench.experiments.sweep import make_cell
    from flbench.pipeline.cell import check_cell, run_cell
    from flbench.tasks import get_task

    if secure_noise:
        raise FlbenchError("--secure-noise: a run record must be reproducible; use --seed")
    for name, v in (("--task-limit", task_limit), ("--victim-limit", victim_limit),
                    ("--finetune-steps", finetune_steps), ("--finetune-batch-size", finetune_batch_size)):
        if v is not None and v < 1:
            raise FlbenchError(f"{name} {v}: must be a positive integer")
    if not task_name and not attacks:
        raise FlbenchError("nothing to run: give --task NAME and/or --attack NAME")
    for a in attacks:
        attack_registry.get(a)
    if task_name:
        get_task(task_name)
    if finetune_steps and not task_name:
        raise FlbenchError("--finetune-steps needs --task (the task's training portion is the data)")
    if not centralized:
        from splits.partition import parse_split

        parse_split(split_text)
    dspec = defense_spec(defense, noise_sigma, noise_relative, dp_clip, noise_multiplier, dp_delta)
    dname = dspec.pop("name")
    if centralized and dname != "none":
        raise FlbenchError(f"--centralized runs the unsplit model: there is no wire for --defense {dname}")
    if centralized and attacks:
        raise FlbenchError("--centralized runs the unsplit model: there is no traffic to --attack")
    cell = make_cell(
        model, None if centralized else split_text, {"name": dname, "params": dspec},
        {"name": task_name, "limit": task_limit} if task_name else None,
        ({"steps": finetune_steps, "batch_size": finetune_batch_size, "lr": finetune_lr} if finetune_steps else None),
        attacks, _attack_params(attack_params, list(attacks)),
        {"data": victims, "limit": victim_limit, "aux_data": [a.strip() for a in aux_data.split(",") if a.strip()]},
        seed)
    check_cell(cell)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = run_cell(cell, progress=True)
    paths = [str(p) for p in write_cell(records, out_dir, config_hash(cell))]
    click.echo(f"[flbench] cell {config_hash(cell)}: {len(records)} record(s) in {out_dir}", err=True)

    def human(o):
        for r in o["records"]:
            parts = [f"split {r['split'] or 'centralized'}", f"defense {r['defense']['name']}"]
            if r["defense"].get("noise_sigma") is not None:
                parts.append(f"σ {r['defense']['noise_sigma']}")
            if r["task"]:
                t = r["task"]
                parts.append(f"{t['name']} {t['primary']} {t['metrics'][t['primary']]:.4f}")
            if r["attack"]:
                m = r["attack"]["metrics"]["token_accuracy"]
                parts.append(f"{r['attack']['name']} token accuracy {m['mean']:.3f} "
                             f"[{m['ci_low']:.3f}, {m['ci_high']:.3f}]")
            click.echo("; ".join(parts))
        click.echo("records: " + ", ".join(o["paths"]))

    emit({"records": records, "paths": paths}, as_json, human)
