"""`flbench train`: split LoRA fine-tuning on a text corpus through the split runtime, defense on the wire,
with a training strategy (`splits.strategies`: sequential, client-batch, server-hierarchical) over K clients,
each with its own shard of the data (IID, or non-IID by label with Dirichlet(α)).

Saves, under --out: one safetensors file of adapter weights per part (`client{i}.head`, `client{i}.tail`,
`trunk`), `run.json` (config, model identity, split, defense, wire bytes, timings) and `losses.jsonl`.
"""
from __future__ import annotations

import math
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from flbench.core.canonical import strict_json
from flbench.core.errors import FlbenchError
from flbench.core.io import atomic_write_dir, check_output
from flbench.models import LoadedModel
from flbench.pipeline.config import FinetuneConfig, default
from splits.runtime import SplitRuntime
from splits.sequence import pad_rows
from splits.shards import client_shards
from splits.strategies import DEFAULT_SYNC_EVERY, strategies
from splits.training import LoraSpec, adapter_state
from splits.wire import NonFiniteTensorError

# what `train` writes into --out; an --overwrite replaces a directory holding only these
RUN_FILES = re.compile(r"run\.json|losses\.jsonl|trunk\.safetensors|client[0-9]+\.(head|tail)\.safetensors")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = field(default=default(FinetuneConfig, "steps"), metadata={"help": "optimizer steps per client"})
    batch_size: int = field(default=default(FinetuneConfig, "batch_size"), metadata={"help": "sequences per batch"})
    max_length: int = field(default=default(FinetuneConfig, "max_length"),
                            metadata={"help": "tokens per sequence (truncation)"})
    lr: float = field(default=default(FinetuneConfig, "lr"), metadata={"help": "AdamW learning rate"})
    seed: int = field(default=0, metadata={"help": "data order, client shards and adapter init"})
    strategy: str = field(default="sequential", metadata={"help": "training strategy (splits.strategies)"})
    sync_every: int | None = field(default=None, metadata={
        "help": f"server-hierarchical: FedAvg every N rounds (default {DEFAULT_SYNC_EVERY})"})
    non_iid: float | None = field(default=None, metadata={
        "help": "shard the clients' data by label with Dirichlet(α) (tasks with class labels); default IID"})

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise FlbenchError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be a positive integer")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise FlbenchError(f"--lr {self.lr}: must be a finite number > 0")
        strategy = strategies.get(self.strategy)
        if self.sync_every is not None:
            if "sync_every" not in strategy.options:
                takes = ", ".join(s.name for _, s in strategies.items() if "sync_every" in s.options)
                raise FlbenchError(f"--sync-every {self.sync_every} has no effect with --strategy {self.strategy} "
                                   f"(only {takes} averages); drop it")
            if self.sync_every < 1:
                raise FlbenchError(f"--sync-every {self.sync_every}: must be a positive integer")
        if self.non_iid is not None and not (math.isfinite(self.non_iid) and self.non_iid > 0):
            raise FlbenchError(f"--non-iid {self.non_iid}: the Dirichlet concentration α must be a finite number > 0")

    def strategy_options(self) -> dict:
        """The strategy-specific options that were given (the trainer's defaults stand for the others)."""
        return {k: getattr(self, k) for k in strategies.get(self.strategy).options if getattr(self, k) is not None}


def check_train_out(out: str | Path, overwrite: bool = False) -> Path:
    """Refuse, before any work, an --out that cannot take a training run: a file, an unwritable place, a
    non-empty directory without `overwrite`, or (even with it) a directory holding files flbench train did
    not write (replacing the directory would delete them)."""
    out = check_output(out, kind="dir", overwrite=overwrite)
    if overwrite and out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if not RUN_FILES.fullmatch(p.name))
        if foreign:
            raise FlbenchError(f"--out {out}: holds {len(foreign)} file(s) that flbench train did not write "
                               f"(e.g. {foreign[0]!r}); --overwrite replaces only a directory of an earlier run; "
                               "give a new or empty directory")
    return out


def check_max_length(loaded: LoadedModel, max_length: int, option: str = "--max-length") -> None:
    """Training sequences are truncated to `max_length`, which must fit the model's context."""
    ctx = loaded.context_length
    if ctx is not None and max_length > ctx:
        raise FlbenchError(f"{option} {max_length}: longer than the model's context of {ctx} positions; "
                           f"accepted 2..{ctx}")


