"""`flbench run`: one benchmark cell, from one typed RunConfig (flbench.pipeline.config)."""
from __future__ import annotations

import click

from flbench.cli.common import (
    compute_options,
    defense_options,
    defense_spec,
    emit,
    given,
    grad_defense_options,
    grad_defense_spec,
    parse_kv,
    pop_grad_options,
    resolve_devices,
)
from flbench.core.errors import FlbenchError
from flbench.pipeline.config import (
    DEFAULT_MODEL,
    DEFAULT_SPLIT,
    FinetuneConfig,
    TaskConfig,
    VictimsConfig,
    default,
)

# config key paths → the options that set them (for one-line errors naming the option)
OPTIONS = {
    "model": "--model", "split": "--split", "defense": "--defense", "defense.params": None,
    "grad_defense": "--grad-defense", "grad_defense.params": None,
    "task": "--task", "task.name": "--task", "task.limit": "--task-limit", "task.batch_size": "--task-batch-size",
    "finetune": "--finetune-steps", "finetune.steps": "--finetune-steps",
    "finetune.batch_size": "--finetune-batch-size", "finetune.lr": "--finetune-lr",
    "finetune.max_length": "--finetune-max-length", "finetune.lora_rank": "--finetune-lora-rank",
    "finetune.lora_alpha": "--finetune-lora-alpha", "attacks": "--attack", "attack_params": "--attack-param",
    "victims": "--victims", "victims.data": "--victims", "victims.limit": "--victim-limit",
    "victims.max_length": "--victim-max-length", "victims.aux_data": "--aux-data",
    "victims.aux_limit": "--aux-limit", "victims.releases": "--releases",
    "victims.mode": "--victim-mode", "victims.new_tokens": "--victim-new-tokens", "dtype": "--dtype", "seed": "--seed",
    "attacker": "--surrogate-seed", "attacker.seed": "--surrogate-seed", "attacker.task": "--surrogate-task",
}
FINETUNE = {"finetune_batch_size": "batch_size", "finetune_lr": "lr", "finetune_max_length": "max_length",
            "finetune_lora_rank": "lora_rank", "finetune_lora_alpha": "lora_alpha"}
VICTIMS = {"victims": "data", "victim_limit": "limit", "victim_max_length": "max_length", "aux_data": "aux_data",
           "aux_limit": "aux_limit", "releases": "releases", "victim_mode": "mode",
           "victim_new_tokens": "new_tokens"}


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
            raise FlbenchError(f"--attack-param {item!r}: with several attacks (or none) write ATTACK.key=value")
        if name not in attacks:
            raise FlbenchError(f"--attack-param {item!r}: attack {name!r} is not among --attack "
                               f"({', '.join(attacks) or 'none given'})")
        out.setdefault(name, {}).update(dict(parse_kv((f"{key}={rest}",))))
    return out


def _explicit(names) -> list[str]:
    return [n for n in names if given(n)]


@click.command("run")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="registry name, local directory or HF id")
@click.option("--split", "split_text", default=DEFAULT_SPLIT, show_default=True,
              help="P,Q: blocks in the client head and tail")
@click.option("--centralized", is_flag=True, help="the unsplit reference cell (no wire: no defense, no attacks)")
@click.option("--task", "task_name", default=None, help="utility task (flbench ls tasks)")
@click.option("--task-limit", type=int, default=default(TaskConfig, "limit"), show_default=True,
              help="eval examples of the task")
@click.option("--task-batch-size", type=int, default=default(TaskConfig, "batch_size"), show_default=True)
@click.option("--finetune-steps", type=int, default=None,
              help=f"LoRA fine-tune on the task's training portion first (e.g. {default(FinetuneConfig, 'steps')})")
