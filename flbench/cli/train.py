"""`flbench train`: split LoRA fine-tuning with the defense on the wire."""
from __future__ import annotations

import click

from flbench.cli.common import (
    DEFAULT_MODEL,
    DEFAULT_SPLIT,
    POSITIVE_INT,
    FiniteFloatRange,
    defense_options,
    emit,
    make_cli_defense,
    parse_split_option,
    refuse_with,
    wire_options,
)
from flbench.core.errors import FlbenchError
from flbench.pipeline.config import FinetuneConfig, default


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="registry name, local directory or HF id")
@click.option("--split", "split_text", default=DEFAULT_SPLIT, show_default=True, help="P,Q: blocks in the client head and tail")
@click.option("--data-file", type=click.Path(dir_okay=False), default=None,
              help="training text: one text per line, or JSONL with a 'text' field")
@click.option("--task", "task_name", default=None, help="train on a task's fixed training portion (flbench ls tasks); "
              "loss on the answer only")
@click.option("--data-dir", default=None, help="local data directory for --task (default: $FLBENCH_DATA_DIR, ../shared/data)")
@click.option("--centralized", is_flag=True, help="reference run: the unsplit model, same adapters, data and budget")
@click.option("--strategy", type=click.Choice(["sequential"]), default="sequential", show_default=True,
              help="training parallelism (client-batch and server-hierarchical: not yet)")
@click.option("--clients", type=POSITIVE_INT, default=1, show_default=True, help="number of clients (data split round-robin)")
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
@defense_options
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def train(model, split_text, data_file, task_name, data_dir, centralized, strategy, clients, steps, batch_size, max_length,
          lr, lora_rank, lora_alpha, train_parts, out, overwrite, wire_dtype, as_json, **defense_opts) -> None:
    """Split LoRA fine-tuning with the defense active on the wire."""
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
    from splits.training import LoraSpec

    if (data_file is None) == (task_name is None):
        raise FlbenchError("give exactly one of --data-file FILE (plain text) or --task NAME (flbench ls tasks)")
    refuse_with("--data-file", data_file is not None, "data_dir", why="--data-dir is where --task data is looked up")
    refuse_with("--centralized", centralized, "wire_dtype", why="the unsplit model sends nothing over a wire")
    spec = parse_split_option(split_text)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, max_length=max_length, lr=lr, seed=defense_opts["seed"])
    lora = LoraSpec(rank=lora_rank, alpha=lora_alpha, parts=tuple(p.strip() for p in train_parts.split(",") if p.strip()))
    defense, gen = make_cli_defense(**defense_opts)
    if centralized and (defense.name != "none" or clients != 1):
        raise FlbenchError("--centralized trains the unsplit model: no wire for a --defense, one client (--clients 1)")
    out_dir = check_train_out(out, overwrite)
    task = None
    if task_name is not None:
        from flbench.tasks import get_task

        task = get_task(task_name)
        examples = task.load("train", data_dir)  # fails on missing data before the model loads
    else:
        texts = [r.text for r in load_data_file(data_file)]
    loaded = load_model(model)
    spec.validate(len(loaded.model.model.layers))
    check_max_length(loaded, max_length)
    samples = (task_samples(loaded.tokenizer, task, examples, max_length) if task is not None
               else text_samples(loaded.tokenizer, texts, max_length))
    rt = SplitRuntime(loaded, spec, n_clients=clients, wire_dtype=wire_dtype, defense=defense, generator=gen)
    meta = model_meta(loaded, rt, defense)
    meta["data"] = {"task": task_name, "data_file": data_file, "data_dir": data_dir}
    summary = run_train(rt, samples, cfg, lora, out_dir, meta, progress=True, centralized=centralized,
                        overwrite=overwrite)
    summary["defense_stats"] = defense.stats()

    def human(o):
        where = "centralized (unsplit)" if o["mode"] == "centralized" else f"--split {o['split']}"
        click.echo(f"trained {o['clients']} client(s) × {o['train']['steps']} steps, {where}: loss "
                   f"{o['first_loss']:.3f} → {o['final_loss']:.3f} in {o['seconds']:.1f} s; wire "
                   f"{o['wire']['bytes_total']} B; adapters in {o['out']}")

    emit(summary, as_json, human)