@dataclass(frozen=True)
class Sample:
    """One training sequence: token ids and how many trailing tokens carry the loss (all of them for plain
    text; only the answer for a task's (context, continuation) pair)."""

    ids: tuple[int, ...]
    n_loss: int
    label: int = -1  # the task example's class label (-1: none, e.g. plain text or a generate task)


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
        out.append(Sample(req.ids, req.n_cont, ex.label))
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
        ids, mask = pad_rows([r.ids for r in rows], int(pad))
        labels = pad_rows([[-100] * (len(r.ids) - r.n_loss) + list(r.ids[len(r.ids) - r.n_loss:]) for r in rows],
                          -100)[0]
        yield {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _first_nonfinite(named) -> str | None:
    """Name of the first trainable parameter holding NaN/Inf, or None."""
    for name, p in named:
        if p.requires_grad and not bool(torch.isfinite(p).all()):
            return name
    return None


def _trainable(rt: SplitRuntime, trainer) -> list:
    if getattr(trainer, "model", None) is not None:  # centralized: the adapters live on the unsplit twin
        return list(trainer.model.named_parameters())
    return [(f"{m}.{n}", p) for m, part in rt.modules().items() for n, p in part.named_parameters()]


def shard_samples(samples: list[Sample], n_clients: int, cfg: TrainConfig) -> list[list[int]]:
    """Each client's sample indices: IID (seeded), or with `cfg.non_iid` = α by label with Dirichlet(α)."""
    if cfg.non_iid is not None and any(s.label < 0 for s in samples):
        raise FlbenchError(f"--non-iid {cfg.non_iid}: the training data has no class labels to shard by "
                           "(plain text or a generate task); drop --non-iid or train on a classification task")
    return client_shards(len(samples), n_clients, cfg.seed, cfg.non_iid, [s.label for s in samples])


def train(rt: SplitRuntime, samples: list[Sample], cfg: TrainConfig, lora: LoraSpec, out: Path, meta: dict,
          progress: bool = True, centralized: bool = False, overwrite: bool = False,
          shards: list[list[int]] | None = None, trace: list | None = None) -> dict:
    """Fine-tune LoRA adapters on `samples` through the split runtime (defense on the wire) with
    `cfg.strategy` over the runtime's clients, each on its own shard (`shards`, else `shard_samples`), or,
    with `centralized`, on the unsplit model with the same adapters, data order and budget (the reference).

    Training stops with a FlbenchError naming the step as soon as the loss or an adapter weight is not finite
    (nothing is saved). The adapters, losses.jsonl and run.json are written to `out` as one unit (see
    `flbench.core.io.atomic_write_dir`): an existing `out` must be empty unless `overwrite`; if the write fails
    the error names where the run was kept.

    `trace`: a list that receives every client batch in the order the clients sent them (round by round,
    client by client: the order of the training forwards on the wire), for scoring attacks on the training
    traffic against what was really sent."""
    from safetensors.torch import save as safetensors_bytes

    from splits.training import CentralizedTrainer

    if not samples:
        raise FlbenchError("no training samples")
    n_clients = len(rt.clients)
    shards = shard_samples(samples, n_clients, cfg) if shards is None else shards
    if len(shards) != n_clients or sorted(i for s in shards for i in s) != list(range(len(samples))):
        raise ValueError(f"shards must give each of the {n_clients} clients disjoint samples covering all {len(samples)}")
    strategy = strategies.get(cfg.strategy)
    examples = tuple(len(s) for s in shards)
    trainer = (CentralizedTrainer(rt, lora, lr=cfg.lr, seed=cfg.seed) if centralized else
               strategy.trainer()(rt, lora, lr=cfg.lr, seed=cfg.seed, client_examples=examples,
                                  **cfg.strategy_options()))
    losses = []
    t0 = time.perf_counter()
    desc = "centralized training" if centralized else f"split training ({cfg.strategy})"
    bar = tqdm(total=cfg.steps * n_clients, desc=desc, unit="step", disable=not progress)
    streams = [batches(rt.loaded.tokenizer, [samples[i] for i in shard], cfg, cfg.steps) for shard in shards]
    params = _trainable(rt, trainer)
    try:
        for step in range(cfg.steps):
            where = f"step {step + 1}/{cfg.steps}"
            try:
                round_batches = [next(s) for s in streams]
                if trace is not None:
                    trace.extend(round_batches)
                round_losses = trainer.train_round(round_batches)
            except NonFiniteTensorError as e:  # activations overflowed before the loss could be computed
                raise FlbenchError(f"training diverged at {where} ({e}); nothing was saved; "
                                   f"lower --lr (now {cfg.lr:g})") from None
            except RuntimeError as e:  # e.g. AdamW's step size lr / (1 - β₁ᵗ) overflowing fp32
                if "overflow" not in str(e):
                    raise
                raise FlbenchError(f"training diverged at {where} (numerical overflow: {str(e).splitlines()[0]}); "
                                   f"nothing was saved; lower --lr (now {cfg.lr:g})") from None
            for c, loss in enumerate(round_losses):
                at = where + (f", client {c}" if n_clients > 1 else "")
                bad = None if math.isfinite(loss) else f"loss {loss}"
                if bad is None and (name := _first_nonfinite(params)) is not None:
                    bad = f"NaN/Inf in adapter weight {name}"
                if bad is not None:
                    raise FlbenchError(f"training diverged at {at} ({bad}); nothing was saved; "
                                       f"lower --lr (now {cfg.lr:g})")
                # a training penalty (NoPeek): "loss" is the client's objective; its terms ride along
                terms = getattr(trainer, "last_terms", {}).get(c, {})
                losses.append({"step": step, "client": c, "loss": loss, **terms})
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
    finally:
        bar.close()
    trainer.finish()
    seconds = time.perf_counter() - t0
    files: dict[str, bytes] = {}
    for name, part in rt.checkpoint_modules().items():
        state = {k: v.contiguous() for k, v in adapter_state(part).items()}
        if any(not bool(torch.isfinite(v).all()) for v in state.values()):  # never save NaN adapters
            raise FlbenchError(f"training produced NaN/Inf adapter weights in {name}; nothing was saved; "
                               f"lower --lr (now {cfg.lr:g})")
        if state:
            files[f"{name}.safetensors"] = safetensors_bytes(
                state, metadata={"format": "pt", "part": part.role, "first_block": str(part.first_block)})
    files["losses.jsonl"] = "".join(strict_json(r) + "\n" for r in losses).encode()
    window = max(1, len(losses) // 10)
    labels = [[samples[i].label for i in shard] for shard in shards]
    summary = {
        **meta,
        "mode": "centralized" if centralized else "split",
        "train": asdict(cfg),
        "lora": asdict(lora),
        "strategy": "centralized" if centralized else cfg.strategy,
        "strategy_state": trainer.describe(),
        "clients": n_clients,
        "samples": len(samples),
        "shards": {"split": "iid" if cfg.non_iid is None else f"dirichlet({cfg.non_iid:g})",
                   "sizes": list(examples),
                   "labels": ([{str(y): ys.count(y) for y in sorted(set(ys))} for ys in labels]
                              if all(y >= 0 for ys in labels for y in ys) else None)},
        "first_loss": losses[0]["loss"],
        "final_loss": losses[-1]["loss"],
        "final_loss_mean_last10pct": sum(r["loss"] for r in losses[-window:]) / window,
        "seconds": round(seconds, 3),
        "wire": rt.wire.stats(),
        "out": str(out),
    }
    files["run.json"] = (strict_json(summary, indent=2, default=str) + "\n").encode()
    atomic_write_dir(out, files, overwrite=overwrite)
    return summary


def model_meta(loaded: LoadedModel, rt: SplitRuntime, defense, grad_defense=None) -> dict:
    import transformers

    import flbench

    return {
        "model": loaded.identity,
        "split": str(rt.spec),
        "n_blocks": rt.parts.n_blocks,
        "compute": rt.placement(),  # compute dtype and devices (the centralized twin: the client's)
        "defense": defense.describe(),
        **({"grad_defense": grad_defense.describe()} if grad_defense is not None else {}),
        "versions": {"flbench": flbench.__version__, "torch": torch.__version__, "transformers": transformers.__version__},
    }
