"""`flbench bench`: performance benchmarks, ratios measured side by side in one run."""
from __future__ import annotations

import click

from flbench.cli.common import (
    DEFAULT_MODEL,
    DEFAULT_SPLIT,
    POSITIVE_INT,
    FiniteFloatRange,
    IntList,
    compute_options,
    emit,
    invocation,
    parse_split_option,
    refuse_with,
    resolve_devices,
)
from flbench.core.errors import FlbenchError
from flbench.core.io import check_output
from splits.strategies import strategies as _strategies

STRATEGIES = _strategies.names()
# --strategies defaults (the options default to None so that the one-step comparison's recorded command, which
# spells out every option that has a value, stays free of them)
SD = {"clients": [2, 4], "examples": 64, "task_name": "sst2", "eval_limit": 100, "lr": 1e-3, "seed": 0, "threads": 1}
ONE_STEP_ONLY = ("--steps", "--dtype", "--device", "--client-device", "--server-device")

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
@click.option("--batch", type=POSITIVE_INT, default=4, show_default=True, help="sequences per (client) batch")
@click.option("--seq-len", type=POSITIVE_INT, default=128, show_default=True,
              help="tokens per sequence (with --strategies: the truncation length of the task's examples)")
@click.option("--steps", type=POSITIVE_INT, default=5, show_default=True, help="timed steps (median; not with --strategies)")
@click.option("--strategies", default=None,
              help=f"compare training strategies instead of one step: comma-separated among {', '.join(STRATEGIES)}; "
                   "one pass over --examples task examples per (strategy, --clients K), centralized beside them")
@click.option("--clients", type=IntList(min=1), default=None,
              help=f"--strategies: numbers of clients, comma-separated [default: {SD['clients']}]")
@click.option("--examples", type=POSITIVE_INT, default=None,
              help=f"--strategies: training examples per pass, a multiple of K × --batch for every K "
                   f"[default: {SD['examples']}]")
@click.option("--task", "task_name", default=None, help=f"--strategies: the task trained and scored [default: {SD['task_name']}]")
@click.option("--eval-limit", type=POSITIVE_INT, default=None,
              help=f"--strategies: fixed eval examples scored after the pass (the task metric) [default: {SD['eval_limit']}]")
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help=f"--strategies: AdamW learning rate [default: {SD['lr']}]")
@click.option("--seed", type=int, default=None, help=f"--strategies: data order, shards, adapter init [default: {SD['seed']}]")
@click.option("--threads", type=POSITIVE_INT, default=None,
              help=f"--strategies: torch threads of this process and of every party process [default: {SD['threads']}]")
@click.option("--data-dir", default=None, help="--strategies: local data directory for --task")
@click.option("--timeout", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="--strategies: seconds a party process waits for a peer [default: 300]")
@click.option("--resume", is_flag=True, help="--strategies: keep the rows an earlier run of the same setting left in --out")
@click.option("--transport", type=click.Choice(["auto", "inprocess", "distributed"]), default=None,
              help="--strategies: where the parties run; auto: server-hierarchical's pairs as processes, the other "
                   "strategies in this process; distributed: every strategy's parties as local processes (one core "
                   "per party); inprocess: all in this process [default: auto]")
@compute_options()
@click.option("--out", type=click.Path(), default=None, help=OUT_HELP.format("training"))
@click.option("--overwrite", is_flag=True, help="replace an existing --out file")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def bench_training_cmd(model, split_text, batch, seq_len, steps, strategies, clients, examples, task_name, eval_limit,
                       lr, seed, threads, data_dir, timeout, resume, transport, dtype, device, client_device,
                       server_device, out, overwrite, as_json) -> None:
    """Split LoRA training step vs the unsplit model's step, side by side; with --strategies, one pass over a
    fixed set of examples per training strategy and number of clients, centralized beside them."""
    from flbench.pipeline.bench import bench_training, write_result

    parse_split_option(split_text)
    refuse_with("the one-step comparison (no --strategies)", strategies is None, "clients", "examples", "task_name",
                "eval_limit", "lr", "seed", "threads", "data_dir", "timeout", "resume", "transport",
                why="these options set up the --strategies comparison")
    if strategies is not None:
        _bench_strategies(model, split_text, batch, seq_len, strategies, clients, examples, task_name, eval_limit, lr,
                          seed, threads, data_dir, timeout, resume, out, overwrite, as_json, dtype, device,
                          client_device, server_device, transport or "auto")
        return
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


def _bench_strategies(model, split_text, batch, seq_len, strategies, clients, examples, task_name, eval_limit, lr, seed,
                      threads, data_dir, timeout, resume, out, overwrite, as_json, dtype, device, client_device,
                      server_device, transport="auto") -> None:
    from flbench.pipeline.bench import (
        bench_training_strategies,
        check_strategy_grid,
        machine,
        resumed,
        strategy_setting,
        write_result,
    )
    from flbench.tasks import get_task

    refuse_with("--strategies", True, "steps", why="each strategy trains one pass over --examples")
    if device != "cpu" or client_device or server_device:
        raise FlbenchError("--strategies runs every party on the CPU (the distributed transport's parties are "
                           "there); drop --device/--client-device/--server-device")
    clients = SD["clients"] if clients is None else clients
    examples = SD["examples"] if examples is None else examples
    task_name = task_name or SD["task_name"]
    eval_limit = eval_limit or SD["eval_limit"]
    lr = SD["lr"] if lr is None else lr
    seed = SD["seed"] if seed is None else seed
    threads = threads or SD["threads"]
    names = check_strategy_grid(strategies.split(","), clients, examples, batch)
    get_task(task_name)
    if resume and out is None:
        raise FlbenchError("--resume needs --out FILE (the result of the earlier run to continue)")
    if out is not None:
        check_output(out, kind="file", overwrite=overwrite or resume)
    setting = strategy_setting(model, split_text, names, clients, examples, batch, seq_len, task_name, eval_limit, lr,
                               seed, threads, dtype, transport)
    try:
        done = resumed(out, setting, resume).get("results", []) if out is not None else []
    except SystemExit as e:
        raise FlbenchError(str(e)) from None
    argv = _without(invocation(), tuple(o for o in ONE_STEP_ONLY if o != "--dtype" or dtype == "fp32"))

    def save(rows: list[dict]) -> None:
        if out is not None:
            write_result({"benchmark": "training_strategies", "setting": setting, "partial": True, "results": rows,
                          "machine": machine()}, out, argv)

    res = bench_training_strategies(model, split_text, names, clients, examples, batch, seq_len, task=task_name,
                                    eval_limit=eval_limit, lr=lr, seed=seed, threads=threads, data_dir=data_dir,
                                    timeout=timeout, done=done, on_row=save, dtype=dtype, transport=transport)
    write_result(res, out, argv)

    def human(o):
        for r in o["results"]:
            vs = "" if r["ratio_to_sequential"] is None else f", ×{r['speedup_over_sequential']:.2f} vs sequential"
            m = r["metric"]
            click.echo(f"{r['strategy']:<20} K={r['clients']} ({r['transport']}): {r['seconds_per_pass']:.2f} s/pass"
                       f"{vs}, {r['ratio_to_centralized']:.2f}× centralized; {r['wire_bytes_per_example']:.0f} B/example; "
                       f"loss {r['final_loss_mean_last10pct']:.4f}; {m['task']} {m['name']} {m['value']:.3f} (n={m['n']})")

    emit(res, as_json, human)


def _without(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """`argv` without the given options and their values (every option here takes one value)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in options:
            skip = True
        else:
            out.append(a)
    return out
