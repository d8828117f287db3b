"""The two parallel training strategies of FL-LLaMA (§training parallelism), on the sequential set-up of
`splits.training` (LoRA per part, one AdamW per party, every message over the wire).

client-batch: every client sends its HIDDEN_A on its own link; the server concatenates the K clients'
hidden states along the batch, runs ONE trunk forward, answers each client with its slice, then takes the
K GRAD_B, runs ONE trunk backward and returns each client its slice of dL/dh_A. The trunk's objective is
the sum of the clients' losses (each a mean over that client's labelled tokens): so client c's head and
tail get exactly the gradient of its own loss, and the trunk exactly the gradient of one step on the
concatenated batch with that loss. Every party steps once per round.

server-hierarchical: one sub-server per client, each with its own trunk copy, trained with its client
(sequential steps on the pair; in this single process the pairs run in turn; with `--transport distributed`
each pair runs in its own processes, in parallel: `flbench.pipeline.distributed`, `splits.distributed.FedAvg`). Every `sync_every` rounds the trunks, the heads and the tails are each replaced by their
average weighted by the clients' example counts (FedAvg, McMahan et al. 2017) and redistributed; each
party keeps its own optimizer state. The client parts' average is the job of an aggregator the split
server does not see (it must not learn the clients' adapters): its traffic is counted in `describe()`,
not on the split wire (whose taps are the attacker's view).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from flbench.core.errors import FlbenchError
from splits.strategies import DEFAULT_SYNC_EVERY
from splits.training import SequentialTrainer, causal_lm_loss, labels_for


@dataclass
class ClientBatchTrainer(SequentialTrainer):
    """Client-batch: one trunk forward/backward over the K clients' concatenated hidden states per round."""

    def train_round(self, batches: list[dict]) -> list[float]:
        rt = self.rt
        cids = list(range(len(batches)))
        logits = rt.train_forward_batch([(c, b["input_ids"], b["attention_mask"]) for c, b in zip(cids, batches)])
        losses = []
        for c, lg, b in zip(cids, logits, batches):
            labels = b.get("labels")
            loss = causal_lm_loss(lg, labels if labels is not None else labels_for(b["input_ids"], b["attention_mask"]))
            loss.backward()
            losses.append(self._add_penalty(c, loss))
        rt.backward_batch(cids)
        for opt in self.optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        return losses


@dataclass
class HierarchicalTrainer(SequentialTrainer):
    """Server-hierarchical: a sub-server trunk per client, FedAvg of trunks and client parts every
    `sync_every` rounds (weighted by `client_examples`, equal weights when not given)."""

    sync_every: int = DEFAULT_SYNC_EVERY
    rounds: int = field(default=0, init=False)
    syncs: int = field(default=0, init=False)
    aggregation_bytes: dict = field(default_factory=lambda: {"clients": 0, "sub_servers": 0}, init=False)

    def _prepare(self) -> None:
        if self.sync_every < 1:
            raise FlbenchError(f"--sync-every {self.sync_every}: must be a positive integer")
        k = len(self.rt.clients)
        if self.client_examples is not None and (len(self.client_examples) != k or min(self.client_examples) < 1):
            raise FlbenchError(f"FedAvg weights {self.client_examples}: need a positive example count per client ({k})")
        self.rt.use_sub_servers()

    def local_round(self, batches: list[dict]) -> list[float]:
        """Every client trains one step with its own sub-server (no averaging)."""
        return [self.step(b["input_ids"], b["attention_mask"], b.get("labels"), client=c) for c, b in enumerate(batches)]

    def train_round(self, batches: list[dict]) -> list[float]:
        losses = self.local_round(batches)
        self.rounds += 1
        if self.rounds % self.sync_every == 0:
            self.sync()
        return losses

    def finish(self) -> None:
        if self.rounds % self.sync_every:  # the trained model is the average: sync what is left
            self.sync()

    def weights(self) -> list[float]:
        counts = self.client_examples or (1,) * len(self.rt.clients)
        total = float(sum(counts))
        return [c / total for c in counts]

    @torch.no_grad()
    def sync(self) -> None:
        """FedAvg: each group of copies (trunks, heads, tails) ← their example-weighted average."""
        w = self.weights()
        groups = {"trunk": [s.trunk for s in self.rt.servers], "head": [c.head for c in self.rt.clients],
                  "tail": [c.tail for c in self.rt.clients]}
        for role, parts in groups.items():
            params = [{n: p for n, p in part.named_parameters() if "lora_" in n} for part in parts]
            if len(params) != len(w):  # one trunk serving every client: nothing to average
                continue
            for name in params[0]:
                avg = sum(wi * ps[name] for wi, ps in zip(w, params))
                for ps in params:
                    ps[name].copy_(avg)
            nbytes = sum(p.numel() * p.element_size() for p in params[0].values())
            self.aggregation_bytes["sub_servers" if role == "trunk" else "clients"] += 2 * len(parts) * nbytes
        self.syncs += 1

    def describe(self) -> dict:
        return {"sync_every": self.sync_every, "syncs": self.syncs, "fedavg_weights": self.weights(),
                "aggregation_bytes": dict(self.aggregation_bytes)}
