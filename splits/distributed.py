"""The distributed transport: the server party and every client party in their own process, exchanging
the same encoded messages as in process over `torch.distributed` point-to-point (gloo; loopback or hosts).

Ranks: 0 is the server, rank c+1 is client c (world size = clients + 1). server-hierarchical runs one
sub-server process per client (world size 2K): sub-server 0 is rank 0, client c rank c+1, sub-server s ≥ 1
rank K+s; each pair talks only on its own link, and every `sync_every` rounds `FedAvg` averages (gloo
all_reduce, weighted by examples) the trunks within the group of sub-servers and the heads and tails within
the group of clients: no server process ever holds the clients' adapters. A frame on a link is an int64
length prefix followed by the message's bytes as one uint8 tensor: exactly what `Wire.send_bytes` encodes
(wire format 2), never a pickled object. The receiver checks the announced length against its wire's
`max_message_bytes` before allocating anything, then decodes and validates it with the same
`Wire.receive_bytes` as in process (header, cap, CRC, fields, finiteness), and the party checks it against
its state. Each process counts every message on its links once (the sender when it sends, the receiver when
it receives): a client's counters are its link's traffic, the server's the sum over all links, which equal
the in-process counters of the same run.

The server keeps serving the other clients when one client sends a malformed, oversized or non-finite
message, or disappears (its link errors or times out): that client is reported in `ServeReport.dropped` and
takes no part in the rest of the run (its samples leave the next client batch / optimizer step). A dropped
client that is still listening gets a zero-length frame, which it reports as a FlbenchError
(`DroppedError`). A length of -1 from a client is its goodbye (`bye()`: the end of an inference session).

Clients: `ClientTransport` plugs into `SplitRuntime.transport` (the runtime's `_exchange`), so training,
generation and scoring code run unchanged in a client process. Server: `TrainingServer` serves training
rounds in the strategy's order (sequential, client-batch) or inference requests (`serve_requests`).
A sub-server whose client is gone keeps joining the averages with weight 0 (the others renormalize);
a party whose process died fails its groups' next average after the timeout. Timeouts (connect, every
message, every average) are the `Endpoint`'s; user mistakes (MASTER_ADDR/PORT, rank, world
size, a different job) are one-line FlbenchErrors.
"""
from __future__ import annotations

import os
import socket
import zlib
from dataclasses import dataclass, field
from datetime import timedelta

import torch

from flbench.core.errors import FlbenchError, WireError
from splits.parties import ServerParty
from splits.wire import HEADER_BYTES, Kind, Message, Wire, protocol_error

SERVER_RANK = 0
DEFAULT_TIMEOUT = 300.0  # seconds a party waits for its peer (connect, every send/recv)
HELLO = 0x464C4248  # "FLBH": the first frame of every client (int64 tensor, see `hello`)
REPLY_KIND = {"forward": Kind.HIDDEN_B, "backward": Kind.GRAD_A, "forward_batch": Kind.HIDDEN_B,
              "backward_batch": Kind.GRAD_A}


def client_rank(cid: int) -> int:
    return cid + 1


# server-hierarchical: one sub-server process per client. Sub-server 0 is rank 0 (the server of the other
# strategies), client c stays rank c+1, sub-server s ≥ 1 is rank K+s (world size 2K).
def sub_server_rank(sid: int, n_clients: int) -> int:
    return SERVER_RANK if sid == 0 else n_clients + sid


def world_size(n_clients: int, hierarchical: bool) -> int:
    return 2 * n_clients if hierarchical else n_clients + 1


def role_of_rank(rank: int, n_clients: int, hierarchical: bool) -> tuple[str, int]:
    """("server", sub-server index) or ("client", client id) for a rank."""
    if rank == SERVER_RANK:
        return "server", 0
    if rank <= n_clients:
        return "client", rank - 1
    if hierarchical and rank < 2 * n_clients:
        return "server", rank - n_clients
    raise FlbenchError(f"--rank {rank}: outside 0..{world_size(n_clients, hierarchical) - 1} for {n_clients} client(s)")


class PeerError(FlbenchError):
    """A peer did not answer within the timeout or its link broke (it disappeared)."""


class DroppedError(FlbenchError):
    """The server dropped this client (it rejected one of its messages)."""


class SessionEnd(Exception):
    """A client said it is done (its `bye()`): not an error."""


BYE = -1  # a frame length meaning "this client is done" (client → server); 0 means "dropped" (server → client)


