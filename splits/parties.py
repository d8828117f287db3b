"""The two kinds of party. Each holds only its own parts, caches and sequence state; they talk only
through `Message`s that the runtime carries over the `Wire`.

Client: head (embedding + first P blocks) and tail (last Q blocks + norm + LM head). The defense sits on
the head's outgoing edge: the server only ever receives `defense(h_A)`; the client's own graph keeps the
clean h_A (the defense is applied to a new tensor, never in place).
Server: the trunk, with one cache / sequence state / autograd stash per client.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from splits.parts import Part
from splits.sequence import SequenceState, lengths_and_side, pack, unpack
from splits.wire import Kind, Message, Phase, protocol_error

# A defense on the client's outgoing edge (`defenses.BaseDefense`; splits does not import defenses).
# None means nothing on the edge: the server receives h_A as the head computed it.
Defense = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


@dataclass
class _Slot:
    """Per-(party, part, client) state for one batch of sequences."""

    state: SequenceState | None = None
    cache: Any = None
    leaf: torch.Tensor | None = None  # received tensor that needs a gradient (training)
    out: torch.Tensor | None = None  # produced tensor to backprop into (training)


def _positions(state: SequenceState, msg: Message) -> torch.Tensor:
    if msg.phase == Phase.DECODE:
        return msg.ints.view(-1, 1)
    return state.prefill_positions()


def _open(slot: _Slot, part: Part, msg: Message) -> None:
    """Rebuild the receiving party's sequence state from the message header (mask compression)."""
    if msg.phase == Phase.DECODE:
        if slot.state is None or slot.state.mask.shape[1] != msg.past or slot.state.mask.shape[0] != msg.batch:
            have = None if slot.state is None else tuple(slot.state.mask.shape)
            raise protocol_error(f"{msg.kind.name} decode message #{msg.seq} for past={msg.past}, batch={msg.batch}, "
                            f"but this party's sequence state is {have}")
        slot.state.advance()
    else:
        slot.state = SequenceState.from_lengths(msg.ints, msg.seqlen, msg.left_pad)
        slot.cache = part.new_cache() if msg.phase == Phase.PREFILL else None


def _reply(kind: Kind, src: Message, h: torch.Tensor, state: SequenceState) -> Message:
    return Message(kind, src.phase, pack(h, state.new_mask(src.seqlen)), src.ints, src.seqlen, src.past,
                   src.left_pad, src.client)


@dataclass
class ClientParty:
    cid: int
    head: Part
    tail: Part
    defense: Defense | None = None
    generator: torch.Generator | None = None
    _head: _Slot = field(default_factory=_Slot)
    _tail: _Slot = field(default_factory=_Slot)

    def send_prompt(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, phase: Phase) -> Message:
        """Head forward on a whole (padded) batch; returns the HIDDEN_A message (after the defense)."""
        lengths, left = lengths_and_side(attention_mask)
        msg = Message(Kind.HIDDEN_A, phase, torch.empty(0), lengths, input_ids.shape[1], 0, left, self.cid)
        _open(self._head, self.head, msg)
        return self._send_hidden(input_ids, msg)

    def send_next(self, token_ids: torch.Tensor) -> Message:
        """Head forward on one new token per sample (KV-cached decode)."""
        st = self._head.state
        past = st.mask.shape[1]
        st.advance()
        positions = st.mask.sum(-1) - 1
        msg = Message(Kind.HIDDEN_A, Phase.DECODE, torch.empty(0), positions, 1, past, st.left, self.cid)
        return self._send_hidden(token_ids.view(-1, 1), msg)

    def _send_hidden(self, ids: torch.Tensor, msg: Message) -> Message:
        st = self._head.state
        h = self.head(ids, st.mask, _positions(st, msg), self._head.cache)
        sent = h if self.defense is None else self.defense(h, self.generator)
        self._head.out = sent if sent.requires_grad else None
        msg.tensor = pack(sent, st.new_mask(msg.seqlen))
        return msg

    def receive_hidden(self, msg: Message) -> torch.Tensor:
        """Tail forward on the trunk's output; returns logits (B, T_new, V)."""
        _open(self._tail, self.tail, msg)
        st = self._tail.state
        x = unpack(msg.tensor, st.new_mask(msg.seqlen))
        if msg.phase == Phase.TRAIN:
            x.requires_grad_(True)
            self._tail.leaf = x
        return self.tail(x, st.mask, _positions(st, msg), self._tail.cache)

    def send_grad(self, template: Message) -> Message:
        """After loss.backward(): ship dL/dh_B for the real tokens."""
        leaf = self._tail.leaf
        grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        self._tail.leaf = None
        return _reply(Kind.GRAD_B, template, grad, self._tail.state)

    def receive_grad(self, msg: Message) -> None:
        """Finish backprop into the head (through the defense) from dL/dh_A."""
        st = self._head.state
        g = unpack(msg.tensor, st.new_mask(msg.seqlen))
        if self._head.out is not None:
            self._head.out.backward(g)
        self._head.out = None


@dataclass
class ServerParty:
    trunk: Part
    _slots: dict[int, _Slot] = field(default_factory=dict)

    def forward(self, msg: Message) -> Message:
        slot = self._slots.setdefault(msg.client, _Slot())
        _open(slot, self.trunk, msg)
        x = unpack(msg.tensor, slot.state.new_mask(msg.seqlen))
        if msg.phase == Phase.TRAIN:
            x.requires_grad_(True)
            slot.leaf = x
        h = self.trunk(x, slot.state.mask, _positions(slot.state, msg), slot.cache)
        slot.out = h if msg.phase == Phase.TRAIN else None
        return _reply(Kind.HIDDEN_B, msg, h, slot.state)

    def backward(self, msg: Message) -> Message:
        slot = self._slots.get(msg.client)
        if slot is None or slot.out is None:
            raise protocol_error(f"GRAD_B message #{msg.seq} from client {msg.client} without a training forward to match")
        g = unpack(msg.tensor, slot.state.new_mask(msg.seqlen))
        slot.out.backward(g)
        grad = slot.leaf.grad if slot.leaf.grad is not None else torch.zeros_like(slot.leaf)
        slot.out = slot.leaf = None
        return _reply(Kind.GRAD_A, msg, grad, slot.state)
