"""Split fine-tuning with LoRA adapters per part (peft) and AdamW, sequential strategy.

Sequential strategy (FL-LLaMA, §training parallelism): clients take turns; for each client batch
    head → h_A → wire → trunk → h_B → wire → tail + loss
    tail → dL/dh_B → wire → trunk → dL/dh_A → wire → head
then every party steps its own optimizer. The client owns one AdamW over its head+tail adapters, the
server one over the trunk's adapters; parties never see each other's parameters. The other strategies
(`splits.multiclient`) reuse this set-up; `splits.strategies` names them.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model

from flbench.core.errors import FlbenchError
from splits.runtime import SplitRuntime

PART_NAMES = ("head", "trunk", "tail")


@dataclass(frozen=True)
class LoraSpec:
    rank: int = field(default=8, metadata={"help": "LoRA rank r"})
    alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    target_modules: tuple[str, ...] = field(default=("q_proj", "v_proj"), metadata={"help": "Linear layers to adapt"})
    parts: tuple[str, ...] = field(default=PART_NAMES, metadata={"help": "which parts train: head, trunk, tail"})

    def __post_init__(self) -> None:
        bad = [p for p in self.parts if p not in PART_NAMES]
        if bad:
            raise FlbenchError(f"--train-parts {','.join(bad)}: accepted parts are {', '.join(PART_NAMES)}")
        if self.rank < 1:
            raise FlbenchError(f"--lora-rank {self.rank}: must be a positive integer")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise FlbenchError(f"--lora-alpha {self.alpha}: must be a finite number > 0")
        if not 0 <= self.dropout < 1:
            raise FlbenchError(f"LoRA dropout {self.dropout}: must be in [0, 1)")

    def peft_config(self) -> LoraConfig:
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules))


def _freeze(module: torch.nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def apply_lora(rt: SplitRuntime, lora: LoraSpec, seed: int = 0) -> dict[str, list[torch.nn.Parameter]]:
    """Inject adapters into the chosen parts (seeded init, identical for every client); freeze the rest.

    Returns the trainable parameters per party: {"client0": [...], ..., "server": [...]} (with sub-servers,
    "server0", "server1", ... instead of "server").
    """
    params: dict[str, list[torch.nn.Parameter]] = {"server": []}
    for name, part in rt.modules().items():
        _freeze(part)
        if part.role in lora.parts and part.n_blocks:
            torch.manual_seed(seed + part.first_block)  # same init for the same blocks on every client / sub-server
            inject_adapter_in_model(lora.peft_config(), part)
            for n, p in part.named_parameters():
                p.requires_grad_("lora_" in n)
                if "lora_" in n and p.dtype != torch.float32:  # fp32 master weights under a bf16/fp16 part
                    p.data = p.data.float()
        party = party_of(name)
        params.setdefault(party, []).extend(p for p in part.parameters() if p.requires_grad)
    if not any(params.values()):
        raise FlbenchError(
            f"nothing to train: parts {','.join(lora.parts)} hold no blocks at --split {rt.spec}"
        )
    return params


def party_of(module_name: str) -> str:
    """"trunk" → "server", "server1.trunk" → "server1", "client0.head" → "client0"."""
    return module_name.split(".")[0] if "." in module_name else "server"


def global_name(part_role: str, first_block: int, local: str) -> str:
    """Map a part's parameter name to the unsplit model's name (for checkpoints and comparisons)."""
    if local.startswith("layers."):
        _, idx, rest = local.split(".", 2)
        return f"model.layers.{first_block + int(idx)}.{rest}"
    if local.startswith(("embed_tokens.", "norm.")):
        return f"model.{local}"
    return local  # lm_head.*, rotary buffers are not parameters


def adapter_state(part: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in part.named_parameters() if "lora_" in n}


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions (labels = -100 elsewhere), as transformers."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def labels_for(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Labels for next-token loss: a token counts only if it and its predecessor are real tokens, so that
    with left padding no pad position is asked to predict a sample's first token."""
    prev = torch.nn.functional.pad(attention_mask[:, :-1], (1, 0))
    return input_ids.masked_fill((attention_mask == 0) | (prev == 0), -100)