@click.option("--finetune-batch-size", type=int, default=default(FinetuneConfig, "batch_size"), show_default=True)
@click.option("--finetune-lr", type=float, default=default(FinetuneConfig, "lr"), show_default=True)
@click.option("--finetune-max-length", type=int, default=default(FinetuneConfig, "max_length"), show_default=True)
@click.option("--finetune-lora-rank", type=int, default=default(FinetuneConfig, "lora_rank"), show_default=True)
@click.option("--finetune-lora-alpha", type=float, default=default(FinetuneConfig, "lora_alpha"), show_default=True)
@click.option("--attack", "attacks", multiple=True, help="attack on the captured traffic (repeatable; flbench ls attacks)")
@click.option("--attack-param", "attack_params", multiple=True, help="[ATTACK.]key=value (repeatable)")
@click.option("--victims", default=default(VictimsConfig, "data"), show_default=True,
              help="victim corpus the attacks try to recover")
@click.option("--victim-limit", type=int, default=default(VictimsConfig, "limit"), show_default=True)
@click.option("--victim-max-length", type=int, default=default(VictimsConfig, "max_length"), show_default=True,
              help="victim tokens per example")
@click.option("--aux-data", default=",".join(default(VictimsConfig, "aux_data")), show_default=True,
              help="public auxiliary corpora for learned attacks (comma-separated)")
@click.option("--victim-mode", type=click.Choice(["forward", "generate"]), default=default(VictimsConfig, "mode"),
              show_default=True, help="forward: one forward per victim text; generate: each is a chat prompt the "
                                      "victim answers (prompt and answer recovery scored apart)")
@click.option("--victim-new-tokens", type=int, default=default(VictimsConfig, "new_tokens"), show_default=True,
              help="tokens the victim generates per prompt (--victim-mode generate)")
@click.option("--releases", type=int, default=default(VictimsConfig, "releases"), show_default=True,
              help="times each victim text crosses the wire (fresh noise each time); attacks combine them")
@click.option("--aux-limit", type=int, default=default(VictimsConfig, "aux_limit"), show_default=True,
              help="auxiliary texts per corpus")
@click.option("--surrogate-seed", type=int, default=None,
              help="adaptive attacker: it fine-tunes its own copy of the client with the cell's recipe and this seed "
                   "(needs --finetune-steps), and every attack that runs the head runs that copy")
@click.option("--surrogate-task", default=None, help="public task the surrogate trains on [default: --task]")
@defense_options
@grad_defense_options
@compute_options()
@click.option("--out", default="results/runs", show_default=True, help="directory for the records")
@click.option("--json", "as_json", is_flag=True, help="print the records as one JSON object on stdout")
@click.option("--fit-cache", default=None, type=click.Path(file_okay=False),
              help="directory where learned attackers' fits and fine-tuned clients are stored and reused (see "
                   "flbench sweep --fit-cache)")
