"""`flbench plan`: what each party holds and computes at each split, and what crosses the wire."""
from __future__ import annotations

import click

from flbench.cli.common import DEFAULT_MODEL, DEFAULT_SPLIT, POSITIVE_INT, emit


@click.command("plan", context_settings={"ignore_unknown_options": False})
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="registry name, local directory or HF id")
@click.option("--splits", "split_opts", multiple=True,
              help=f"P,Q splits to compare, e.g. --splits 1,1 2,2 4,4 [default: {DEFAULT_SPLIT}]")
@click.argument("more_splits", nargs=-1, metavar="[P,Q]...")
@click.option("--batch", type=POSITIVE_INT, default=1, show_default=True, help="sequences per batch")
@click.option("--seq-len", type=POSITIVE_INT, default=512, show_default=True, help="tokens per sequence (context T)")
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="dtype of weights, activations and KV cache")
@click.option("--wire-dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default=None,
              help="dtype of the hidden states on the wire [default: --dtype]")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def plan_cmd(model, split_opts, more_splits, batch, seq_len, dtype, wire_dtype, as_json) -> None:
    """Per split and party (client head, server trunk, client tail): parameters, weight / KV-cache /
    training-activation memory, FLOPs per token (forward; training ≈ 3 × forward), and the wire bytes of a
    training step, a prefill and a decode step. The formulas are printed under the table."""
    from flbench.core.errors import FlbenchError
    from flbench.models import load_model
    from flbench.pipeline.plan import plan, plan_table
    from splits.partition import parse_split

    texts = list(split_opts) + list(more_splits) or [DEFAULT_SPLIT]
    specs = [parse_split(t, option="--splits") for t in texts]
    dup = next((str(s) for i, s in enumerate(specs) if s in specs[:i]), None)
    if dup is not None:
        raise FlbenchError(f"--splits {dup}: given twice; list each split once")
    loaded = load_model(model)
    ctx = loaded.context_length
    if ctx is not None and seq_len > ctx:
        raise FlbenchError(f"--seq-len {seq_len}: longer than the model's context of {ctx} positions; accepted 1..{ctx}")
    for s in specs:
        s.validate(len(loaded.model.model.layers))
    result = {"model_name": loaded.name, **plan(loaded.model, specs, batch, seq_len, dtype, wire_dtype)}
    emit(result, as_json, lambda o: click.echo(plan_table(o)))