def master_address() -> tuple[str, int]:
    """(MASTER_ADDR, MASTER_PORT) from the environment, checked: a one-line FlbenchError otherwise."""
    addr = os.environ.get("MASTER_ADDR")
    port = os.environ.get("MASTER_PORT")
    if not addr or not port:
        raise FlbenchError("the distributed transport needs MASTER_ADDR and MASTER_PORT in the environment "
                           "(the server's host and a free TCP port, e.g. MASTER_ADDR=127.0.0.1 MASTER_PORT=29500)")
    try:
        p = int(port)
        if not 1 <= p <= 65535:
            raise ValueError
    except ValueError:
        raise FlbenchError(f"MASTER_PORT={port!r}: must be a TCP port number 1..65535") from None
    try:
        socket.getaddrinfo(addr, p)
    except (socket.gaierror, UnicodeError) as e:
        raise FlbenchError(f"MASTER_ADDR={addr!r}: cannot resolve this host ({e}); give the server's address") from None
    return addr, p


def free_port() -> int:
    """A free TCP port on this machine (for a one-machine launch)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Endpoint:
    """This process's end of the process group: framed bytes to/from one peer rank, with a timeout."""

    rank: int
    world_size: int
    timeout: float = DEFAULT_TIMEOUT
    backend: str = "gloo"
    serving: bool | None = None  # this rank serves clients (a server or sub-server); default: rank 0
    names: dict = field(default_factory=dict)  # peer rank → how errors name it (default: server / client c)
    _notices: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.world_size < 2:
            raise FlbenchError(f"world size {self.world_size}: a server and at least one client (≥ 2)")
        if not 0 <= self.rank < self.world_size:
            raise FlbenchError(f"--rank {self.rank}: outside 0..{self.world_size - 1} for {self.world_size - 1} "
                               "client(s) (rank 0 is the server, client c is rank c+1)")
        if not self.timeout > 0:
            raise FlbenchError(f"--timeout {self.timeout}: must be a number of seconds > 0")
        if self.serving is None:
            self.serving = self.rank == SERVER_RANK

    def who(self, peer: int) -> str:
        if peer in self.names:
            return self.names[peer]
        return "the server" if peer == SERVER_RANK else f"client {peer - 1} (rank {peer})"

    def connect(self) -> "Endpoint":
        import torch.distributed as dist

        addr, port = master_address()
        try:
            dist.init_process_group(self.backend, init_method=f"tcp://{addr}:{port}", rank=self.rank,
                                    world_size=self.world_size, timeout=timedelta(seconds=self.timeout))
        except Exception as e:  # noqa: BLE001 - torch raises RuntimeError/DistStoreError/ValueError here
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise FlbenchError(f"cannot join the process group at {addr}:{port} as rank {self.rank} of "
                               f"{self.world_size} within {self.timeout:g} s ({first}); check MASTER_ADDR/"
                               "MASTER_PORT, that the server runs and that every party has the same --clients") from None
        return self

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    # the point-to-point primitives (torch.distributed; a test may put another carrier underneath)
    def _send_tensor(self, t: torch.Tensor, peer: int) -> None:
        import torch.distributed as dist

        dist.send(t, peer)

    def _recv_tensor(self, t: torch.Tensor, peer: int) -> None:
        import torch.distributed as dist

        dist.recv(t, peer)

    def _isend_tensor(self, t: torch.Tensor, peer: int):
        import torch.distributed as dist

        return dist.isend(t, peer)

    def _io(self, what: str, peer: int, fn, t: torch.Tensor) -> None:
        try:
            fn(t, peer)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PeerError(f"{what} {self.who(peer)} failed within the {self.timeout:g} s timeout: the peer disappeared or "
                            f"is stuck ({first[:160]})") from None

    def send(self, peer: int, data: bytes) -> None:
        """One frame: the int64 length, then the bytes as one uint8 tensor."""
        self._io("sending to", peer, self._send_tensor, torch.tensor([len(data)], dtype=torch.int64))
        if data:
            self._io("sending to", peer, self._send_tensor, torch.frombuffer(bytearray(data), dtype=torch.uint8))

    def recv(self, peer: int, cap: int) -> bytes:
        """One frame from `peer`: its length is checked against `cap` before the body is allocated."""
        n = torch.empty(1, dtype=torch.int64)
        self._io("receiving from", peer, self._recv_tensor, n)
        length = int(n[0])
        if length == BYE and self.serving:
            raise SessionEnd(peer)
        if length == 0:
            raise DroppedError("the server dropped this client: it rejected one of its messages (see the server's "
                               "report)")
        if not HEADER_BYTES <= length <= cap:
            raise protocol_error(f"rank {peer} announces a {length}-byte message; accepted {HEADER_BYTES}.."
                                 f"{cap} bytes (max_message_bytes): refused before allocation")
        buf = torch.empty(length, dtype=torch.uint8)
        self._io("receiving from", peer, self._recv_tensor, buf)
        return buf.numpy().tobytes()

    def bye(self, server: int = SERVER_RANK) -> None:
        """Tell the server this client is done (it stops serving it)."""
        self._io("saying goodbye to", server, self._send_tensor, torch.tensor([BYE], dtype=torch.int64))

    def notify_dropped(self, peer: int) -> None:
        """Tell a dropped client, without waiting for it (it may be gone or stuck in a send)."""
        try:
            self._notices.append(self._isend_tensor(torch.zeros(1, dtype=torch.int64), peer))
        except RuntimeError:
            pass

    # the handshake: every client says who it is and which job it runs; the server checks both
    def hello(self, job_crc: int, server: int = SERVER_RANK) -> None:
        t = torch.tensor([HELLO, self.rank, self.world_size, job_crc], dtype=torch.int64)
        self._io("greeting", server, self._send_tensor, t)

    def check_hello(self, peer: int, job_crc: int) -> None:
        t = torch.empty(4, dtype=torch.int64)
        self._io("waiting for the greeting of", peer, self._recv_tensor, t)
        magic, rank, world, crc = (int(x) for x in t)
        if magic != HELLO or rank != peer or world != self.world_size:
            raise FlbenchError(f"rank {peer} greets as rank {rank} of world size {world}, expected rank {peer} of "
                               f"{self.world_size}: every party needs the same --clients")
        if crc != job_crc:
            raise FlbenchError(f"client {peer - 1} (rank {peer}) runs a different job (model, split, data or "
                               "training options differ from the server's); start every party with the same options")


