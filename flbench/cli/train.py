"""`flbench train`: split LoRA fine-tuning with the defense on the wire."""
from __future__ import annotations

import click

from flbench.cli.common import (
    DEFAULT_MODEL,
    DEFAULT_SPLIT,
    POSITIVE_INT,
    compute_options,
    FiniteFloatRange,
    defense_options,
    emit,
    grad_defense_options,
    make_cli_defense,
    make_cli_grad_defense,
    parse_split_option,
    pop_grad_options,
    refuse_with,
    resolve_devices,
    wire_options,
)
from flbench.core.errors import FlbenchError
from flbench.pipeline.config import FinetuneConfig, default
from splits.strategies import DEFAULT_SYNC_EVERY, strategies

STRATEGY_HELP = "; ".join(f"{name}: {s.summary}" for name, s in strategies.items())


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="registry name, local directory or HF id")
@click.option("--split", "split_text", default=DEFAULT_SPLIT, show_default=True, help="P,Q: blocks in the client head and tail")
@click.option("--data-file", type=click.Path(dir_okay=False), default=None,
              help="training text: one text per line, or JSONL with a 'text' field")
@click.option("--task", "task_name", default=None, help="train on a task's fixed training portion (flbench ls tasks); "
              "loss on the answer only")
@click.option("--data-dir", default=None, help="local data directory for --task (default: $FLBENCH_DATA_DIR, ../shared/data)")
@click.option("--centralized", is_flag=True, help="reference run: the unsplit model, same adapters, data and budget")
@click.option("--strategy", type=click.Choice(strategies.names()), default="sequential", show_default=True,
              help=f"training parallelism ({STRATEGY_HELP})")
@click.option("--clients", type=POSITIVE_INT, default=1, show_default=True,
              help="number of clients, each training on its own shard of the data (IID unless --non-iid)")
@click.option("--sync-every", type=POSITIVE_INT, default=None,
              help=f"server-hierarchical: FedAvg of trunks and client parts every N rounds (default {DEFAULT_SYNC_EVERY})")
@click.option("--non-iid", "non_iid", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="shard the clients' data by label with Dirichlet(α) (--task with class labels; small α: more skew); "
                   "default IID")
@click.option("--steps", type=POSITIVE_INT, default=default(FinetuneConfig, "steps"), show_default=True, help="optimizer steps per client")
@click.option("--batch-size", type=POSITIVE_INT, default=default(FinetuneConfig, "batch_size"), show_default=True)
@click.option("--max-length", type=click.IntRange(min=2), default=default(FinetuneConfig, "max_length"), show_default=True,
              help="tokens per training sequence (truncation); at most the model's context")
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=default(FinetuneConfig, "lr"), show_default=True,
              help="AdamW learning rate (finite, > 0)")
@click.option("--lora-rank", type=POSITIVE_INT, default=default(FinetuneConfig, "lora_rank"), show_default=True)
@click.option("--lora-alpha", type=FiniteFloatRange(min=0, min_open=True), default=default(FinetuneConfig, "lora_alpha"), show_default=True,
              help="LoRA alpha (finite, > 0; scale = alpha / rank)")
@click.option("--train-parts", default="head,trunk,tail", show_default=True, help="parts with LoRA adapters")
@click.option("--out", type=click.Path(), required=True,
              help="new or empty directory for adapters, run.json and losses.jsonl")
@click.option("--overwrite", is_flag=True, help="replace the --out directory of an earlier run")
@wire_options
@compute_options()
@defense_options
@grad_defense_options
@click.option("--transport", type=click.Choice(["inprocess", "distributed"]), default="inprocess", show_default=True,
              help="inprocess: every party in this process; distributed: the server and each client in their own "
                   "process on this machine, over torch.distributed (gloo, loopback); see flbench serve / client")
