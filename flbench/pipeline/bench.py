"""Side-by-side performance benchmarks (ratios measured in one run, never timed unit tests).

`inference`: centralized `generate` vs split KV-cached vs split naive on the same prompts, same process,
modes interleaved within each repeat so that machine noise hits all of them alike. EOS is ignored so every
mode generates exactly `new_tokens` tokens per prompt; the greedy tokens of the three modes are compared.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from flbench.core.canonical import strict_json
from flbench.core.errors import FlbenchError
from flbench.core.io import atomic_write_text
from flbench.models import load_model
from flbench.pipeline.generation import MODES, run_generation
from splits.partition import SplitSpec
from splits.runtime import SplitRuntime


def fixed_prompts(tokenizer, batch: int, n_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` distinct prompts of exactly `n_tokens` tokens: seeded synthetic records, concatenated."""
    from flbench.data.synthetic import private_records

    rows = []
    for b in range(batch):
        text = " ".join(r.text for r in private_records(40, seed=1000 + b))
        ids = tokenizer(text)["input_ids"]
        if len(ids) < n_tokens:
            raise FlbenchError(f"--prompt-tokens {n_tokens}: longer than the built-in benchmark text ({len(ids)})")
        rows.append(ids[:n_tokens])
    ids = torch.tensor(rows, dtype=torch.long)
    return ids, torch.ones_like(ids)


