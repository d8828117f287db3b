"""`flbench train`: split LoRA fine-tuning on a text corpus through the split runtime, defense on the wire.

Saves, under --out: one safetensors file of adapter weights per part (`client{i}.head`, `client{i}.tail`,
`trunk`), `run.json` (config, model identity, split, defense, wire bytes, timings) and `losses.jsonl`.
"""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from flbench.errors import FlbenchError
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


def batches(tokenizer, texts: list[str], cfg: TrainConfig, steps: int):
    """Endless shuffled right-padded batches (seeded), `steps` of them."""
    rng = random.Random(cfg.seed)
    order: list[int] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for _ in range(steps):
        if len(order) < cfg.batch_size:
            extra = list(range(len(texts)))
            rng.shuffle(extra)
            order.extend(extra * max(1, cfg.batch_size // max(1, len(texts))))
        take, order = order[: cfg.batch_size], order[cfg.batch_size:]
        rows = [tokenizer(texts[i], truncation=True, max_length=cfg.max_length)["input_ids"] for i in take]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = torch.tensor(r)
            mask[j, : len(r)] = 1
        yield {"input_ids": ids, "attention_mask": mask}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def train(rt: SplitRuntime, texts: list[str], cfg: TrainConfig, lora: LoraSpec, out: Path, meta: dict,
          progress: bool = True) -> dict:
    from safetensors.torch import save_file

    if not texts:
        raise FlbenchError("no training texts")
    trainer = SequentialTrainer(rt, lora, lr=cfg.lr, seed=cfg.seed)
    losses = []
    t0 = time.perf_counter()
    n_clients = len(rt.clients)
    bar = tqdm(total=cfg.steps * n_clients, desc="split training", unit="step", disable=not progress)
    streams = [batches(rt.loaded.tokenizer, texts[c::n_clients] or texts, cfg, cfg.steps) for c in range(n_clients)]
    for step in range(cfg.steps):
        for c in range(n_clients):  # sequential strategy: clients take turns
            loss = trainer.step(**next(streams[c]), client=c)
            losses.append({"step": step, "client": c, "loss": loss})
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
    bar.close()
    seconds = time.perf_counter() - t0
    for name, part in rt.modules().items():
        state = {k: v.contiguous() for k, v in adapter_state(part).items()}
        if state:
            save_file(state, str(out / f"{name}.safetensors"), metadata={"format": "pt", "part": part.role,
                                                                             "first_block": str(part.first_block)})
    _atomic_write(out / "losses.jsonl", "".join(json.dumps(r) + "\n" for r in losses))
    summary = {
        **meta,
        "train": asdict(cfg),
        "lora": asdict(lora),
        "strategy": "sequential",
        "clients": n_clients,
        "first_loss": losses[0]["loss"],
        "final_loss": losses[-1]["loss"],
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