@dataclass
class SequentialTrainer:
    """Sequential strategy: clients take turns; each party steps its own AdamW after every batch."""

    rt: SplitRuntime
    lora: LoraSpec = field(default_factory=LoraSpec)
    lr: float = 2e-4
    weight_decay: float = 0.0
    seed: int = 0
    client_examples: tuple[int, ...] | None = None  # training examples each client holds (FedAvg weights)
    optimizers: dict[str, torch.optim.Optimizer] = field(init=False)
    # per client, the last step's loss terms when its defense adds a training penalty (NoPeek):
    # {"lm_loss", "penalty", and what the defense's `penalty_info()` reports, e.g. "dcor"}; {} otherwise
    last_terms: dict[int, dict] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._prepare()
        params = apply_lora(self.rt, self.lora, self.seed)
        self.optimizers = {
            party: torch.optim.AdamW(ps, lr=self.lr, weight_decay=self.weight_decay)
            for party, ps in params.items() if ps
        }
        for part in self.rt.modules().values():
            part.train()

    def step(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
             client: int = 0) -> float:
        if labels is None:
            labels = labels_for(input_ids, attention_mask)
        logits, template = self.rt.train_forward(input_ids, attention_mask, client)
        loss = causal_lm_loss(logits, labels)
        loss.backward()
        total = self._add_penalty(client, loss)
        self.rt.backward(client, template)
        server = "server" if len(self.rt.servers) == 1 else f"server{client}"
        for party, opt in self.optimizers.items():
            if party in (server, f"client{client}"):
                opt.step()
                opt.zero_grad(set_to_none=True)
        return total

    def _add_penalty(self, client: int, loss: torch.Tensor) -> float:
        """After the tail's `loss.backward()`: backpropagate the client defense's training penalty (if it asks
        for one, e.g. NoPeek) into the head, keeping the head's graph for the server's dL/dh_A that follows
        (the two gradients add: the client's objective is loss + penalty). Returns the objective's value."""
        c = self.rt.clients[client]
        penalty = c.training_penalty()
        if penalty is None:
            self.last_terms[client] = {}
            return float(loss.detach())
        if penalty.requires_grad:
            penalty.backward(retain_graph=True)
        info = getattr(c.defense, "penalty_info", dict)()
        self.last_terms[client] = {**info, "lm_loss": float(loss.detach()), "penalty": float(penalty.detach())}
        return float(loss.detach()) + float(penalty.detach())

    def round(self, batches: Iterable[tuple[int, dict]]) -> list[float]:
        """One pass in which clients take turns: `batches` yields (client, batch)."""
        return [self.step(b["input_ids"], b["attention_mask"], b.get("labels"), client=c) for c, b in batches]

    # the strategy interface (see splits.strategies)
    def _prepare(self) -> None:
        """Shape the runtime for the strategy before adapters are injected (sub-servers, ...)."""

    def train_round(self, batches: list[dict]) -> list[float]:
        """One training step of every client: `batches[c]` is client c's batch; returns their losses."""
        return self.round(enumerate(batches))

    def finish(self) -> None:
        """After the last round (e.g. a final FedAvg sync)."""

    def describe(self) -> dict:
        return {}


def centralized_twin(rt: SplitRuntime, lora: LoraSpec, client: int = 0) -> Any:
    """The unsplit model carrying the same adapters (same values) as `client`'s split, for equivalence checks."""
    model = copy.deepcopy(rt.loaded.model)
    _freeze(model)
    inject_adapter_in_model(lora.peft_config(), model.model)
    trained = {}
    for name, part in rt.modules().items():
        if party_of(name) not in ("server", f"server{client}", f"client{client}"):
            continue  # other clients' parts, other sub-servers' trunks
        for n, t in adapter_state(part).items():
            trained[global_name(part.role, part.first_block, n)] = t
    for n, p in model.named_parameters():
        if "lora_" in n:
            if n in trained:
                with torch.no_grad():
                    p.copy_(trained[n])
                p.requires_grad_(True)
            else:
                with torch.no_grad():
                    p.zero_()
                p.requires_grad_(False)
    return model


@dataclass
class CentralizedTrainer:
    """The unsplit reference for split fine-tuning: the same adapters (same seeded init, same parts) on the
    whole model, one AdamW, no wire and no defense. AdamW updates every parameter independently, so one
    optimizer over all adapters equals the parties' separate optimizers; what differs from
    SequentialTrainer is only the wire (dtype rounding, the defense's noise) and the separate graphs.

    `sync_to_parts()` copies the trained values back into the runtime's parts, so a centralized run is saved
    (and later loaded with `--checkpoint`) exactly like a split run."""

    rt: SplitRuntime
    lora: LoraSpec = field(default_factory=LoraSpec)
    lr: float = 2e-4
    weight_decay: float = 0.0
    seed: int = 0
    model: Any = field(init=False)
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        if len(self.rt.clients) != 1:
            raise FlbenchError("centralized training has one data owner: use --clients 1")
        apply_lora(self.rt, self.lora, self.seed)
        self.model = centralized_twin(self.rt, self.lora)
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    def step(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
             client: int = 0) -> float:
        if labels is None:
            labels = labels_for(input_ids, attention_mask)
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        loss = causal_lm_loss(logits, labels)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def train_round(self, batches: list[dict]) -> list[float]:
        return [self.step(b["input_ids"], b["attention_mask"], b.get("labels")) for b in batches]

    def finish(self) -> None:
        self.sync_to_parts()

    def describe(self) -> dict:
        return {}

    def sync_to_parts(self) -> None:
        trained = dict(self.model.named_parameters())
        for part in self.rt.modules().values():
            for n, p in part.named_parameters():
                if "lora_" in n:
                    with torch.no_grad():
                        p.copy_(trained[global_name(part.role, part.first_block, n)])
