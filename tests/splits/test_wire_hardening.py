"""Wire hardening: the CRC covers header and body, every header field is checked against the receiver's
state, declared sizes are capped before anything is read or allocated, empty prefills are refused.

Real messages come from a runtime on tiny-llama: a prefill and decode steps (HIDDEN_A/HIDDEN_B), and a
training step (HIDDEN_A/HIDDEN_B/GRAD_B/GRAD_A)."""
from __future__ import annotations

import struct
import zlib
from dataclasses import replace

import numpy as np
import pytest
import torch
from splitref import padded_batch

import splits.wire as wire
from flbench.core.errors import FlbenchError, WireError
from splits import SplitRuntime, SplitSpec
from splits.parties import ClientParty, ServerParty
from splits.training import LoraSpec, SequentialTrainer
from splits.wire import (
    CRC_OFFSET,
    HEADER,
    HEADER_BYTES,
    Header,
    Kind,
    Message,
    MessageTooLargeError,
    Phase,
    Wire,
    decode,
    default_max_message_bytes,
    read_frame,
)

# (kind, phase, nth message of that kind and phase): every message type a runtime sends
TYPES = [(Kind.HIDDEN_A, Phase.PREFILL, 0), (Kind.HIDDEN_B, Phase.PREFILL, 0),
         (Kind.HIDDEN_A, Phase.DECODE, 1), (Kind.HIDDEN_B, Phase.DECODE, 1),
         (Kind.HIDDEN_A, Phase.TRAIN, 0), (Kind.HIDDEN_B, Phase.TRAIN, 0),
         (Kind.GRAD_B, Phase.TRAIN, 0), (Kind.GRAD_A, Phase.TRAIN, 0)]
LENGTHS = [5, 3]  # two samples, seqlen 5: lengths can move a token between them and stay ≤ seqlen


def ids_type(t) -> str:
    return f"{t[0].name}-{t[1].name}-{t[2]}"


def fresh(rt: SplitRuntime) -> SplitRuntime:
    """The same parts with new parties (empty states, link counters at 0)."""
    rt.servers = [ServerParty(rt.parts.trunk, tuple(range(len(rt.clients))))]
    rt.clients = [ClientParty(c.cid, c.head, c.tail) for c in rt.clients]
    return rt


class Scenario:
    """Runs the flows that produce every message type; `until` stops after the message under test."""

    def __init__(self, tiny, dtype: str = "fp32", left: bool = True) -> None:
        self.rt = SplitRuntime(tiny, SplitSpec(1, 1), wire_dtype=dtype)
        self.trainer = SequentialTrainer(self.rt, LoraSpec(rank=2, alpha=4))
        self.ids, self.mask = padded_batch(LENGTHS, left=left, seed=3)
        self.results: list = []

    def run(self, phase: Phase) -> None:
        rt = fresh(self.rt)
        self.results = []
        if phase == Phase.TRAIN:
            self.results.append(self.trainer.step(self.ids, self.mask))
            return
        with torch.no_grad():
            logits = rt.prefill(self.ids, self.mask)
            self.results.append(logits)
            for _ in range(2):
                logits = rt.decode(logits[:, -1].argmax(-1))
                self.results.append(logits)


@pytest.fixture(scope="module")
def captured(tiny):
    """Bytes of one real message of every type, per wire dtype."""
    out = {}
    for dtype in ("fp32", "bf16"):
        seen: dict = {}
        real = wire.encode

        def spy(msg, dt):
            data = real(msg, dt)
            seen.setdefault((msg.kind, msg.phase), []).append(data)
            return data

        wire.encode = spy
        try:
            sc = Scenario(tiny, dtype)
            sc.run(Phase.PREFILL)
            sc.run(Phase.TRAIN)
        finally:
            wire.encode = real
        for kind, phase, nth in TYPES:
            out[(dtype, kind, phase)] = seen[(kind, phase)][nth]
        out[(dtype, "cap")] = sc.rt.wire.max_message_bytes
    return out


