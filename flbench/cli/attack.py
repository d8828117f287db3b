"""`flbench attack`: attack the traffic the server saw on victim data, from one typed AttackConfig."""
from __future__ import annotations

import click

from flbench.cli.common import (
    defense_options,
    defense_spec,
    emit,
    compute_options,
    given,
    make_cli_defense,
    parse_kv,
    resolve_devices,
    wire_options,
)
from flbench.core.errors import FlbenchError
from flbench.pipeline.config import (
    DEFAULT_MODEL,
    DEFAULT_SPLIT,
    AttackConfig,
    TaskConfig,
    VictimsConfig,
    default,
)

# config key paths → the options that set them (for one-line errors naming the option)
OPTIONS = {
    "model": "--model", "split": "--split", "attack": "--attack", "params": "--attack-param",
    "defense": "--defense", "defense.params": None, "victims.data": "--data", "victims.data_file": "--data-file",
    "victims.limit": "--limit", "victims.max_length": "--max-length", "victims.aux_data": "--aux-data",
    "victims.aux_limit": "--aux-limit", "victims.releases": "--releases",
    "victims.mode": "--victim-mode", "victims.new_tokens": "--new-tokens", "wire_dtype": "--wire-dtype", "dtype": "--dtype", "seed": "--seed",
}


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="registry name, local directory or HF id")
@click.option("--split", "split_text", default=DEFAULT_SPLIT, show_default=True,
              help="P,Q: blocks in the client head and tail")
@click.option("--attack", "attack_name", default=default(AttackConfig, "attack"), show_default=True,
              help="flbench ls attacks")
@click.option("--attack-param", "attack_params", multiple=True, help="attack parameter key=value (repeatable)")
@click.option("--data", default=default(VictimsConfig, "data"), show_default=True,
              help="victim corpus: private-records, enron")
@click.option("--data-file", default=None, help="victim texts: one per line, or JSONL with a 'text' field "
                                                "(instead of --data)")
@click.option("--aux-data", default=",".join(default(VictimsConfig, "aux_data")), show_default=True,
              help="public auxiliary corpora (comma-separated)")
@click.option("--aux-limit", type=int, default=default(VictimsConfig, "aux_limit"), show_default=True,
              help="auxiliary texts per corpus")
@click.option("--limit", type=int, default=default(VictimsConfig, "limit"), show_default=True, help="victim examples")
@click.option("--max-length", type=int, default=default(VictimsConfig, "max_length"), show_default=True,
              help="victim tokens per example")
@click.option("--releases", type=int, default=default(VictimsConfig, "releases"), show_default=True,
              help="times each victim text crosses the wire (fresh noise each time); attacks combine them")
@click.option("--victim-mode", type=click.Choice(["forward", "generate"]), default=default(VictimsConfig, "mode"),
              show_default=True, help="forward: one forward per text; generate: each text is a chat prompt the "
                                      "victim answers (prompt and answer recovery scored apart)")
@click.option("--new-tokens", type=int, default=default(VictimsConfig, "new_tokens"), show_default=True,
              help="tokens the victim generates per prompt (--victim-mode generate)")
@click.option("--checkpoint", default=None, type=click.Path(file_okay=False),
              help="the victim's fine-tuned adapters (a flbench train --out directory, same model and split); "
                   "the attacker knows only the public weights")
@click.option("--attacker-checkpoint", default=None, type=click.Path(file_okay=False),
              help="adapters the ATTACKER fine-tuned itself (flbench train --out, on public data with the client's "
                   "known recipe, same model and split): attacks that run the head run this surrogate instead of "
                   "the public head (an adaptive attacker against training-time defenses such as NoPeek)")
@click.option("--task", "task_name", default=None,
              help="also score this task's utility through the same split and defense (flbench ls tasks)")
@click.option("--task-limit", type=int, default=default(TaskConfig, "limit"), show_default=True,
              help="eval examples of --task")