def job_crc(job: dict) -> int:
    """A short fingerprint of the options every party must share (canonical JSON of `job`)."""
    import json

    return zlib.crc32(json.dumps(job, sort_keys=True, default=str).encode()) & 0x7FFFFFFF


class ClientTransport:
    """The client process's end: `SplitRuntime._exchange` over the process group to the server (rank 0)."""

    def __init__(self, wire: Wire, endpoint: Endpoint, server: int = SERVER_RANK) -> None:
        self.wire = wire
        self.endpoint = endpoint
        self.server = server  # the rank of this client's server (server-hierarchical: its sub-server)

    def exchange(self, method: str, msgs: list[Message]) -> list[Message]:
        for m in msgs:
            data = self.wire.send_bytes(m)
            self.wire.count(m, len(data))
            self.endpoint.send(self.server, data)
        out = []
        for _ in msgs:
            data = self.endpoint.recv(self.server, self.wire.max_message_bytes)
            reply = self.wire.receive_bytes(data, REPLY_KIND[method])
            self.wire.count(reply, len(data))
            out.append(reply)
        return out


@dataclass
class ServeReport:
    """What the server saw: rounds served and the clients it dropped (client → one-line reason)."""

    rounds: int = 0
    dropped: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"rounds": self.rounds, "dropped": {str(c): r for c, r in sorted(self.dropped.items())}}


