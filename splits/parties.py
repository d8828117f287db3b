"""The two kinds of party. Each holds only its own parts, caches and sequence state; they talk only
through `Message`s that the runtime carries over the `Wire`.

Client: head (embedding + first P blocks) and tail (last Q blocks + norm + LM head). The defense sits on
the head's outgoing edge: the server only ever receives `defense(h_A)`; the client's own graph keeps the
clean h_A (the defense is applied to a new tensor, never in place). A second, optional defense sits on the
tail's outgoing edge (`grad_defense`, with its own generator): the server only receives
`grad_defense(dL/dh_B)`, and the trunk backpropagates that. Each defense declares the edges it may sit on
(`edges`: "h_a", "grad_b"; `check_edge`).
Server: a trunk, with one cache / sequence state / autograd stash per client it serves.

Every received message is checked against the receiver's state before anything changes (a rejected
message leaves the party as it was): its link sequence number (each end counts the messages on the link),
its kind and phase against what the party expects next (a reply answers the outstanding request; a GRAD_B
continues a training forward; a decode step continues a prefill session), and batch, seqlen, lengths or
positions, padding side and past against that request, forward or KV cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from splits.edges import EDGES, check_edge, defense_edges  # noqa: F401 (re-exported)
from splits.parts import Part, part_placement
from splits.sequence import SequenceState, lengths_and_side, pack, unpack
from splits.wire import FIELD_MAX, Kind, Message, Phase, protocol_error

# A defense on one of the client's outgoing edges (`defenses.BaseDefense`; splits does not import defenses).
# None means nothing on the edge: the server receives h_A (or dL/dh_B) as the client computed it.
Defense = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]

_SAME = ("phase", "batch", "seqlen", "past", "left_pad", "client")


def _what(msg: Message) -> str:
    return f"{msg.kind.name} {msg.phase.name.lower()} message #{msg.seq} (client {msg.client})"


def _show(v: Any) -> str:
    return v.name if isinstance(v, Phase) else str(v)


def _mismatches(msg: Message, ref: Message) -> list[str]:
    out = [f"{f} {_show(getattr(msg, f))} (expected {_show(getattr(ref, f))})" for f in _SAME
           if getattr(msg, f) != getattr(ref, f)]
    if not out and not torch.equal(msg.ints.long(), ref.ints.long()):
        name = "positions" if msg.phase == Phase.DECODE else "lengths"
        out.append(f"{name} {msg.ints.tolist()[:8]} (expected {ref.ints.tolist()[:8]})")
    return out


def _must_match(msg: Message, ref: Message, kind: Kind, role: str) -> None:
    bad = ([f"kind {msg.kind.name} (expected {kind.name})"] if msg.kind != kind else []) + _mismatches(msg, ref)
    if bad:
        raise protocol_error(f"{_what(msg)} does not match {role}: {'; '.join(bad)}")


def _cached(state: SequenceState | None, cache: Any) -> int | None:
    """Tokens per sample this party has cached for a session (None: no session)."""
    if state is None:
        return None
    n = int(state.mask.shape[1])
    if cache is not None and int(cache.get_seq_length()) != n:  # cache and mask advance together
        raise protocol_error(f"party state out of step: KV cache holds {int(cache.get_seq_length())} tokens, mask {n}")
    return n


def _check_decode(slot: "_Slot", msg: Message) -> None:
    """A decode step must continue this party's prefill session exactly."""
    if not slot.session:
        raise protocol_error(f"{_what(msg)}: no prefill session to continue")
    state, past = slot.state, _cached(slot.state, slot.cache)
    want = state.mask.sum(-1)  # each sample's position = its real tokens so far
    bad = [f"{k} {a} (expected {b})" for k, a, b in (("batch", msg.batch, state.mask.shape[0]), ("past", msg.past, past),
                                                     ("left_pad", msg.left_pad, state.left)) if a != b]
    if not bad and not torch.equal(msg.ints.long(), want):
        bad.append(f"positions {msg.ints.tolist()[:8]} (expected {want.tolist()[:8]})")
    if bad:
        raise protocol_error(f"{_what(msg)} does not continue the session: {'; '.join(bad)}")


