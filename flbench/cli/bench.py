"""`flbench bench`: performance benchmarks, ratios measured side by side in one run."""
from __future__ import annotations

import click

from flbench.cli.common import (
    DEFAULT_MODEL,
    DEFAULT_SPLIT,
    POSITIVE_INT,
    compute_options,
    IntList,
    emit,
    invocation,
    parse_split_option,
    resolve_devices,
)
from flbench.core.io import check_output

OUT_HELP = "also write the JSON result to this file (e.g. results/bench/{}.json)"


@click.group()
def bench() -> None:
    """Performance benchmarks: ratios measured side by side in one run."""


@bench.command("inference")
@click.option("--model", default=DEFAULT_MODEL, show_default=True)
@click.option("--split", "split_text", default=DEFAULT_SPLIT, show_default=True)
@click.option("--prompt-tokens", type=POSITIVE_INT, default=128, show_default=True)
@click.option("--new-tokens", type=POSITIVE_INT, default=128, show_default=True)
@click.option("--batch-sizes", type=IntList(min=1), default="1,4", show_default=True, help="comma-separated")
@click.option("--repeats", type=POSITIVE_INT, default=2, show_default=True, help="timed repeats per mode (median)")
@compute_options()
@click.option("--out", type=click.Path(), default=None, help=OUT_HELP.format("inference"))
@click.option("--overwrite", is_flag=True, help="replace an existing --out file")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def bench_inference_cmd(model, split_text, prompt_tokens, new_tokens, batch_sizes, repeats, dtype, device,
                        client_device, server_device, out, overwrite, as_json) -> None:
    """Centralized vs split KV-cached vs split naive generation tokens/s."""
    from flbench.pipeline.bench import bench_inference, write_result

    parse_split_option(split_text)
    if out is not None:
        check_output(out, kind="file", overwrite=overwrite)  # before the benchmark, not after it
    devices = resolve_devices(device, client_device, server_device)
    res = bench_inference(model, split_text, prompt_tokens, new_tokens, batch_sizes, repeats, dtype=dtype,
                          devices=devices)
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
@click.option("--split", "split_text", default=DEFAULT_SPLIT, show_default=True)
@click.option("--batch", type=POSITIVE_INT, default=4, show_default=True)
@click.option("--seq-len", type=POSITIVE_INT, default=128, show_default=True)
@click.option("--steps", type=POSITIVE_INT, default=5, show_default=True, help="timed steps (median)")
@compute_options()
@click.option("--out", type=click.Path(), default=None, help=OUT_HELP.format("training"))
@click.option("--overwrite", is_flag=True, help="replace an existing --out file")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def bench_training_cmd(model, split_text, batch, seq_len, steps, dtype, device, client_device, server_device, out,
                       overwrite, as_json) -> None:
    """Split LoRA training step vs the unsplit model's step, side by side."""
    from flbench.pipeline.bench import bench_training, write_result

    parse_split_option(split_text)
    if out is not None:
        check_output(out, kind="file", overwrite=overwrite)
    devices = resolve_devices(device, client_device, server_device)
    res = bench_training(model, split_text, batch, seq_len, steps, dtype=dtype, devices=devices)
    write_result(res, out, invocation())

    def human(o):
        t = o["seconds_per_step_median"]
        click.echo(f"split {t['split']:.3f} s/step, centralized {t['centralized']:.3f} s/step "
                   f"(ratio {o['ratio_split_over_centralized_time']:.2f}); wire {o['wire_bytes_per_step']} B/step")

    emit(res, as_json, human)
