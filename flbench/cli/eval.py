"""`flbench eval`: task utility through the split."""
from __future__ import annotations

import click

from flbench.cli.common import (
    DEFAULT_MODEL,
    POSITIVE_INT,
    compute_options,
    defense_options,
    emit,
    make_cli_defense,
    parse_split_option,
    refuse_with,
    resolve_devices,
    wire_options,
)
from flbench.core.errors import FlbenchError
from flbench.pipeline.config import TaskConfig, default


@click.command("eval")
@click.option("--task", "task_name", required=True, help="flbench ls tasks")
@click.option("--model", default=None, help=f"registry name, local directory or HF id [default: {DEFAULT_MODEL}, "
              "or the --checkpoint's model]")
@click.option("--checkpoint", default=None, type=click.Path(file_okay=False),
              help="directory written by flbench train --out (LoRA adapters per part + run.json)")
@click.option("--split", "split_text", default=None, help="P,Q: blocks in the client head and tail [default: 2,2, "
              "or the --checkpoint's split]")
@click.option("--centralized", is_flag=True, help="score the unsplit model instead (same examples, same scoring)")
@click.option("--limit", type=POSITIVE_INT, default=None, help="score only the first N eval examples")
@click.option("--batch-size", type=POSITIVE_INT, default=default(TaskConfig, "batch_size"), show_default=True, help="sequences per forward")
@click.option("--data-dir", default=None, help="local data directory (default: $FLBENCH_DATA_DIR, ../shared/data)")
@wire_options
@compute_options()
@defense_options
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def eval_cmd(task_name, model, checkpoint, split_text, centralized, limit, batch_size, data_dir, wire_dtype, dtype, device,
             client_device, server_device, as_json, **defense_opts) -> None:
    """Task utility through the split (defense on the wire): log-likelihood of verbalised answers for choice
    tasks, KV-cached split generation + ROUGE / CoQA F1 for generative ones."""
    from flbench.models import load_model
    from flbench.pipeline.utility import evaluate, read_checkpoint, summary_line
    from flbench.tasks import get_task

    task = get_task(task_name)
    refuse_with("--centralized", centralized, "wire_dtype", why="the unsplit model sends nothing over a wire")
    devices = resolve_devices(device, client_device, server_device, centralized)
    meta = read_checkpoint(checkpoint) if checkpoint else None
    model = model or (meta["model"].get("name") if meta else None) or DEFAULT_MODEL
    split_text = split_text or (meta["split"] if meta else "2,2")
    spec = parse_split_option(split_text)
    if meta is not None and not centralized:  # repartition on load: refuse a split the adapters cannot move to
        from flbench.pipeline.repartition import check_repartition

        check_repartition(meta, checkpoint, spec)
    defense, gen = make_cli_defense(**defense_opts)
    if centralized and defense.name != "none":
        raise FlbenchError(f"--centralized runs the unsplit model: there is no wire for --defense {defense.name}")
    task.load("eval", data_dir, limit)  # fail on missing data before loading the model
    loaded = load_model(model, dtype=dtype, device=devices["device"])
    res = evaluate(task, loaded, None if centralized else spec, defense, gen, limit, batch_size, data_dir,
                   wire_dtype, checkpoint, progress=True, summary=as_json,
                   client_device=devices["client_device"], server_device=devices["server_device"])
    if not centralized:
        res["defense_stats"] = defense.stats()

    emit(res, as_json, lambda o: click.echo(summary_line(o)))
