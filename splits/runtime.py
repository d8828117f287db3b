"""`SplitRuntime`: one client set + the server wired together; the single path that training, inference,
utility scoring and attacks all use. Parties exchange only `Message`s, each carried by `Wire.transmit`
(serialize → count → deserialize + validate → taps), or, with a `transport` set (the client end of
`splits.distributed`), by the same encoded bytes to a server in another process.

One server holds one trunk for every client, or (`use_sub_servers()`, the server-hierarchical strategy) one
sub-server per client, each with its own trunk copy; in this single process the sub-servers run in turn
(running them in parallel is the distributed transport's job).
"""
from __future__ import annotations

import copy
from typing import Any

import torch


from splits.parties import ClientParty, Defense, ServerParty, check_edge
from splits.partition import SplitSpec, build_split
from splits.parts import COMPUTE_DTYPES, check_device, check_dtype, part_placement, place
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
        max_message_bytes: int | None = None,
        dtype: str | None = None,
        client_device: str | None = None,
        server_device: str | None = None,
        grad_defense: Defense | None = None,
        grad_generator: torch.Generator | None = None,
    ) -> None:
        """`dtype`: the parts' compute dtype (fp32|bf16|fp16; default: the loaded model's); `client_device` /
        `server_device`: where the clients' heads and tails / the server's trunk run (default: the loaded
        model's device). Parts are cast and moved copies; the wire carries `wire_dtype` either way.
        `defense` sits on every client's h_A edge, `grad_defense` (own `grad_generator`) on its dL/dh_B edge;
        each must declare that edge (`splits.parties.check_edge`)."""
        check_edge(defense, "h_a")
        check_edge(grad_defense, "grad_b")
        self.loaded = loaded
        self.spec = spec
        dev0, dt0 = part_placement(loaded.model)
        self.dtype = dtype or next((k for k, v in COMPUTE_DTYPES.items() if v == dt0), "fp32")
        check_dtype(self.dtype)
        self.client_device = check_device(client_device or str(dev0), "--client-device")
        self.server_device = check_device(server_device or str(dev0), "--server-device")
        self.parts = build_split(loaded.model, spec, n_clients)
        for part in self.parts.heads + self.parts.tails:
            place(part, self.client_device, self.dtype)
        place(self.parts.trunk, self.server_device, self.dtype)
        self.hidden_size = int(loaded.model.config.hidden_size)
        context = getattr(loaded.model.config, "max_position_embeddings", None)
        self.wire = Wire(self.hidden_size, wire_dtype, max_message_bytes=max_message_bytes, context=context)
        self.servers = [ServerParty(self.parts.trunk, tuple(range(n_clients)))]
        self.clients = [
            ClientParty(i, h, t, defense, generator, grad_defense, grad_generator)
            for i, (h, t) in enumerate(zip(self.parts.heads, self.parts.tails))
        ]
        self.transport: Any = None  # None: the server runs in this process (see `_exchange`)

    def use_sub_servers(self) -> None:
        """One sub-server per client, each with its own copy of the trunk (server-hierarchical). Call it
        before training: the sub-servers start with fresh states."""
        if len(self.servers) == len(self.clients):
            return
        trunks = [self.parts.trunk] + [copy.deepcopy(self.parts.trunk) for _ in self.clients[1:]]  # same device/dtype
        self.servers = [ServerParty(t, (c,)) for c, t in enumerate(trunks)]

    def placement(self) -> dict:
        """What records and JSON outputs state: the compute dtype and every party's device."""
        return {"dtype": self.dtype, "client_device": self.client_device, "server_device": self.server_device}

    @property
    def config(self) -> Any:
        return self.loaded.model.config

    @property
    def server(self) -> ServerParty:
        """The server (with `trunk_per_client`: client 0's sub-server)."""
        return self.servers[0]

    def server_of(self, client: int) -> ServerParty:
        return self.servers[client] if len(self.servers) > 1 else self.servers[0]

    def _exchange(self, method: str, msgs: list[Message]) -> list[Message]:
        """Carry the clients' messages to the server, run `method` ("forward", "backward", "forward_batch",
        "backward_batch") there, carry its replies back. With a `transport` (e.g. the distributed client end,
        `splits.distributed.ClientTransport`) the server runs elsewhere; without, in this process."""
        if self.transport is not None:
            return self.transport.exchange(method, msgs)
        sent = [self.wire.transmit(m) for m in msgs]
        if method.endswith("_batch"):
            replies = getattr(self.server, method)(sent)
        else:
            replies = [getattr(self.server_of(m.client), method)(m) for m in sent]
        return [self.wire.transmit(r) for r in replies]

    # one round trip: head → wire → trunk → wire → tail
    def _round(self, client: ClientParty, msg_a: Message) -> torch.Tensor:
        [msg_b] = self._exchange("forward", [msg_a])
        return client.receive_hidden(msg_b)

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
        [grad_a] = self._exchange("backward", [c.send_grad(template)])
        c.receive_grad(grad_a)

    def train_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, client: int = 0) -> tuple[torch.Tensor, Message]:
        c = self.clients[client]
        msg_a = c.send_prompt(input_ids, attention_mask, Phase.TRAIN)
        template = msg_a.header_only()
        return self._round(c, msg_a), template

    # client-batch: the server runs several clients' training forwards as one trunk batch
    def train_forward_batch(self, batches: list[tuple[int, torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """`batches` = [(client, input_ids, attention_mask)]: each client's HIDDEN_A crosses the wire on its own
        link; the server concatenates them along the batch (one trunk forward) and answers each client."""
        if len(self.servers) > 1:
            raise ValueError("a client batch needs one server holding one trunk")
        replies = self._exchange("forward_batch", [self.clients[c].send_prompt(ids, mask, Phase.TRAIN)
                                                   for c, ids, mask in batches])
        return [self.clients[c].receive_hidden(r) for (c, _, _), r in zip(batches, replies)]

    def backward_batch(self, clients: list[int]) -> None:
        """After each client's `loss.backward()`: their dL/dh_B, one trunk backward, each its dL/dh_A."""
        for c, r in zip(clients, self._exchange("backward_batch", [self.clients[c].send_grad() for c in clients])):
            self.clients[c].receive_grad(r)

    def modules(self) -> dict[str, torch.nn.Module]:
        """Every part by name: "trunk" (or "server{c}.trunk" per sub-server) and "client{i}.head/tail"."""
        if not self.servers:  # a client process of the distributed transport: the trunk is elsewhere
            out: dict[str, torch.nn.Module] = {}
        elif len(self.servers) == 1:
            out = {"trunk": self.server.trunk}
        else:
            out = {f"server{c}.trunk": s.trunk for c, s in enumerate(self.servers)}
        for i, c in enumerate(self.clients):
            out[f"client{i}.head"] = c.head
            out[f"client{i}.tail"] = c.tail
        return out

    def checkpoint_modules(self) -> dict[str, torch.nn.Module]:
        """The parts a checkpoint holds: "trunk" (sub-server 0's after the final FedAvg sync, when all are
        equal) and every client's head and tail."""
        out: dict[str, torch.nn.Module] = {"trunk": self.server.trunk} if self.servers else {}
        out.update({n: m for n, m in self.modules().items() if n.startswith("client")})
        return out
