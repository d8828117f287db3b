"""The training strategies by name (`flbench train --strategy`), without importing torch: each entry says
what it does, which strategy-specific options it takes, and where its trainer lives (loaded on use).

A trainer is built as `Trainer(rt, lora, lr=..., seed=..., client_examples=..., **options)` and offers
`train_round(batches)` (one step of every client: `batches[c]` is client c's batch; returns the losses),
`finish()` (after the last round) and `describe()` (what a run record should say about it).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from flbench.core.registry import Registry

DEFAULT_SYNC_EVERY = 1  # server-hierarchical: FedAvg after every round unless --sync-every says otherwise


@dataclass(frozen=True)
class Strategy:
    name: str
    summary: str
    trainer_path: str  # "module:Class"
    options: tuple[str, ...] = ()  # TrainConfig fields only this strategy uses, e.g. "sync_every"

    def trainer(self) -> type:
        module, cls = self.trainer_path.split(":")
        return getattr(importlib.import_module(module), cls)


strategies: Registry[Strategy] = Registry("strategy")

for _s in (
    Strategy("sequential", "clients take turns on the one trunk; each party steps after every client batch",
             "splits.training:SequentialTrainer"),
    Strategy("client-batch", "the server concatenates the clients' hidden states along the batch: one trunk "
             "forward/backward per round, gradients split back", "splits.multiclient:ClientBatchTrainer"),
    Strategy("server-hierarchical", "a sub-server trunk per client, trained with its client; FedAvg of trunks and "
             "client parts (weighted by examples) every --sync-every rounds", "splits.multiclient:HierarchicalTrainer",
             ("sync_every",)),
):
    strategies.register(_s.name)(_s)