@click.option("--timeout", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="--transport distributed: seconds a party waits for a peer [default: 300]")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def train(model, split_text, data_file, task_name, data_dir, centralized, strategy, clients, sync_every, non_iid, steps,
          batch_size, max_length, lr, lora_rank, lora_alpha, train_parts, out, overwrite, wire_dtype, dtype, device,
          client_device, server_device, transport, timeout, as_json, **defense_opts) -> None:
    """Split LoRA fine-tuning with the defense active on the wire (and --grad-defense on the gradient the
    client's tail sends back)."""
    from flbench.data.files import load_data_file
    from flbench.models import load_model
    from flbench.pipeline.finetune import (
        TrainConfig,
        check_max_length,
        check_train_out,
        model_meta,
        task_samples,
        text_samples,
    )
    from flbench.pipeline.finetune import train as run_train
    from splits.runtime import SplitRuntime
    from splits.shards import client_shards
    from splits.training import LoraSpec

    if (data_file is None) == (task_name is None):
        raise FlbenchError("give exactly one of --data-file FILE (plain text) or --task NAME (flbench ls tasks)")
    refuse_with("--data-file", data_file is not None, "data_dir", why="--data-dir is where --task data is looked up")
    refuse_with("--data-file", data_file is not None, "non_iid", why="plain text has no class labels to shard by")
    refuse_with("--centralized", centralized, "wire_dtype", why="the unsplit model sends nothing over a wire")
    refuse_with("--centralized", centralized, "strategy", "sync_every", "non_iid",
                why="the unsplit reference has one data owner and no training strategy")
    refuse_with("--clients 1", clients == 1, "non_iid", why="one client holds all the data")
    grad_opts = pop_grad_options(defense_opts)
    devices = resolve_devices(device, client_device, server_device, centralized)
    spec = parse_split_option(split_text)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, max_length=max_length, lr=lr, seed=defense_opts["seed"],
                      strategy=strategy, sync_every=sync_every, non_iid=non_iid)
    lora = LoraSpec(rank=lora_rank, alpha=lora_alpha, parts=tuple(p.strip() for p in train_parts.split(",") if p.strip()))
    defense, gen = make_cli_defense(**defense_opts)
    grad_defense, grad_gen = make_cli_grad_defense(defense_opts["seed"], defense_opts.get("secure_noise", False),
                                                   **grad_opts)
    if centralized and grad_defense is not None:
        raise FlbenchError(f"--grad-defense {grad_defense.name} has no effect with --centralized (the unsplit model "
                           "sends no gradient over a wire); drop one of them")
    if centralized and (defense.name != "none" or clients != 1):
        raise FlbenchError("--centralized trains the unsplit model: no wire for a --defense, one client (--clients 1)")
    out_dir = check_train_out(out, overwrite)
    refuse_with("--transport inprocess", transport == "inprocess", "timeout", why="only peers in other processes time out")
    task = None
    if task_name is not None:
        from flbench.tasks import get_task

        task = get_task(task_name)
        examples = task.load("train", data_dir)  # fails on missing data before the model loads
        labels = [ex.label for ex in examples]
        if non_iid is not None and min(labels, default=-1) < 0:
            raise FlbenchError(f"--non-iid {non_iid}: task {task_name} has no class labels to shard by (a generate "
                               "task); drop --non-iid or pick a classification task (flbench ls tasks)")
        shards = client_shards(len(examples), clients, cfg.seed, non_iid, labels)  # one sample per example
    else:
        texts = [r.text for r in load_data_file(data_file)]
        client_shards(len(texts), clients, cfg.seed)  # enough texts for every client (checked again after tokenizing)
        shards = None
    if transport == "distributed":
        from flbench.pipeline.distributed import train_distributed

        summary = train_distributed(model=model, spec=spec, clients=clients, cfg=cfg, lora=lora, wire_dtype=wire_dtype,
                                    data_file=data_file, task=task_name, data_dir=data_dir, out_dir=out_dir,
                                    overwrite=overwrite, timeout=timeout, centralized=centralized,
                                    defense=defense, dtype=dtype, devices=devices,
                                    secure_noise=bool(defense_opts.get("secure_noise")), grad_defense=grad_defense)
        emit(summary, as_json, _human)
        return
    loaded = load_model(model, dtype=dtype, device=devices["device"])
    spec.validate(len(loaded.model.model.layers))
    check_max_length(loaded, max_length)
    samples = (task_samples(loaded.tokenizer, task, examples, max_length) if task is not None
               else text_samples(loaded.tokenizer, texts, max_length))
    rt = SplitRuntime(loaded, spec, n_clients=clients, wire_dtype=wire_dtype, defense=defense, generator=gen,
                      client_device=devices["client_device"], server_device=devices["server_device"],
                      grad_defense=grad_defense, grad_generator=grad_gen)
    if clients > 1 and (defense.name != "none" or grad_defense is not None):  # each client its own noise streams,
        # as each client process has
        from flbench.pipeline.distributed import seed_client_generators

        seed_client_generators(rt, cfg.seed, bool(defense_opts.get("secure_noise")))
    meta = model_meta(loaded, rt, defense, grad_defense)
    meta["data"] = {"task": task_name, "data_file": data_file, "data_dir": data_dir}
    summary = run_train(rt, samples, cfg, lora, out_dir, meta, progress=True, centralized=centralized,
                        overwrite=overwrite, shards=shards)
    summary["defense_stats"] = defense.stats()
    if grad_defense is not None:
        summary["grad_defense_stats"] = grad_defense.stats()
    emit(summary, as_json, _human)


def _human(o):
    where = "centralized (unsplit)" if o["mode"] == "centralized" else f"--split {o['split']}"
    click.echo(f"trained {o['clients']} client(s) × {o['train']['steps']} steps ({o['strategy']}), {where}: loss "
               f"{o['first_loss']:.3f} → {o['final_loss']:.3f} in {o['seconds']:.1f} s; wire "
               f"{o['wire']['bytes_total']} B; adapters in {o['out']}")