def _positions(state: SequenceState, msg: Message) -> torch.Tensor:
    if msg.phase == Phase.DECODE:
        return msg.ints.view(-1, 1)
    return state.prefill_positions()


@dataclass
class _Slot:
    """Per-(party, part, client) state for one batch of sequences."""

    state: SequenceState | None = None
    cache: Any = None
    leaf: torch.Tensor | None = None  # received tensor that needs a gradient (training)
    out: torch.Tensor | None = None  # produced tensor to backprop into (training)
    session: bool = False  # a prefill's KV-cached session that decode steps may continue
    # client head, training forward only, when the defense asks for a training penalty: (input embeddings,
    # clean h_A, mask) for the client's own loss; never sent, dropped when the forward's backward ends
    penalty_inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def open(self, part: Part, msg: Message) -> None:
        """Rebuild the sequence state from the (already checked) header (mask compression)."""
        if msg.phase == Phase.DECODE:
            self.state.advance()
        else:
            self.state = SequenceState.from_lengths(msg.ints, msg.seqlen, msg.left_pad)
            self.session = msg.phase == Phase.PREFILL
            self.cache = part.new_cache() if self.session else None


@dataclass
class _Link:
    """One end's count of the messages on a client↔server link; a message's `seq` must equal it."""

    count: int = 0

    def stamp(self, msg: Message) -> Message:
        msg.seq = self.count
        self.count = (self.count + 1) & FIELD_MAX
        return msg

    def check(self, msg: Message) -> None:
        if msg.seq != self.count:
            raise protocol_error(f"{_what(msg)}: sequence number {msg.seq} on the link, expected {self.count} "
                                 "(lost, repeated or reordered message)")

    def accept(self) -> None:
        self.count = (self.count + 1) & FIELD_MAX


# Devices and dtypes: the wire's domain is fp32 on the CPU (what the wire encodes from and decodes to, what
# taps and attacks see, where the defense draws its noise). Each party computes on its own device in its own
# compute dtype (`--client-device`/`--server-device`, `--dtype`): it moves what it sends to the wire's domain
# (`_edge`) and what it receives to its part's device and dtype (`_recv`). Both are differentiable, so
# gradients flow across the conversion; with everything in fp32 on the CPU both are no-ops.
def _edge(t: torch.Tensor) -> torch.Tensor:
    return t.to(device="cpu", dtype=torch.float32)


