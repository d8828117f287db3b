"""`flbench bench`: performance benchmarks, ratios measured side by side in one run."""
from __future__ import annotations

import click

from flbench.cli.common import DEFAULT_MODEL, emit, invocation
from flbench.core.errors import FlbenchError


@click.group()
def bench() -> None:
    """Performance benchmarks: ratios measured side by side in one run."""


@bench.command("inference")
@click.option("--model", default=DEFAULT_MODEL, show_default=True)
@click.option("--split", "split_text", default="2,2", show_default=True)
@click.option("--prompt-tokens", type=int, default=128, show_default=True)
@click.option("--new-tokens", type=int, default=128, show_default=True)
@click.option("--batch-sizes", default="1,4", show_default=True, help="comma-separated")
@click.option("--repeats", type=int, default=2, show_default=True, help="timed repeats per mode (median)")
@click.option("--out", default=None, help="also write the JSON result here (e.g. results/bench/inference.json)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def bench_inference_cmd(model, split_text, prompt_tokens, new_tokens, batch_sizes, repeats, out, as_json) -> None:
    """Centralized vs split KV-cached vs split naive generation tokens/s."""
    from flbench.pipeline.bench import bench_inference, write_result

    try:
        sizes = [int(x) for x in batch_sizes.split(",") if x.strip()]
    except ValueError:
        raise FlbenchError(f"--batch-sizes {batch_sizes!r}: expected comma-separated positive integers") from None
    for name, v in (("--prompt-tokens", prompt_tokens), ("--new-tokens", new_tokens), ("--repeats", repeats)):
        if v < 1:
            raise FlbenchError(f"{name} {v}: must be a positive integer")
    if not sizes or min(sizes) < 1:
        raise FlbenchError(f"--batch-sizes {batch_sizes!r}: expected comma-separated positive integers")
    res = bench_inference(model, split_text, prompt_tokens, new_tokens, sizes, repeats)
    write_result(res, out, invocation())

    def human(o):
        for r in o["results"]:
            t = r["tokens_per_s"]
            click.echo(f"batch {r['batch']}: centralized {t['centralized']:.1f} tok/s, split kv {t['kv-cache']:.1f}, "
                       f"split naive {t['naive']:.1f}; kv/centralized {r['ratio_kv_over_centralized']:.2f}, "
                       f"kv/naive {r['ratio_kv_over_naive']:.2f}, identical tokens: {r['tokens_identical']}")

    emit(res, as_json, human)


@bench.command("training")
@click.option("--model", default=DEFAULT_MODEL, show_default=True)
@click.option("--split", "split_text", default="2,2", show_default=True)
@click.option("--batch", type=int, default=4, show_default=True)
@click.option("--seq-len", type=int, default=128, show_default=True)
@click.option("--steps", type=int, default=5, show_default=True, help="timed steps (median)")
@click.option("--out", default=None, help="also write the JSON result here (e.g. results/bench/training.json)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def bench_training_cmd(model, split_text, batch, seq_len, steps, out, as_json) -> None:
    """Split LoRA training step vs the unsplit model's step, side by side."""
    from flbench.pipeline.bench import bench_training, write_result

    for name, v in (("--batch", batch), ("--seq-len", seq_len), ("--steps", steps)):
        if v < 1:
            raise FlbenchError(f"{name} {v}: must be a positive integer")
    res = bench_training(model, split_text, batch, seq_len, steps)
    write_result(res, out, invocation())

    def human(o):
        t = o["seconds_per_step_median"]
        click.echo(f"split {t['split']:.3f} s/step, centralized {t['centralized']:.3f} s/step "
                   f"(ratio {o['ratio_split_over_centralized_time']:.2f}); wire {o['wire_bytes_per_step']} B/step")

    emit(res, as_json, human)