def run_cmd(model, split_text, centralized, task_name, task_limit, task_batch_size, finetune_steps, attacks,
            attack_params, surrogate_seed, surrogate_task, dtype, device, client_device, server_device, out, as_json,
            fit_cache, **opts) -> None:
    """One benchmark cell: [fine-tune] → utility → capture → attacks; one record per attack under --out.

    Everything is validated (names, parameters, output directory) before the model is loaded."""
    from flbench.core.io import check_output
    from flbench.experiments.records import write_cell
    from flbench.pipeline.cell import run_cell
    from flbench.pipeline.config import RunConfig, validate

    ft_opts = {k: opts.pop(k) for k in FINETUNE}
    grad_opts = pop_grad_options(opts)
    victim_opts = {k: opts.pop(k) for k in VICTIMS}
    if opts.get("secure_noise"):
        raise FlbenchError("--secure-noise: a run record must be reproducible; use --seed")
    stray = _explicit(FINETUNE) if finetune_steps is None else []
    if stray:
        raise FlbenchError(f"--{stray[0].replace('_', '-')} needs --finetune-steps (fine-tuning is off without it)")
    stray = _explicit(VICTIMS) if not attacks else []
    if stray:
        raise FlbenchError(f"--{stray[0].replace('_', '-')} needs --attack (the victims are the attacks' data)")
    if victim_opts["victim_mode"] != "generate" and given("victim_new_tokens"):
        raise FlbenchError("--victim-new-tokens applies to --victim-mode generate; add it or drop --victim-new-tokens")
    if task_name is None and given("task_limit"):
        raise FlbenchError("--task-limit needs --task")
    if not task_name and not attacks:
        raise FlbenchError("nothing to run: give --task NAME and/or --attack NAME")
    if centralized and attacks:
        raise FlbenchError("--centralized runs the unsplit model: there is no traffic to --attack")
    if surrogate_task is not None and surrogate_seed is None:
        raise FlbenchError("--surrogate-task needs --surrogate-seed (the attacker's surrogate head is off without it)")
    dspec = defense_spec(**opts)
    gspec = grad_defense_spec(**grad_opts)
    if gspec["name"] != "none" and (finetune_steps is None or centralized):
        raise FlbenchError(f"--grad-defense {gspec['name']} needs --finetune-steps on a split (it acts on the "
                           "gradient the client sends back during fine-tuning)")
    data = {
        "model": model,
        "split": None if centralized else split_text,
        "defense": {"name": dspec.pop("name"), "params": dspec},
        "grad_defense": {"name": gspec.pop("name"), "params": gspec},
        "task": {"name": task_name, "limit": task_limit, "batch_size": task_batch_size} if task_name else None,
        "finetune": ({"steps": finetune_steps, **{FINETUNE[k]: v for k, v in ft_opts.items()}}
                     if finetune_steps is not None else None),
        "attacks": list(attacks),
        "attack_params": _attack_params(attack_params, list(dict.fromkeys(attacks))),
        "victims": ({**{VICTIMS[k]: v for k, v in victim_opts.items()},
                     "aux_data": [a.strip() for a in victim_opts["aux_data"].split(",") if a.strip()]}
                    if attacks else None),
        "dtype": dtype,
        "seed": opts["seed"],
    }
    if surrogate_seed is not None:
        data["attacker"] = {"head": "surrogate", "seed": surrogate_seed, "task": surrogate_task}
    options = dict(OPTIONS, split="--centralized" if centralized else "--split")
    cfg = validate(RunConfig, data, options=options)
    devices = resolve_devices(device, client_device, server_device, centralized)
    out_dir = check_output(out, kind="dir", existing_dir_ok=True)
    from attacks.fit_cache import open_fit_cache

    cache = open_fit_cache(fit_cache)
    records = run_cell(cfg, progress=True, devices=devices, fit_cache=cache)
    paths = [str(p) for p in write_cell(records, out_dir, cfg.hash)]
    click.echo(f"[flbench] cell {cfg.hash}: {len(records)} record(s) in {out_dir}", err=True)

    from flbench.pipeline.utility import with_ci

    def human(o):
        for r in o["records"]:
            parts = [f"split {r['split'] or 'centralized'}", f"defense {r['defense']['name']}"]
            if r["defense"].get("noise_sigma") is not None:
                parts.append(f"σ {r['defense']['noise_sigma']}")
            if r.get("grad_defense"):
                g = r["grad_defense"]
                parts.append(f"grad-defense {g['name']} σ {g.get('noise_sigma')}")
            if r["task"]:
                t = r["task"]
                u = with_ci(t["metrics"][t["primary"]], (t.get("ci") or {}).get(t["primary"]))
                parts.append(f"{t['name']} {t['primary']} {u} (n={t['n']})")
            if r["attack"]:
                ap = r["attack"].get("primary") or "token_accuracy"
                m = r["attack"]["metrics"][ap]
                parts.append(f"{r['attack']['name']} {ap.replace('_', ' ')} {m['mean']:.3f} "
                             f"[{m['ci_low']:.3f}, {m['ci_high']:.3f}]")
                la = r["attack"]["metrics"].get("label_accuracy")
                if isinstance(la, dict) and la.get("mean") is not None:  # gradient attacks on training traffic
                    chance = r["attack"]["metrics"].get("label_chance")
                    parts.append(f"label accuracy {la['mean']:.3f}"
                                 + (f" (chance {chance:.3f})" if isinstance(chance, (int, float)) else ""))
            click.echo("; ".join(parts))
        click.echo("records: " + ", ".join(o["paths"]))

    emit({"records": records, "paths": paths}, as_json, human)