class TrainingServer:
    """The server process's training loop: serves the clients' messages in the strategy's order and steps
    the server's optimizer as the in-process trainer does (sequential: after each client's backward;
    client-batch: once per round after the one batched backward)."""

    def __init__(self, server: ServerParty, wire: Wire, endpoint: Endpoint, optimizer: torch.optim.Optimizer | None,
                 n_clients: int, log=None, clients: list[int] | None = None) -> None:
        """`clients`: the client ids this server serves (default all `n_clients`; a sub-server: its one)."""
        self.server = server
        self.wire = wire
        self.endpoint = endpoint
        self.optimizer = optimizer
        self.alive = list(range(n_clients)) if clients is None else list(clients)
        self.report = ServeReport()
        self.log = log or (lambda s: None)

    def _drop(self, cid: int, why: Exception) -> None:
        reason = " ".join(str(why).split())[:300]
        self.report.dropped[cid] = reason
        self.alive = [c for c in self.alive if c != cid]
        self.log(f"server: dropped client {cid}: {reason}")
        if not isinstance(why, PeerError):
            self.endpoint.notify_dropped(client_rank(cid))

    def _recv(self, cid: int, kind: Kind) -> Message:
        data = self.endpoint.recv(client_rank(cid), self.wire.max_message_bytes)
        msg = self.wire.receive_bytes(data, kind)
        if msg.client != cid:
            raise protocol_error(f"{kind.name} message from rank {client_rank(cid)} claims to be client {msg.client}")
        self.wire.count(msg, len(data))
        return msg

    def _send(self, cid: int, msg: Message) -> None:
        data = self.wire.send_bytes(msg)
        self.wire.count(msg, len(data))
        if self.wire.taps:  # the attacker's view of what the server sent, as in process
            self.wire.receive_bytes(data, msg.kind)
        self.endpoint.send(client_rank(cid), data)

    def _step(self) -> None:
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    def _guard(self, cid: int, fn) -> bool:
        try:
            fn()
            return True
        except (WireError, FlbenchError) as e:
            self._drop(cid, e)
            return False
        except SessionEnd:
            self._drop(cid, FlbenchError("it said goodbye before the end of training"))
            return False

    def handshake(self, crc: int) -> None:
        for c in list(self.alive):
            self._guard(c, lambda: self.endpoint.check_hello(client_rank(c), crc))

    def round_sequential(self) -> None:
        for c in list(self.alive):
            def one():
                self._send(c, self.server.forward(self._recv(c, Kind.HIDDEN_A)))
                self._send(c, self.server.backward(self._recv(c, Kind.GRAD_B)))
            if self._guard(c, one):
                self._step()
            else:
                self.server._slots.pop(c, None)  # forget the dropped client's forward
                if self.optimizer is not None:
                    self.optimizer.zero_grad(set_to_none=True)
        self.report.rounds += 1

    def round_client_batch(self) -> None:
        msgs = {}
        for c in list(self.alive):
            self._guard(c, lambda: msgs.__setitem__(c, self._recv(c, Kind.HIDDEN_A)))
        if msgs:
            replies = self.server.forward_batch(list(msgs.values()))
            for c, r in zip(list(msgs), replies):
                self._guard(c, lambda: self._send(c, r))
        grads = {}
        for c in [c for c in msgs if c in self.alive]:
            self._guard(c, lambda: grads.__setitem__(c, self._recv(c, Kind.GRAD_B)))
        if grads:
            if len(grads) < len(msgs):  # a client left between forward and backward: zero gradient for its slice
                for c in msgs:
                    if c not in grads:
                        slot = self.server._slots[c]
                        grads[c] = Message(Kind.GRAD_B, slot.pending.phase, torch.zeros(msgs[c].n, self.wire.hidden_size),
                                           slot.pending.ints, slot.pending.seqlen, 0, slot.pending.left_pad, c,
                                           slot.link.count)
            replies = self.server.backward_batch(list(grads.values()))
            for c, r in zip(list(grads), replies):
                if c in self.alive:
                    self._guard(c, lambda: self._send(c, r))
            self._step()
        for c in msgs:
            if c not in self.alive:
                self.server._slots.pop(c, None)
        self.report.rounds += 1

    def serve_requests(self) -> ServeReport:
        """Inference: serve each client's forwards (eval, prefill, decode; its KV cache stays here between
        them) until it says bye, one client after the other. `rounds` counts the requests served."""
        for c in list(self.alive):
            while True:
                try:
                    msg = self._recv(c, Kind.HIDDEN_A)
                    with torch.no_grad():
                        reply = self.server.forward(msg)
                    self._send(c, reply)
                except SessionEnd:
                    break
                except (WireError, FlbenchError) as e:
                    self._drop(c, e)
                    break
                self.report.rounds += 1
            self.server._slots.pop(c, None)
        return self.report

    def serve(self, strategy: str, steps: int, after_round=None) -> ServeReport:
        """Serve `steps` rounds in the strategy's order; `after_round(r)` after round r (0-based), e.g. a
        sub-server's FedAvg. A sub-server (server-hierarchical) serves its one client sequentially; it keeps
        calling `after_round` when its client is gone (its peers average without it)."""
        rounds = {"sequential": self.round_sequential, "client-batch": self.round_client_batch,
                  "server-hierarchical": self.round_sequential}
        if strategy not in rounds:
            raise FlbenchError(f"--strategy {strategy} with --transport distributed: accepted {', '.join(rounds)}")
        for r in range(steps):
            if not self.alive and after_round is None:
                break
            if self.alive:
                rounds[strategy]()
            if after_round is not None:
                after_round(r)
        return self.report