@wire_options
@compute_options()
@defense_options
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def attack(model, split_text, attack_name, attack_params, data, data_file, aux_data, aux_limit, limit, max_length,
           releases, victim_mode, new_tokens, checkpoint, attacker_checkpoint, task_name, task_limit, wire_dtype, dtype, device, client_device, server_device, as_json,
           **defense_opts) -> None:
    """Attack the traffic the server saw on victim data; score recovery with 95% bootstrap CIs.

    Everything (names, parameters, data) is validated before the model is loaded."""
    from flbench.pipeline.attack import run_attack
    from flbench.pipeline.config import validate

    victims = {"limit": limit, "max_length": max_length, "aux_limit": aux_limit, "releases": releases,
               "mode": victim_mode, "new_tokens": new_tokens,
               "aux_data": [a.strip() for a in aux_data.split(",") if a.strip()]}
    if data_file is None or given("data"):  # only a --data given explicitly conflicts with --data-file
        victims["data"] = data
    if data_file is not None:
        victims["data_file"] = data_file
    if victim_mode != "generate" and given("new_tokens"):
        raise FlbenchError("--new-tokens applies to --victim-mode generate; add it or drop --new-tokens")
    dspec = defense_spec(**defense_opts)
    cfg = validate(AttackConfig, {
        "model": model, "split": split_text, "defense": {"name": dspec.pop("name"), "params": dspec},
        "attack": attack_name, "params": dict(parse_kv(attack_params)), "victims": victims,
        "wire_dtype": wire_dtype, "dtype": dtype, "seed": defense_opts["seed"]}, options=OPTIONS)
    devices = resolve_devices(device, client_device, server_device)
    for flag, ck in (("--checkpoint", checkpoint), ("--attacker-checkpoint", attacker_checkpoint)):
        if ck is not None:  # a bad directory or another split fails here, before any loading
            from flbench.pipeline.utility import read_checkpoint

            meta = read_checkpoint(ck)
            if meta["split"] != cfg.split:
                raise FlbenchError(f"{flag} {ck!r} was trained at --split {meta['split']}, not {cfg.split}; "
                                   f"give --split {meta['split']} (or move it: flbench repartition)")
    task = None
    if task_name is not None:
        task = validate(TaskConfig, {"name": task_name, "limit": task_limit}, options={"name": "--task",
                                                                                   "limit": "--task-limit"})
    elif given("task_limit"):
        raise FlbenchError("--task-limit applies to --task; give --task NAME (flbench ls tasks) or drop it")
    defense, gen = make_cli_defense(**defense_opts)
    u_defense, u_gen = make_cli_defense(**defense_opts) if task is not None else (None, None)
    res = run_attack(cfg, defense, gen, task=task, utility_defense=u_defense, utility_generator=u_gen,
                     devices=devices, checkpoint=checkpoint, attacker_checkpoint=attacker_checkpoint)

    def human(o):
        snr = (o.get("snr") or {}).get("rms")
        params = ", ".join(f"{k}={v}" for k, v in o["defense_params"].items())
        click.echo(f"{o['attack']} on {o['model']} --split {o['split']}; defense {o['defense']}"
                   f"{f' ({params})' if params else ''}; SNR {'∞' if snr is None else f'{snr:.3g}'} "
                   f"(RMS of h_A / σ, measured on the victim traffic); {o['n']} victims ({o['data']})"
                   + (f", each sent {o['releases']} times" if o.get("releases", 1) > 1 else ""))
        if o.get("epsilon") is not None:
            unit = (o.get("accounting") or {}).get("unit")
            click.echo(f"privacy accounting: ε = {o['epsilon']:.4g}, δ = {o['delta']:g} over {o.get('releases', 1)} "
                       f"release(s)" + (f"; unit: {unit}" if unit else ""))
        click.echo(f"{'metric':16s} {'mean':>7s} {'95% CI':>17s}")
        for k, v in o["metrics"].items():
            if v["mean"] is None:
                click.echo(f"{k:16s} {'n/a':>7s}")
            else:
                click.echo(f"{k:16s} {v['mean']:7.3f}   [{v['ci_low']:.3f}, {v['ci_high']:.3f}]")
        for part, seg in (o.get("segments") or {}).items():
            m = seg["metrics"]["token_accuracy"]
            click.echo(f"{part + ' tokens':16s} {m['mean']:7.3f}   [{m['ci_low']:.3f}, {m['ci_high']:.3f}]  "
                       f"(token accuracy over {seg['tokens']} {part} tokens)")
        for ex in o["examples"]:
            click.echo(f"\n  original : {ex['original']}\n  recovered: {ex['recovered']}")
        u = o.get("utility")
        if u:
            from flbench.pipeline.utility import baselines_text, with_ci

            ci = u.get("ci") or {}
            ms = ", ".join(f"{k} {with_ci(v, ci.get(k))}" for k, v in u["metrics"].items() if isinstance(v, (int, float)))
            base = baselines_text(u.get("baselines"), u["primary"])
            click.echo(f"\nutility through the same split and defense: {u['task']} (n={u['n']}): {ms} (95% CI"
                       + (f"; baselines: {base})" if base else ")"))
        click.echo(f"\nfit {o['seconds']['fit']:.1f} s, invert {o['seconds']['invert']:.1f} s")

    emit(res, as_json, human)
