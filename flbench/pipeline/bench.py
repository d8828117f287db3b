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


def resumed(out: str, setting: dict, resume: bool) -> dict:
    """The result an earlier run of the same measurement left in `out` (`{}` without --resume or file); a file
    holding another `setting` stops the run with one line (its rows are not comparable)."""
    from pathlib import Path

    path = Path(out)
    if not (resume and path.is_file()):
        return {}
    old = json.loads(path.read_text())
    if old.get("setting") != setting:
        raise SystemExit(f"--resume: {out} holds another measurement ({old.get('setting')}); use another --out")
    return old


def write_result(result: dict, out: str | None, argv: list[str]) -> None:
    """Record the command in `result` and write it (strict JSON) atomically to `out`; a failed write keeps the
    result in a temp file that the FlbenchError names."""
    result["command"] = " ".join(shlex.quote(a) for a in argv)
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