def recv_count(endpoint: Endpoint, peer: int) -> int:
    """One non-negative int64 from `peer` (a client's example count, its FedAvg weight)."""
    t = torch.empty(1, dtype=torch.int64)
    endpoint._io("receiving the example count of", peer, endpoint._recv_tensor, t)
    n = int(t[0])
    if n < 0:
        raise protocol_error(f"rank {peer} announces {n} training examples")
    return n


def send_count(endpoint: Endpoint, peer: int, n: int) -> None:
    endpoint._io("sending the example count to", peer, endpoint._send_tensor, torch.tensor([int(n)], dtype=torch.int64))


@dataclass
class Groups:
    """server-hierarchical: the process groups FedAvg reduces over; the sub-servers' and the clients' never
    mix, so no server process ever holds (or sees a sum of) the clients' adapters."""

    servers: object
    clients: object
    n_clients: int


def make_groups(n_clients: int, timeout: float) -> Groups:
    """Every rank must call this, in the same order, right after joining the process group."""
    import torch.distributed as dist

    servers = [sub_server_rank(s, n_clients) for s in range(n_clients)]
    clients = [client_rank(c) for c in range(n_clients)]
    t = timedelta(seconds=timeout)
    return Groups(dist.new_group(servers, timeout=t), dist.new_group(clients, timeout=t), n_clients)


class FedAvg:
    """FedAvg over one process group (gloo all_reduce): each member contributes its adapters times its weight
    (its client's examples / all clients' examples); every member then holds the weighted average, as
    `splits.multiclient.HierarchicalTrainer.sync` computes it in process. A member whose client is gone
    contributes weight 0 and the others renormalize (it is dropped from the average)."""

    def __init__(self, group, size: int, who: str, timeout: float) -> None:
        self.group = group
        self.size = size
        self.who = who  # "sub-servers" or "clients", for errors
        self.timeout = timeout
        self.weight = 1.0
        self.syncs = 0
        self.bytes = 0

    def _all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if self.size > 1:
            try:
                dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
            except RuntimeError as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise PeerError(f"FedAvg among the {self.who} failed within the {self.timeout:g} s timeout: a peer "
                                f"disappeared or is stuck ({first[:160]})") from None
        return t

    def set_count(self, examples: int) -> int:
        """This member's example count → its weight (count / the group's total). Returns the total."""
        total = int(self._all_reduce(torch.tensor([int(examples)], dtype=torch.int64))[0])
        if total < 1:
            raise FlbenchError(f"FedAvg among the {self.who}: no client holds any training example")
        self.weight = examples / float(total)
        return total

    @staticmethod
    def _params(parts: list[torch.nn.Module]) -> list[torch.Tensor]:
        return [p for part in parts for n, p in part.named_parameters() if "lora_" in n]

    @torch.no_grad()
    def contribution(self, parts: list[torch.nn.Module], alive: bool = True) -> torch.Tensor:
        """What this member adds to the all_reduce: its weighted adapters, then [present, weight]."""
        w = self.weight if alive else 0.0
        return torch.cat([(w * p).flatten().float() for p in self._params(parts)] + [torch.tensor([float(alive), w])])

    @torch.no_grad()
    def apply(self, parts: list[torch.nn.Module], reduced: torch.Tensor, alive: bool = True) -> None:
        """The members' sum → this member's adapters (renormalized over the members present)."""
        params = self._params(parts)
        n_alive, w_alive = round(float(reduced[-2])), float(reduced[-1])
        if n_alive and alive:
            avg = reduced[:-2] if n_alive == self.size else reduced[:-2] / w_alive  # all present: the in-process sum
            for p, v in zip(params, torch.split(avg, [p.numel() for p in params])):
                p.copy_(v.view_as(p))
        self.syncs += 1
        self.bytes += 2 * sum(p.numel() * p.element_size() for p in params)  # up and down, as in process

    def sync(self, parts: list[torch.nn.Module], alive: bool = True) -> None:
        self.apply(parts, self._all_reduce(self.contribution(parts, alive)), alive)
