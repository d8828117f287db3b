"""`SplitRuntime`: one client set + one server wired together; the single path that training, inference,
utility scoring and attacks all use. Parties exchange only `Message`s, each carried by `Wire.transmit`
(serialize → count → deserialize + validate → taps).
"""
from __future__ import annotations

from typing import Any

import torch


from splits.parties import ClientParty, Defense, ServerParty
from splits.partition import SplitSpec, build_split
from splits.wire import Message, Phase, Wire


class SplitRuntime:
    def __init__(
        self,
        loaded: Any,  # flbench.models.LoadedModel (model, tokenizer, name, identity)
        spec: SplitSpec,
        n_clients: int = 1,
        wire_dtype: str = "fp32",
        defense: Defense | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.loaded = loaded
        self.spec = spec
        self.parts = build_split(loaded.model, spec, n_clients)
        self.hidden_size = int(loaded.model.config.hidden_size)
        self.wire = Wire(self.hidden_size, wire_dtype)
        self.server = ServerParty(self.parts.trunk)
        self.clients = [
            ClientParty(i, h, t, defense, generator)
            for i, (h, t) in enumerate(zip(self.parts.heads, self.parts.tails))
        ]

    @property
    def config(self) -> Any:
        return self.loaded.model.config

    # one round trip: head → wire → trunk → wire → tail
    def _round(self, client: ClientParty, msg_a: Message) -> torch.Tensor:
        msg_b = self.server.forward(self.wire.transmit(msg_a))
        return client.receive_hidden(self.wire.transmit(msg_b))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, client: int = 0,
                phase: Phase = Phase.EVAL) -> torch.Tensor:
        """Logits (B, T, V) for a padded batch; rows at padded positions are meaningless."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        c = self.clients[client]
        return self._round(c, c.send_prompt(input_ids, attention_mask, phase))

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, client: int = 0) -> torch.Tensor:
        """Start a KV-cached session: every party caches its own keys/values. Returns logits (B, T, V)."""
        return self.forward(input_ids, attention_mask, client, Phase.PREFILL)

    def decode(self, token_ids: torch.Tensor, client: int = 0) -> torch.Tensor:
        """One KV-cached step: only the new token's hidden state and position cross the wire. (B, 1, V)."""
        c = self.clients[client]
        return self._round(c, c.send_next(token_ids))

    def backward(self, client: int, template: Message | None = None) -> None:
        """After `loss.backward()` on the tail's logits: dL/dh_B → server → dL/dh_A → client head."""
        c = self.clients[client]
        grad_b = c.send_grad(template)
        grad_a = self.server.backward(self.wire.transmit(grad_b))
        c.receive_grad(self.wire.transmit(grad_a))

    def train_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, client: int = 0) -> tuple[torch.Tensor, Message]:
        c = self.clients[client]
        msg_a = c.send_prompt(input_ids, attention_mask, Phase.TRAIN)
        template = Message(msg_a.kind, msg_a.phase, torch.empty(0), msg_a.ints, msg_a.seqlen, 0, msg_a.left_pad, c.cid)
        return self._round(c, msg_a), template

    def modules(self) -> dict[str, torch.nn.Module]:
        out: dict[str, torch.nn.Module] = {"trunk": self.parts.trunk}
        for i, c in enumerate(self.clients):
            out[f"client{i}.head"] = c.head
            out[f"client{i}.tail"] = c.tail
        return out