def _pack_edge(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return _edge(pack(h, mask.to(h.device)))


def _recv(part: Part, flat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A received (n, d) wire tensor → the padded (B, T, d) batch on the part's device, in its compute dtype."""
    device, dtype = part_placement(part)
    return unpack(flat.to(device=device, dtype=dtype), mask.to(device))


def _reply(kind: Kind, src: Message, h: torch.Tensor, state: SequenceState) -> Message:
    return Message(kind, src.phase, _pack_edge(h.detach(), state.new_mask(src.seqlen)), src.ints, src.seqlen,
                   src.past, src.left_pad, src.client)


@dataclass
class ClientParty:
    cid: int
    head: Part
    tail: Part
    defense: Defense | None = None
    generator: torch.Generator | None = None
    grad_defense: Defense | None = None  # on dL/dh_B before it is sent (the tail's outgoing edge)
    grad_generator: torch.Generator | None = None  # its own noise stream
    _head: _Slot = field(default_factory=_Slot)
    _tail: _Slot = field(default_factory=_Slot)
    _link: _Link = field(default_factory=_Link)
    _request: Message | None = None  # the outstanding HIDDEN_A or GRAD_B (header only)
    _train: Message | None = None  # the training forward awaiting its backward (header only)

    def send_prompt(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, phase: Phase) -> Message:
        """Head forward on a whole (padded) batch; returns the HIDDEN_A message (after the defense)."""
        lengths, left = lengths_and_side(attention_mask)
        msg = Message(Kind.HIDDEN_A, phase, torch.empty(0), lengths, input_ids.shape[1], 0, left, self.cid)
        self._head.open(self.head, msg)
        self._train = None
        return self._send_hidden(input_ids, msg)

    def send_next(self, token_ids: torch.Tensor) -> Message:
        """Head forward on one new token per sample (KV-cached decode)."""
        st = self._head.state
        if not (self._head.session and self._tail.session):
            raise protocol_error(f"client {self.cid}: a decode step needs a prefill session first")
        past = st.mask.shape[1]
        st.advance()
        positions = st.mask.sum(-1) - 1
        msg = Message(Kind.HIDDEN_A, Phase.DECODE, torch.empty(0), positions, 1, past, st.left, self.cid)
        return self._send_hidden(token_ids.view(-1, 1), msg)

    def _send_hidden(self, ids: torch.Tensor, msg: Message) -> Message:
        st = self._head.state
        h = _edge(self.head(ids, st.mask, _positions(st, msg), self._head.cache))  # graph kept: backprop reaches the head
        self._head.penalty_inputs = None
        if msg.phase == Phase.TRAIN and callable(getattr(self.defense, "training_penalty", None)):
            with torch.no_grad():  # X: the head's input embeddings (the embedding is public and frozen)
                x = _edge(self.head.embed_tokens(ids.to(part_placement(self.head)[0])))
            self._head.penalty_inputs = (x, h, st.new_mask(msg.seqlen))
        sent = h if self.defense is None else self.defense(h, self.generator)
        self._head.out = sent if sent.requires_grad else None
        msg.tensor = pack(sent, st.new_mask(msg.seqlen))
        self._link.stamp(msg)
        self._request = msg.header_only()
        return msg

    def training_penalty(self) -> torch.Tensor | None:
        """The defense's training penalty (e.g. NoPeek's α·dCor(X, h_A)) on the current training forward's
        input embeddings and clean h_A, differentiable into the head; None when the defense asks for none.
        The caller backpropagates it (with the head's graph retained for the server's dL/dh_A)."""
        fn = getattr(self.defense, "training_penalty", None)
        inputs = self._head.penalty_inputs
        return None if fn is None or inputs is None else fn(*inputs)

    def _accept(self, msg: Message, kind: Kind, asked: Kind) -> Message:
        req = self._request
        if req is None or req.kind != asked:
            raise protocol_error(f"{_what(msg)}: client {self.cid} is not waiting for a {kind.name}"
                                 + ("" if req is None else f" (it awaits the answer to a {req.kind.name})"))
        self._link.check(msg)
        _must_match(msg, req, kind, f"client {self.cid}'s {req.kind.name} #{req.seq}")
        return req

    def receive_hidden(self, msg: Message) -> torch.Tensor:
        """Tail forward on the trunk's output; returns logits (B, T_new, V)."""
        req = self._accept(msg, Kind.HIDDEN_B, Kind.HIDDEN_A)
        if msg.phase == Phase.DECODE:
            _check_decode(self._tail, msg)
        self._link.accept()
        self._request = None
        self._tail.open(self.tail, msg)
        st = self._tail.state
        x = _recv(self.tail, msg.tensor, st.new_mask(msg.seqlen))
        if msg.phase == Phase.TRAIN:
            x.requires_grad_(True)
            self._tail.leaf = x
            self._train = req
        return self.tail(x, st.mask, _positions(st, msg), self._tail.cache).to("cpu")  # logits for the caller, on the CPU

    def send_grad(self, template: Message | None = None) -> Message:
        """After loss.backward(): ship dL/dh_B for the real tokens of the training forward (the client
        remembers that forward's header; `template` is accepted for compatibility and not needed)."""
        fwd = self._train
        if fwd is None or self._tail.leaf is None:
            raise protocol_error(f"client {self.cid}: no training forward to send a gradient for")
        leaf = self._tail.leaf
        grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        self._tail.leaf = None
        self._train = None
        mask = self._tail.state.new_mask(fwd.seqlen)
        if self.grad_defense is not None:  # on the wire's domain, padded rows zero: (B, T, d)
            g = _edge(grad.detach()) * mask.unsqueeze(-1).to(torch.float32)
            grad = self.grad_defense(g, self.grad_generator)
        msg = Message(Kind.GRAD_B, fwd.phase, _pack_edge(grad.detach(), mask), fwd.ints, fwd.seqlen, fwd.past,
                      fwd.left_pad, fwd.client)
        self._link.stamp(msg)
        self._request = msg.header_only()
        return msg

    def receive_grad(self, msg: Message) -> None:
        """Finish backprop into the head (through the defense) from dL/dh_A."""
        self._accept(msg, Kind.GRAD_A, Kind.GRAD_B)
        self._link.accept()
        self._request = None
        g = unpack(msg.tensor, self._head.state.new_mask(msg.seqlen))
        if self._head.out is not None:
            self._head.out.backward(g)
        self._head.out = None
        self._head.penalty_inputs = None


@dataclass
class _ServerSlot(_Slot):
    link: _Link = field(default_factory=_Link)
    pending: Message | None = None  # the training forward awaiting its GRAD_B (header only)
    group: "_Group | None" = None  # the client-batch forward this slot's samples belong to


@dataclass
class _Group:
    """A client-batch training forward: several clients' samples in one trunk batch."""

    clients: list[int]
    counts: list[int]  # real tokens per client, in order
    state: SequenceState
    leaf: torch.Tensor
    out: torch.Tensor
    grads: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class ServerParty:
    trunk: Part
    clients: tuple[int, ...] = (0,)  # the client ids this server (or sub-server) serves
    _slots: dict[int, _ServerSlot] = field(default_factory=dict)

    def _slot(self, msg: Message, kind: Kind) -> _ServerSlot:
        if msg.kind != kind:
            raise protocol_error(f"{_what(msg)}: the server expected a {kind.name} here")
        if msg.client not in self.clients:
            raise protocol_error(f"{_what(msg)}: client {msg.client} is not served here (clients {list(self.clients)})")
        slot = self._slots.setdefault(msg.client, _ServerSlot())
        slot.link.check(msg)
        return slot

    def _check_prompt(self, msg: Message) -> _ServerSlot:
        slot = self._slot(msg, Kind.HIDDEN_A)
        if slot.pending is not None:
            raise protocol_error(f"{_what(msg)}: client {msg.client}'s training forward #{slot.pending.seq} still "
                                 "awaits its GRAD_B")
        if msg.phase == Phase.DECODE:
            _check_decode(slot, msg)
        return slot

    def forward(self, msg: Message) -> Message:
        slot = self._check_prompt(msg)
        slot.link.accept()
        slot.open(self.trunk, msg)
        x = _recv(self.trunk, msg.tensor, slot.state.new_mask(msg.seqlen))
        if msg.phase == Phase.TRAIN:
            x.requires_grad_(True)
            slot.leaf = x
        h = self.trunk(x, slot.state.mask, _positions(slot.state, msg), slot.cache)
        slot.out = h if msg.phase == Phase.TRAIN else None
        slot.pending = msg.header_only() if msg.phase == Phase.TRAIN else None
        return slot.link.stamp(_reply(Kind.HIDDEN_B, msg, h, slot.state))

    def backward(self, msg: Message) -> Message:
        slot = self._check_grad(msg)
        if slot.group is not None:
            raise protocol_error(f"{_what(msg)}: client {msg.client}'s forward was a client batch; "
                                 "its gradient goes with the batch's (backward_batch)")
        slot.link.accept()
        g = _recv(self.trunk, msg.tensor, slot.state.new_mask(msg.seqlen))
        slot.out.backward(g)
        grad = slot.leaf.grad if slot.leaf.grad is not None else torch.zeros_like(slot.leaf)
        slot.out = slot.leaf = None
        src, slot.pending = slot.pending, None
        return slot.link.stamp(_reply(Kind.GRAD_A, src, grad, slot.state))

    def _check_grad(self, msg: Message) -> _ServerSlot:
        slot = self._slot(msg, Kind.GRAD_B)
        if slot.pending is None:
            raise protocol_error(f"{_what(msg)}: no training forward of client {msg.client} to match")
        _must_match(msg, slot.pending, Kind.GRAD_B, f"client {msg.client}'s training forward #{slot.pending.seq}")
        return slot

    # --- client-batch: several clients' training forwards as one trunk batch -------------------------------

    def forward_batch(self, msgs: list[Message]) -> list[Message]:
        """Concatenate several clients' TRAIN HIDDEN_A along the batch, one trunk forward, one reply each."""
        cids = [m.client for m in msgs]
        if len(set(cids)) != len(cids) or not msgs:
            raise protocol_error(f"a client batch needs distinct clients, got {cids}")
        for m in msgs:
            if m.phase != Phase.TRAIN:
                raise protocol_error(f"{_what(m)}: a client batch carries training forwards only")
        slots = [self._check_prompt(m) for m in msgs]
        # Packed, not padded: every sample's real tokens (the wire carries no padding) in ONE row, positions
        # restarting at 0 for each sample, so transformers' packed-sequence mask (masking_utils) lets each token
        # attend only to its own sample's causal prefix. The trunk then computes no padded slot: with clients'
        # samples of unequal length a padded batch of K would cost K × the longest (measured on SST-2 at K = 4:
        # 1.45 × the real tokens).
        lengths = torch.cat([m.ints.long() for m in msgs])
        flat = torch.cat([m.tensor for m in msgs])
        state = SequenceState(torch.ones(1, flat.shape[0], dtype=torch.long), left=False)
        positions = torch.cat([torch.arange(int(n)) for n in lengths]).unsqueeze(0)
        x = _recv(self.trunk, flat, state.mask).requires_grad_(True)
        h = self.trunk(x, None, positions, None)
        group = _Group(cids, [m.n for m in msgs], state, x, h)
        replies = []
        for m, slot, part in zip(msgs, slots, torch.split(_pack_edge(h.detach(), state.mask), group.counts)):
            slot.link.accept()
            slot.open(self.trunk, m)
            slot.leaf = slot.out = None
            slot.pending, slot.group = m.header_only(), group
            reply = Message(Kind.HIDDEN_B, m.phase, part, m.ints, m.seqlen, m.past, m.left_pad, m.client)
            replies.append(slot.link.stamp(reply))
        return replies

    def backward_batch(self, msgs: list[Message]) -> list[Message]:
        """The clients' GRAD_B for one client batch (any order): one trunk backward, one GRAD_A each."""
        slots = [self._check_grad(m) for m in msgs]
        group = slots[0].group if slots else None
        if group is None or any(s.group is not group for s in slots) or sorted(m.client for m in msgs) != sorted(group.clients):
            raise protocol_error(f"client-batch backward: gradients from clients {[m.client for m in msgs]} do not "
                                 "complete one client batch")
        for m, slot in zip(msgs, slots):
            slot.link.accept()
            group.grads[m.client] = m.tensor
        g = _recv(self.trunk, torch.cat([group.grads[c] for c in group.clients]), group.state.mask)
        group.out.backward(g)
        leaf_grad = group.leaf.grad if group.leaf.grad is not None else torch.zeros_like(group.leaf)
        parts = dict(zip(group.clients, torch.split(_pack_edge(leaf_grad, group.state.mask), group.counts)))
        replies = []
        for m, slot in zip(msgs, slots):
            src = slot.pending
            slot.pending = slot.group = None
            reply = Message(Kind.GRAD_A, src.phase, parts[m.client], src.ints, src.seqlen, src.past, src.left_pad,
                            src.client)
            replies.append(slot.link.stamp(reply))
        return replies