@pytest.fixture
def no_alloc(monkeypatch):
    """Fail the test if the decoder reads a body into an array (the first allocation it makes)."""
    calls = []

    def frombuffer(*a, **k):
        calls.append(a)
        raise AssertionError("the body was read although the message should have been refused before")

    monkeypatch.setattr(wire.np, "frombuffer", frombuffer)
    return calls


# --- every header bit ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("t", TYPES, ids=ids_type)
def test_every_single_bit_flip_of_the_header_is_rejected_before_the_body_is_read(captured, no_alloc, tiny, dtype, t):
    kind, phase, _ = t
    data = captured[(dtype, kind, phase)]
    d = tiny.model.config.hidden_size
    cap = captured[(dtype, "cap")]
    for bit in range(8 * HEADER_BYTES):
        bad = bytearray(data)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(WireError, match="^internal protocol error"):
            decode(bytes(bad), d, expect_kind=kind, max_message_bytes=cap)
    assert no_alloc == []


@pytest.mark.parametrize("t", TYPES, ids=ids_type)
def test_every_header_bit_flip_in_a_live_runtime_yields_no_logits(tiny, monkeypatch, t):
    """End to end: flip one header bit of the message under test as it crosses the wire; the flow stops
    with a WireError before any logits (or gradients into the head) come out of that round trip."""
    kind, phase, nth = t
    sc = Scenario(tiny)
    real = wire.encode
    state = {"bit": None, "count": 0}

    def flip(msg, dt):
        data = real(msg, dt)
        if (msg.kind, msg.phase) == (kind, phase):
            state["count"] += 1
            if state["count"] == nth + 1:
                bad = bytearray(data)
                bad[state["bit"] // 8] ^= 1 << (state["bit"] % 8)
                return bytes(bad)
        return data

    monkeypatch.setattr(wire, "encode", flip)
    n_ok = 1 + nth if phase == Phase.DECODE else 0  # results before the message under test
    for bit in range(8 * HEADER_BYTES):
        state.update(bit=bit, count=0)
        head_before = [p.detach().clone() for p in sc.rt.clients[0].head.parameters() if p.requires_grad]
        with pytest.raises(WireError):
            sc.run(Phase.TRAIN if phase == Phase.TRAIN else Phase.PREFILL)
        assert len(sc.results) == n_ok, f"bit {bit}: the corrupted round trip produced a result"
        head_after = [p for p in sc.rt.clients[0].head.parameters() if p.requires_grad]
        assert all(p.grad is None for p in head_after)
        assert all(torch.equal(a, b) for a, b in zip(head_before, head_after))


# --- plausible but wrong field values, with a valid CRC -------------------------------------------------

def _drop_last_sample(m: Message) -> Message:
    n_last = 1 if m.phase == Phase.DECODE else int(m.ints[-1])
    return replace(m, ints=m.ints[:-1], tensor=m.tensor[: m.n - n_last])


def _move_token(m: Message) -> Message:
    ints = m.ints.clone()
    ints[0] -= 1
    ints[1] += 1
    return replace(m, ints=ints)


CORRUPTIONS = {
    "seqlen+1": lambda m: replace(m, seqlen=m.seqlen + 1),
    "seqlen-1": lambda m: replace(m, seqlen=m.seqlen - 1),
    "past+1": lambda m: replace(m, past=m.past + 1),
    "past-1": lambda m: replace(m, past=m.past - 1) if m.past else None,
    "left_pad flipped": lambda m: replace(m, left_pad=not m.left_pad),
    "batch-1": _drop_last_sample,
    "lengths/positions shifted": _move_token,
    "position+1": lambda m: replace(m, ints=m.ints + torch.tensor([1, 0])),
    "seq+1": lambda m: replace(m, seq=m.seq + 1),
    "seq-1": lambda m: replace(m, seq=m.seq - 1) if m.seq else None,
    "other client": lambda m: replace(m, client=1 - m.client),
    "phase": lambda m: replace(m, phase=Phase.EVAL if m.phase == Phase.TRAIN else Phase.TRAIN),
    "kind": lambda m: replace(m, kind={Kind.HIDDEN_A: Kind.GRAD_B, Kind.GRAD_B: Kind.HIDDEN_A,
                                       Kind.HIDDEN_B: Kind.GRAD_A, Kind.GRAD_A: Kind.HIDDEN_B}[m.kind]),
    "hidden size-1": lambda m: replace(m, tensor=m.tensor[:, :-1]),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
@pytest.mark.parametrize("t", TYPES, ids=ids_type)
def test_plausible_wrong_field_values_are_rejected(tiny, monkeypatch, t, name):
    """Re-encoded with a valid CRC (a buggy or hostile sender): the receiver's state checks catch it."""
    kind, phase, nth = t
    sc = Scenario(tiny)
    real = wire.encode
    seen = {"count": 0, "applied": False}

    def tamper(msg, dt):
        if (msg.kind, msg.phase) == (kind, phase):
            seen["count"] += 1
            if seen["count"] == nth + 1:
                bad = CORRUPTIONS[name](msg)
                if bad is not None:
                    seen["applied"] = True
                    return real(bad, dt)
        return real(msg, dt)

    monkeypatch.setattr(wire, "encode", tamper)
    try:
        sc.run(Phase.TRAIN if phase == Phase.TRAIN else Phase.PREFILL)
    except WireError as e:
        assert str(e).startswith("internal protocol error")
        assert len(sc.results) == (1 + nth if phase == Phase.DECODE else 0)
        return
    assert not seen["applied"], f"{name} on {kind.name} {phase.name} was accepted"


def test_a_rejected_message_leaves_the_receiver_unchanged(tiny):
    """The server refuses a decode step off by one, then serves the honest one: same tokens as before."""
    rt = SplitRuntime(tiny, SplitSpec(1, 1))
    ids, mask = padded_batch(LENGTHS, left=True, seed=3)
    ref = SplitRuntime(tiny, SplitSpec(1, 1))
    with torch.no_grad():
        want = ref.decode(ref.prefill(ids, mask)[:, -1].argmax(-1))
        logits = rt.prefill(ids, mask)
        msg = rt.wire.transmit(rt.clients[0].send_next(logits[:, -1].argmax(-1)))
        for bad in (replace(msg, past=msg.past + 1), replace(msg, seq=msg.seq + 1), _drop_last_sample(msg),
                    replace(msg, ints=msg.ints + 1), replace(msg, left_pad=not msg.left_pad)):
            with pytest.raises(WireError):
                rt.server.forward(bad)
        got = rt.clients[0].receive_hidden(rt.wire.transmit(rt.server.forward(msg)))
    assert torch.allclose(got, want, atol=1e-5)


def test_out_of_order_kinds_are_rejected(tiny):
    rt = SplitRuntime(tiny, SplitSpec(1, 1))
    SequentialTrainer(rt, LoraSpec(rank=2, alpha=4))
    ids, mask = padded_batch(LENGTHS, left=False, seed=3)
    with torch.no_grad():
        rt.forward(ids, mask)  # an EVAL forward: no session, no training forward
    with pytest.raises(WireError, match="a decode step needs a prefill session"):
        rt.decode(torch.tensor([1, 2]))
    with pytest.raises(WireError, match="no training forward"):
        rt.backward(0)
    # a hostile client: a GRAD_B with no training forward, a decode step with no prefill session
    grad = Message(Kind.GRAD_B, Phase.TRAIN, torch.zeros(8, 64), torch.tensor([5, 3]), 5, 0, False, 0, 2)
    with pytest.raises(WireError, match="the server expected a HIDDEN_A here"):
        rt.server.forward(grad)
    with pytest.raises(WireError, match="no training forward of client 0"):
        rt.server.backward(rt.wire.transmit(grad))
    step = Message(Kind.HIDDEN_A, Phase.DECODE, torch.zeros(2, 64), torch.tensor([5, 3]), 1, 5, False, 0, 2)
    with pytest.raises(WireError, match="no prefill session"):
        rt.server.forward(rt.wire.transmit(step))
    # a new prompt while the server awaits the GRAD_B of a training forward
    rt.train_forward(ids, mask)
    with pytest.raises(WireError, match="still awaits its GRAD_B"):
        rt.forward(ids, mask)


def test_unserved_client_is_rejected(tiny):
    rt = SplitRuntime(tiny, SplitSpec(1, 1), n_clients=2)
    ids, mask = padded_batch(LENGTHS, left=True, seed=3)
    msg = rt.clients[0].send_prompt(ids, mask, Phase.EVAL)
    with pytest.raises(WireError, match=r"client 7 is not served here \(clients \[0, 1\]\)"):
        rt.server.forward(rt.wire.transmit(replace(msg, client=7)))


# --- size cap ------------------------------------------------------------------------------------------

def _with_header(data: bytes, **fields) -> bytes:
    h = Header(*HEADER.unpack_from(data))._replace(**fields)
    prefix = HEADER.pack(*h._replace(crc=0))[:CRC_OFFSET]
    body = data[HEADER_BYTES:]
    return prefix + struct.pack("<I", zlib.crc32(body, zlib.crc32(prefix))) + body


@pytest.mark.parametrize("fields", [{"n": 2**31}, {"seqlen": 2**27}, {"batch": 0xFFFF, "seqlen": 2**20}])
def test_oversized_declared_sizes_are_refused_before_reading_the_body(captured, no_alloc, tiny, fields):
    """E.g. a seqlen of 2^27 (once a flipped bit made the server try to allocate 8.6 GB): refused from the
    32 header bytes, with a valid CRC, before the body is read or a tensor built."""
    data = _with_header(captured[("fp32", Kind.HIDDEN_A, Phase.PREFILL)], **fields)
    d, cap = tiny.model.config.hidden_size, captured[("fp32", "cap")]
    with pytest.raises(WireError, match="max_message_bytes is .*refused before reading the body"):
        decode(data, d, max_message_bytes=cap)
    asked = []

    def read(k: int) -> bytes:
        asked.append(k)
        return data[:k]

    with pytest.raises(WireError, match="refused before reading the body"):
        read_frame(read, d, cap)
    assert asked == [HEADER_BYTES] and no_alloc == []


def test_read_frame_reads_exactly_one_message(captured, tiny):
    data = captured[("bf16", Kind.HIDDEN_B, Phase.PREFILL)]
    stream = memoryview(data + b"next message")
    pos = [0]

    def read(k: int) -> bytes:
        out = bytes(stream[pos[0]: pos[0] + k])
        pos[0] += k
        return out

    frame = read_frame(read, tiny.model.config.hidden_size, captured[("bf16", "cap")])
    assert frame == data and bytes(stream[pos[0]:]) == b"next message"
    assert decode(frame, tiny.model.config.hidden_size).kind == Kind.HIDDEN_B


def test_a_flipped_seqlen_never_reaches_the_server(tiny, monkeypatch):
    rt = SplitRuntime(tiny, SplitSpec(1, 1))
    real = wire.encode
    monkeypatch.setattr(wire, "encode", lambda m, dt: real(replace(m, seqlen=m.seqlen | 2**27), dt))
    calls = []
    monkeypatch.setattr(rt.server, "forward", lambda m: calls.append(m))
    ids, mask = padded_batch(LENGTHS, left=True, seed=3)
    with pytest.raises(WireError, match="max_message_bytes"):
        rt.prefill(ids, mask)
    assert calls == []


def test_default_cap_is_derived_from_context_and_hidden_size(tiny):
    rt = SplitRuntime(tiny, SplitSpec(1, 1))
    d, ctx = tiny.model.config.hidden_size, tiny.context_length
    assert rt.wire.max_message_bytes == default_max_message_bytes(d, ctx) == HEADER_BYTES + 64 * (4 + ctx * d * 4)
    # 64 full-context fp32 sequences fit; a full-context prompt goes through
    ids, mask = padded_batch([ctx, 3], left=True, seed=1)
    with torch.no_grad():
        rt.forward(ids, mask)


def test_the_cap_is_exact_and_enforced_on_both_ends():
    d = 8
    msg = Message(Kind.HIDDEN_A, Phase.EVAL, torch.randn(6, d), torch.tensor([3, 1, 2]), 3, 0, True, 0, 0)
    size = HEADER_BYTES + 4 * 3 + 6 * d * 4  # 3 × 3 × 8 × 4 = 288 bytes padded is larger
    padded = 3 * 3 * d * 4
    assert Wire(d, max_message_bytes=max(size, padded)).transmit(msg).n == 6
    small = Wire(d, max_message_bytes=max(size, padded) - 1)
    with pytest.raises(MessageTooLargeError, match="exceed the wire's limit of 287 bytes") as e:
        small.transmit(msg)
    assert not isinstance(e.value, WireError) and isinstance(e.value, FlbenchError)  # the sender: a user-level limit
    assert small.total() == 0
    with pytest.raises(WireError, match="max_message_bytes is 287"):  # the receiver: a protocol error
        decode(wire.encode(msg, "fp32"), d, max_message_bytes=287)


# --- empty messages -------------------------------------------------------------------------------------

@pytest.mark.parametrize("lengths,phase,needle", [
    ((3, 0), Phase.PREFILL, "empty prompt in a prefill"),
    ((0, 0), Phase.PREFILL, "empty"),
    ((0, 0), Phase.EVAL, "empty"),
    ((0,), Phase.TRAIN, "empty"),
])
def test_empty_prefills_and_empty_messages_are_refused(lengths, phase, needle):
    d = 8
    n = sum(lengths)
    msg = Message(Kind.HIDDEN_A, phase, torch.randn(n, d), torch.tensor(lengths), 3, 0, True, 0, 0)
    with pytest.raises(WireError, match=needle):
        decode(wire.encode(msg, "fp32"), d)


def test_an_empty_prefill_never_reaches_the_server(tiny, monkeypatch):
    rt = SplitRuntime(tiny, SplitSpec(1, 1))
    calls = []
    monkeypatch.setattr(rt.server, "forward", lambda m: calls.append(m))
    ids, mask = padded_batch([4, 1], left=True, seed=2)
    mask[1] = 0  # the second prompt is empty
    with pytest.raises(WireError, match="empty prompt in a prefill"), torch.no_grad():
        rt.prefill(ids, mask)
    assert calls == []


def test_a_different_wire_dtype_is_rejected(captured, tiny):
    """A bf16 message (a valid one) on a link configured for fp32."""
    data = captured[("bf16", Kind.HIDDEN_A, Phase.PREFILL)]
    d = tiny.model.config.hidden_size
    assert decode(data, d).n == sum(LENGTHS)
    with pytest.raises(WireError, match="wire dtype bf16, but this link carries fp32"):
        decode(data, d, expect_dtype="fp32")


def test_unknown_flag_bits_are_rejected(captured, tiny):
    data = _with_header(captured[("fp32", Kind.HIDDEN_A, Phase.PREFILL)], flags=0x81)
    with pytest.raises(WireError, match="unknown flag bits 0x81"):
        decode(data, tiny.model.config.hidden_size)


def test_version_1_messages_are_refused(captured, tiny):
    old = b"FLB1" + b"\x01" + captured[("fp32", Kind.HIDDEN_A, Phase.PREFILL)][5:]
    with pytest.raises(WireError, match="version 49"):
        decode(old, tiny.model.config.hidden_size)
    assert np.frombuffer is not None