def machine() -> dict:
    import transformers

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def bench_inference(model: str, split: str, prompt_tokens: int, new_tokens: int, batch_sizes: list[int],
                    repeats: int, progress: bool = True, dtype: str = "fp32", devices: dict | None = None) -> dict:
    from splits.partition import parse_split

    spec: SplitSpec = parse_split(split)
    devices = devices or {}
    loaded = load_model(model, dtype=dtype, device=devices.get("device", "cpu"))
    _check_fits(loaded, prompt_tokens + new_tokens, f"--prompt-tokens {prompt_tokens} + --new-tokens {new_tokens}")
    spec.validate(len(loaded.model.model.layers))
    rt = SplitRuntime(loaded, spec, client_device=devices.get("client_device"),
                      server_device=devices.get("server_device"))
    rows = []
    for bs in batch_sizes:
        ids, mask = fixed_prompts(loaded.tokenizer, bs, prompt_tokens)
        for mode in MODES:  # warm-up: allocator, kernels, first-call overheads
            run_generation(loaded, ids[:, :16], mask[:, :16], 4, mode, spec, rt, stop_at_eos=False)
        times: dict[str, list[float]] = {m: [] for m in MODES}
        tokens: dict[str, list] = {}
        wire: dict[str, dict] = {}
        for r in range(repeats):
            for mode in MODES:
                if progress:
                    print(f"[bench] batch {bs} repeat {r + 1}/{repeats}: {mode}", file=sys.stderr, flush=True)
                res = run_generation(loaded, ids, mask, new_tokens, mode, spec, rt, stop_at_eos=False)
                times[mode].append(res.seconds)
                tokens[mode] = res.token_ids
                wire[mode] = res.wire
        tps = {m: bs * new_tokens / statistics.median(t) for m, t in times.items()}
        rows.append({
            "batch": bs,
            "seconds_median": {m: round(statistics.median(t), 4) for m, t in times.items()},
            "seconds_all": {m: [round(x, 4) for x in t] for m, t in times.items()},
            "tokens_per_s": {m: round(v, 3) for m, v in tps.items()},
            "ratio_kv_over_centralized": round(tps["kv-cache"] / tps["centralized"], 4),
            "ratio_kv_over_naive": round(tps["kv-cache"] / tps["naive"], 4),
            "tokens_identical": tokens["kv-cache"] == tokens["centralized"] == tokens["naive"],
            "wire_bytes": {m: wire[m].get("bytes_total", 0) for m in ("kv-cache", "naive")},
            "wire_bytes_per_decode_step": {m: wire[m].get("bytes_per_decode_step", 0) for m in ("kv-cache", "naive")},
        })
    return {
        "benchmark": "inference",
        "model": loaded.identity,
        "compute": {**rt.placement(), "centralized_device": loaded.device},
        "split": str(spec),
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "repeats": repeats,
        "targets": {"ratio_kv_over_centralized": ">= 0.9", "ratio_kv_over_naive": ">= 6"},
        "results": rows,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def resumed(out: str | os.PathLike | None, setting: dict, resume: bool, key: str = "setting") -> dict:
    """The result an earlier run of the same measurement left in `out` (`{}` without --resume or file); a file
    holding another measurement (its `key` block differs from `setting`) stops the run with one line (its rows
    are not comparable)."""
    if not (resume and out and Path(out).is_file()):
        return {}
    old = json.loads(Path(out).read_text())
    if old.get(key) != setting:
        raise SystemExit(f"--resume: {out} holds another measurement ({old.get(key)}); use another --out")
    return old


def portable_argv(argv: list[str], out: str | os.PathLike | None) -> list[str]:
    """`argv` with every absolute path inside the checkout that holds `out` written relative to that checkout's
    root (the directory with `.git` above it), so the recorded command reruns from any clone of the repository
    (e.g. a benchmark run from a second clone that writes into this one)."""
    if not out:
        return list(argv)
    root = Path(out).resolve().parent
    while not (root / ".git").exists():
        if root.parent == root:
            return list(argv)
        root = root.parent
    fixed = []
    for a in argv:
        p = Path(a)
        if p.is_absolute() and p.resolve().is_relative_to(root) and p.resolve() != root:
            a = str(p.resolve().relative_to(root))
        fixed.append(a)
    return fixed


def write_result(result: dict, out: str | None, argv: list[str]) -> None:
    """Record the command in `result` (absolute paths inside the checkout made relative, `portable_argv`) and
    write it (strict JSON) atomically to `out`; a failed write keeps the result in a temp file that the
    FlbenchError names."""
    result["command"] = " ".join(shlex.quote(a) for a in portable_argv(argv, out))
    if out:
        atomic_write_text(out, strict_json(result, indent=2) + "\n")


def _check_fits(loaded, tokens: int, what: str) -> None:
    ctx = loaded.context_length
    if ctx is not None and tokens > ctx:
        raise FlbenchError(f"{what}: {tokens} tokens are longer than the model's context of {ctx} positions")


def bench_training(model: str, split: str, batch: int, seq_len: int, steps: int, progress: bool = True,
                   dtype: str = "fp32", devices: dict | None = None) -> dict:
    """Split LoRA training step vs the same step on the unsplit model with the same adapters, interleaved."""
    from splits.partition import parse_split
    from splits.training import (
        LoraSpec,
        SequentialTrainer,
        causal_lm_loss,
        centralized_twin,
        labels_for,
    )

    spec = parse_split(split)
    devices = devices or {}
    loaded = load_model(model, dtype=dtype, device=devices.get("device", "cpu"))
    _check_fits(loaded, seq_len, f"--seq-len {seq_len}")
    spec.validate(len(loaded.model.model.layers))
    rt = SplitRuntime(loaded, spec, client_device=devices.get("client_device"),
                      server_device=devices.get("server_device"))
    lora = LoraSpec()
    trainer = SequentialTrainer(rt, lora)
    twin = centralized_twin(rt, lora)
    twin.train()
    opt = torch.optim.AdamW([p for p in twin.parameters() if p.requires_grad], lr=trainer.lr)
    ids, mask = fixed_prompts(loaded.tokenizer, batch, seq_len)
    labels = labels_for(ids, mask)

    def central_step() -> None:
        loss = causal_lm_loss(twin(ids, attention_mask=mask).logits, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    central_step()  # warm-up
    trainer.step(ids, mask)
    rt.wire.reset()
    times: dict[str, list[float]] = {"split": [], "centralized": []}
    for s in range(steps):
        if progress:
            print(f"[bench] training step {s + 1}/{steps}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        trainer.step(ids, mask)
        times["split"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        central_step()
        times["centralized"].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "benchmark": "training",
        "model": loaded.identity,
        "compute": {**rt.placement(), "centralized_device": loaded.device},
        "split": str(spec),
        "batch": batch,
        "seq_len": seq_len,
        "steps": steps,
        "lora": {"rank": lora.rank, "alpha": lora.alpha, "parts": list(lora.parts)},
        "seconds_per_step_median": {k: round(v, 4) for k, v in med.items()},
        "ratio_split_over_centralized_time": round(med["split"] / med["centralized"], 4),
        "wire_bytes_per_step": rt.wire.total() // steps,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# ------------------------------------------------------------------ training strategies, side by side

# Where each strategy's parties run in `bench_training_strategies`: in processes where that is the point (the
# sub-server/client pairs of server-hierarchical train in parallel), in this process otherwise.
STRATEGY_TRANSPORT = {"sequential": "inprocess", "client-batch": "inprocess", "server-hierarchical": "distributed"}
TRANSPORT_MODES = ("auto", "inprocess", "distributed")

STRATEGY_TARGETS = {  # the expectations on a 2-core machine (time ratios; < 1 is faster)
    "server-hierarchical K=2: time / sequential K=2": "<= 1/1.7",
    "client-batch K=4: time / sequential K=4": "<= 1/1.2",
    "sequential: time / centralized": "<= 1.15",
}


def strategy_transport(strategy: str, mode: str = "auto") -> str:
    """Where `bench training --strategies` runs a strategy's parties: `mode`, or with "auto" the strategy's
    default (`STRATEGY_TRANSPORT`); the centralized reference always in process."""
    if strategy == "centralized":
        return "inprocess"
    return STRATEGY_TRANSPORT.get(strategy, "inprocess") if mode == "auto" else mode


def check_strategy_grid(names: list[str], clients: list[int], examples: int, batch: int) -> list[str]:
    """The (strategy, K) grid of `bench training --strategies`, checked before any work: known strategies, and
    N examples that split into whole client batches for every K (so every row sees each example once)."""
    from splits.strategies import strategies

    known = strategies.names()
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise FlbenchError(f"--strategies {','.join(bad) or repr('')}: accepted comma-separated names among "
                           f"{', '.join(known)}")
    for k in clients:
        if examples % (k * batch):
            raise FlbenchError(f"--examples {examples}: must be a multiple of --clients × --batch for every K "
                               f"(K={k}: {k}×{batch} = {k * batch}) so that every row trains on each example once")
    return names


def _strategy_row(strategy: str, k: int, transport: str, summary: dict, seconds: float, examples: int,
                  utility: dict, steps: int) -> dict:
    return {
        "strategy": strategy, "clients": k, "transport": transport,
        "processes": (2 * k if strategy == "server-hierarchical" else k + 1) if transport == "distributed" else 1,
        "steps_per_client": steps, "examples_seen": examples,
        "seconds_per_pass": round(seconds, 4),
        "wire_bytes_per_example": round(summary["wire"]["bytes_total"] / examples, 1) if summary.get("wire") else 0,
        "first_loss": summary["first_loss"], "final_loss": summary["final_loss"],
        "final_loss_mean_last10pct": summary["final_loss_mean_last10pct"],
        "metric": utility, "strategy_state": summary.get("strategy_state") or {},
    }


def _with_ratios(rows: list[dict]) -> list[dict]:
    """Each row's time over sequential's with the same K and over centralized's (None when not measured)."""
    seq = {r["clients"]: r["seconds_per_pass"] for r in rows if r["strategy"] == "sequential"}
    cen = next((r["seconds_per_pass"] for r in rows if r["strategy"] == "centralized"), None)
    out = []
    for r in rows:
        s = seq.get(r["clients"]) if r["strategy"] != "centralized" else None
        out.append({**r, "ratio_to_sequential": None if s is None else round(r["seconds_per_pass"] / s, 4),
                    "speedup_over_sequential": None if s is None else round(s / r["seconds_per_pass"], 4),
                    "ratio_to_centralized": None if cen is None else round(r["seconds_per_pass"] / cen, 4)})
    return out


def bench_training_strategies(model: str, split: str, names: list[str], clients: list[int], examples: int,
                              batch: int, seq_len: int, task: str = "sst2", eval_limit: int = 100,
                              lr: float = 1e-3, seed: int = 0, threads: int = 1, data_dir: str | None = None,
                              timeout: float | None = None, progress: bool = True, done: list[dict] | None = None,
                              on_row=None, dtype: str = "fp32", transport: str = "auto") -> dict:
    """One pass over the same N task examples for each (strategy, K) and for the centralized reference, all in
    this one run: seconds per pass (the training loop only), time ratios to sequential (same K) and to
    centralized, wire bytes per example, final training loss and the task's metric on `eval_limit` fixed eval
    examples (client 0's model; after server-hierarchical's final FedAvg every client holds the same one).
    `transport` "auto": server-hierarchical runs its K sub-server/client pairs as 2K local processes
    (`--transport distributed`), the other strategies in this process; "distributed": every strategy's
    parties as local processes (a server and K clients; one core per party); "inprocess": all in this process
    (server-hierarchical's sub-servers then take turns). Centralized always runs here. Every party and this
    process use `threads` torch threads and compute in `dtype`.

    `done`: rows of an earlier run to keep (resume); `on_row(rows)` after each new row (to save progress)."""
    import tempfile
    from dataclasses import asdict
    from pathlib import Path

    from defenses import make_defense
    from flbench.pipeline.distributed import TASK_SAMPLE_SEED, assemble, launch_local, make_job
    from flbench.pipeline.finetune import TrainConfig, check_max_length, model_meta, task_samples, train
    from flbench.pipeline.utility import evaluate
    from flbench.tasks import get_task
    from splits.partition import parse_split
    from splits.training import LoraSpec

    names = check_strategy_grid(names, clients, examples, batch)
    mode = transport
    if mode not in TRANSPORT_MODES:
        raise FlbenchError(f"--transport {mode!r}: accepted {', '.join(TRANSPORT_MODES)}")
    spec = parse_split(split)
    the_task = get_task(task)
    train_examples = the_task.load("train", data_dir, examples, seed=TASK_SAMPLE_SEED)
    if len(train_examples) < examples:
        raise FlbenchError(f"--examples {examples}: task {task} has only {len(train_examples)} training examples")
    the_task.load("eval", data_dir, eval_limit)  # missing eval data fails before any training
    torch.set_num_threads(threads)
    loaded = load_model(model, progress=False, dtype=dtype)
    spec.validate(len(loaded.model.model.layers))
    check_max_length(loaded, seq_len, "--seq-len")
    samples = task_samples(loaded.tokenizer, the_task, train_examples, seq_len)
    lora = LoraSpec()
    rows = list(done or [])
    have = {(r["strategy"], r["clients"]) for r in rows}
    grid = [("centralized", 1)] + [(s, k) for s in names for k in clients]

    def log(msg: str) -> None:
        if progress:
            print(f"[bench] {msg}", file=sys.stderr, flush=True)

    def utility(ckpt: Path) -> dict:
        res = evaluate(the_task, loaded, spec, limit=eval_limit, checkpoint=ckpt, progress=False, summary=False)
        primary = the_task.primary if the_task.primary in res["metrics"] else next(iter(res["metrics"]))
        return {"task": the_task.name, "name": primary, "value": res["metrics"][primary], "n": res["n"],
                "ci": res["ci"].get(primary)}

    with tempfile.TemporaryDirectory(prefix="flbench-bench-") as tmp:
        for i, (strategy, k) in enumerate(grid):
            if (strategy, k) in have:
                continue
            steps = examples // (k * batch)
            cfg = TrainConfig(steps=steps, batch_size=batch, max_length=seq_len, lr=lr, seed=seed,
                              strategy="sequential" if strategy == "centralized" else strategy)
            ckpt = Path(tmp) / f"row{i}"
            transport = strategy_transport(strategy, mode)
            log(f"{strategy} with {k} client(s), {steps} step(s) of {batch} per client ({transport})")
            if transport == "distributed":
                job = make_job(model=model, split=str(spec), clients=k, train=asdict(cfg), lora=asdict(lora),
                               task=task, data_dir=data_dir, task_limit=examples, threads=threads, dtype=dtype)
                launch_local(job, Path(tmp) / f"parts{i}", timeout)
                summary = assemble(Path(tmp) / f"parts{i}", ckpt, job, {"model": loaded.identity, "split": str(spec)})
                seconds = summary["train_seconds"]
            else:
                rt = SplitRuntime(loaded, spec, n_clients=k)
                summary = train(rt, samples, cfg, lora, ckpt, model_meta(loaded, rt, make_defense("none")), progress=False,
                                centralized=strategy == "centralized")
                seconds = summary["seconds"]
            rows.append(_strategy_row(strategy, k, transport, summary, seconds, steps * k * batch, utility(ckpt),
                                      steps))
            log(f"{strategy} K={k}: {seconds:.2f} s per pass, final loss {summary['final_loss_mean_last10pct']:.4f}, "
                f"{rows[-1]['metric']['name']} {rows[-1]['metric']['value']:.3f}")
            if on_row is not None:
                on_row(_with_ratios(rows))
    order = {g: j for j, g in enumerate(grid)}
    rows = sorted(rows, key=lambda r: order.get((r["strategy"], r["clients"]), len(order)))
    return {
        "benchmark": "training_strategies",
        "model": loaded.identity,
        "split": str(spec),
        "task": task,
        "setting": strategy_setting(model, split, names, clients, examples, batch, seq_len, task, eval_limit, lr, seed,
                                    threads, dtype, mode),
        "lora": {"rank": lora.rank, "alpha": lora.alpha, "parts": list(lora.parts)},
        "transports": {s: strategy_transport(s, mode) for s in names},
        "targets": STRATEGY_TARGETS,
        "results": _with_ratios(rows),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def strategy_setting(model: str, split: str, names: list[str], clients: list[int], examples: int, batch: int,
                     seq_len: int, task: str, eval_limit: int, lr: float, seed: int, threads: int,
                     dtype: str = "fp32", transport: str = "auto") -> dict:
    """What makes two `bench training --strategies` results comparable (the `resumed` key; the compute dtype
    and transport only when not the defaults, so results written before they existed still resume)."""
    return {"model": model, "split": split, "strategies": list(names), "clients": list(clients), "examples": examples,
            "batch": batch, "seq_len": seq_len, "task": task, "eval_limit": eval_limit, "lr": lr, "seed": seed,
            "threads": threads, **({"dtype": dtype} if dtype != "fp32" else {}),
            **({"transport": transport} if transport != "auto" else {})}

