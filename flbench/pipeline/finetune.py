"""`flbench train`: split LoRA fine-tuning on a text corpus through the split runtime, defense on the wire.

Saves, under --out: one safetensors file of adapter weights per part (`client{i}.head`, `client{i}.tail`,
`trunk`), `run.json` (config, model identity, split, defense, wire bytes, timings) and `losses.jsonl`.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from flbench.core.errors import FlbenchError
from flbench.models import LoadedModel
from splits.runtime import SplitRuntime
from splits.training import LoraSpec, SequentialTrainer, adapter_state


@dataclass(frozen=True)
class TrainConfig:
    steps: int = field(default=20, metadata={"help": "optimizer steps per client"})
    batch_size: int = field(default=4, metadata={"help": "sequences per batch"})
    max_length: int = field(default=128, metadata={"help": "tokens per sequence (truncation)"})
    lr: float = field(default=2e-4, metadata={"help": "AdamW learning rate"})
    seed: int = field(default=0, metadata={"help": "data order and adapter init"})

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise FlbenchError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be a positive integer")
        if not self.lr > 0:
            raise FlbenchError(f"--lr {self.lr}: must be > 0")


def check_writable(out: Path) -> None:
    """Fail before any work if --out cannot take files (never lose a finished training run)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".flbench-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise FlbenchError(f"--out {str(out)!r} is not writable ({e.strerror or e}); give a writable directory") from None


@dataclass(frozen=True)
class Sample:
    """One training sequence: token ids and how many trailing tokens carry the loss (all of them for plain
    text; only the answer for a task's (context, continuation) pair)."""

    ids: tuple[int, ...]
    n_loss: int


def text_samples(tokenizer, texts: list[str], max_length: int) -> list[Sample]:
    out = []
    for t in texts:
        ids = tokenizer(t, truncation=True, max_length=max_length)["input_ids"]
        if len(ids) >= 2:
            out.append(Sample(tuple(ids), len(ids)))
    if not out:
        raise FlbenchError("no training text of at least two tokens")
    return out


def task_samples(tokenizer, task, examples: list, max_length: int) -> list[Sample]:
    """(context, continuation) pairs of a task's training examples; the loss is on the continuation only
    (the prompt is left-truncated to fit `max_length`, the answer is kept whole)."""
    from flbench.tasks.scoring import encode_pair

    out = []
    for ex in examples:
        context, continuation = task.train_pair(ex)
        req = encode_pair(tokenizer, context, continuation, max_length)
        out.append(Sample(req.ids, req.n_cont))
    if not out:
        raise FlbenchError(f"task {task.name}: no training examples")
    return out


def batches(tokenizer, samples: list[Sample], cfg: TrainConfig, steps: int):
    """`steps` shuffled (seeded), right-padded batches with labels (-100 outside each sample's loss span)."""
    rng = random.Random(cfg.seed)
    order: list[int] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for _ in range(steps):
        while len(order) < cfg.batch_size:
            extra = list(range(len(samples)))
            rng.shuffle(extra)
            order.extend(extra)
        take, order = order[: cfg.batch_size], order[cfg.batch_size:]
        rows = [samples[i] for i in take]
        width = max(len(r.ids) for r in rows)
        ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for j, r in enumerate(rows):
            n = len(r.ids)
            ids[j, :n] = torch.tensor(r.ids)
            mask[j, :n] = 1
            labels[j, n - r.n_loss:n] = ids[j, n - r.n_loss:n]
        yield {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def train(rt: SplitRuntime, samples: list[Sample], cfg: TrainConfig, lora: LoraSpec, out: Path, meta: dict,
          progress: bool = True, centralized: bool = False) -> dict:
    """Fine-tune LoRA adapters on `samples` through the split runtime (defense on the wire), or, with
    `centralized`, on the unsplit model with the same adapters, data order and budget (the reference)."""
    from safetensors.torch import save_file

    from splits.training import CentralizedTrainer

    if not samples:
        raise FlbenchError("no training samples")
    trainer = (CentralizedTrainer if centralized else SequentialTrainer)(rt, lora, lr=cfg.lr, seed=cfg.seed)
    losses = []
    t0 = time.perf_counter()
    n_clients = len(rt.clients)
    desc = "centralized training" if centralized else "split training"
    bar = tqdm(total=cfg.steps * n_clients, desc=desc, unit="step", disable=not progress)
    streams = [batches(rt.loaded.tokenizer, samples[c::n_clients] or samples, cfg, cfg.steps) for c in range(n_clients)]
    for step in range(cfg.steps):
        for c in range(n_clients):  # sequential strategy: clients take turns
            loss = trainer.step(**next(streams[c]), client=c)
            if not math.isfinite(loss):
                raise FlbenchError(f"training diverged at step {step} (loss {loss}); lower --lr (now {cfg.lr})")
            losses.append({"step": step, "client": c, "loss": loss})
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
    bar.close()
    seconds = time.perf_counter() - t0
    if centralized:
        trainer.sync_to_parts()
    for name, part in rt.modules().items():
        state = {k: v.contiguous() for k, v in adapter_state(part).items()}
        if state:
            save_file(state, str(out / f"{name}.safetensors"), metadata={"format": "pt", "part": part.role,
                                                                             "first_block": str(part.first_block)})
    _atomic_write(out / "losses.jsonl", "".join(json.dumps(r) + "\n" for r in losses))
    window = max(1, len(losses) // 10)
    summary = {
        **meta,
        "mode": "centralized" if centralized else "split",
        "train": asdict(cfg),
        "lora": asdict(lora),
        "strategy": "centralized" if centralized else "sequential",
        "clients": n_clients,
        "samples": len(samples),
        "first_loss": losses[0]["loss"],
        "final_loss": losses[-1]["loss"],
        "final_loss_mean_last10pct": sum(r["loss"] for r in losses[-window:]) / window,
        "seconds": round(seconds, 3),
        "wire": rt.wire.stats(),
        "out": str(out),
    }
    _atomic_write(out / "run.json", json.dumps(summary, indent=2, default=str))
    return summary


def model_meta(loaded: LoadedModel, rt: SplitRuntime, defense) -> dict:
    import transformers

    import flbench

    return {
        "model": loaded.identity,
        "split": str(rt.spec),
        "n_blocks": rt.parts.n_blocks,
        "defense": defense.describe(),
        "versions": {"flbench": flbench.__version__, "torch": torch.__version__, "transformers": transformers.__version__},
    }
