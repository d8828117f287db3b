"""Messages between parties, serialized to bytes without pickle, counted and tapped.

Wire format (little-endian), one message:

    header   32 bytes  struct "<4sBBBBHHIIIII":
                       magic b"FLB1", version, kind, phase, dtype, flags, client,
                       seq, batch, seqlen (new tokens per sample), past (cached tokens per sample),
                       crc32 (of everything after the header)
    ints     4·B bytes int32: each sample's valid length (train/eval/prefill) or position (decode)
    payload  n·d·s bytes: the tensor with padding removed (n = real tokens), in the wire dtype (s bytes)

So a decode step (h_A up, h_B down, batch B) moves 2·(32 + 4·B) + 2·B·d·s bytes, and a prefill of
n real prompt tokens moves 2·(32 + 4·B) + 2·n·d·s bytes. Masks never cross the wire (see
`splits.sequence`); `Wire.stats()` reports what full masks and position ids would have cost instead.
The receiver validates magic, version, kind, phase, hidden size, shape consistency, the CRC and
finiteness, and raises `WireError` on any mismatch. A `WireError` is an internal protocol error (a bug or a
corrupted transport), never a user mistake: its message says so. The sender refuses to put NaN/Inf on the
wire (`NonFiniteTensorError`: numerical divergence, e.g. a too-high learning rate or an overflowing noise scale).
"""
from __future__ import annotations

import struct
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable

import numpy as np
import torch

from flbench.core.errors import FlbenchError, WireError

MAGIC = b"FLB1"
VERSION = 1
HEADER = struct.Struct("<4sBBBBHHIIIII")
HEADER_BYTES = HEADER.size  # 32
assert HEADER_BYTES == 32


class Kind(IntEnum):
    HIDDEN_A = 1  # head output h_A, client → server (after the defense)
    HIDDEN_B = 2  # trunk output h_B, server → client
    GRAD_B = 3  # dL/dh_B, client → server
    GRAD_A = 4  # dL/dh_A, server → client


class Phase(IntEnum):
    TRAIN = 0
    EVAL = 1
    PREFILL = 2
    DECODE = 3


DIRECTION = {
    Kind.HIDDEN_A: "client->server",
    Kind.GRAD_B: "client->server",
    Kind.HIDDEN_B: "server->client",
    Kind.GRAD_A: "server->client",
}

WIRE_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_DTYPE_CODE = {"fp32": 0, "bf16": 1, "fp16": 2}
_CODE_DTYPE = {v: k for k, v in _DTYPE_CODE.items()}
_NUMPY = {"fp32": np.float32, "fp16": np.float16}
FLAG_LEFT_PAD = 1


class NonFiniteTensorError(FlbenchError):
    """A party's outgoing tensor holds NaN/Inf (numerical divergence); it is refused before it is sent."""


def protocol_error(detail: str) -> WireError:
    """A WireError whose message says it is an internal protocol error, not a mistake in the user's input."""
    return WireError(f"internal protocol error on the split wire (a bug or a corrupted transport, not a bad "
                     f"input): {detail}")


@dataclass
class Message:
    kind: Kind
    phase: Phase
    tensor: torch.Tensor  # (n, d) real tokens only
    ints: torch.Tensor  # (B,) lengths or positions
    seqlen: int
    past: int = 0
    left_pad: bool = True
    client: int = 0
    seq: int = 0

    @property
    def batch(self) -> int:
        return int(self.ints.shape[0])


def encode(msg: Message, wire_dtype: str) -> bytes:
    t = msg.tensor.detach()
    if wire_dtype == "bf16":
        # numpy has no bfloat16: ship the raw 16-bit patterns
        payload = t.to(torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes()
    else:
        payload = t.to(WIRE_DTYPES[wire_dtype]).contiguous().numpy().tobytes()
    ints = msg.ints.to(torch.int32).contiguous().numpy().tobytes()
    body = ints + payload
    header = HEADER.pack(
        MAGIC, VERSION, int(msg.kind), int(msg.phase), _DTYPE_CODE[wire_dtype],
        FLAG_LEFT_PAD if msg.left_pad else 0, msg.client, msg.seq, msg.batch, msg.seqlen, msg.past,
        zlib.crc32(body),
    )
    return header + body


def decode(data: bytes, hidden_size: int, expect_kind: Kind | None = None) -> Message:
    if len(data) < HEADER_BYTES:
        raise protocol_error(f"message of {len(data)} bytes is shorter than the {HEADER_BYTES}-byte header")
    magic, version, kind, phase, dcode, flags, client, seq, batch, seqlen, past, crc = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise protocol_error(f"bad header: magic {magic!r} version {version} (expected {MAGIC!r} version {VERSION})")
    try:
        kind, phase, wire_dtype = Kind(kind), Phase(phase), _CODE_DTYPE[dcode]
    except (ValueError, KeyError):
        raise protocol_error(f"bad header: kind {kind}, phase {phase}, dtype code {dcode}") from None
    if expect_kind is not None and kind != expect_kind:
        raise protocol_error(f"expected a {expect_kind.name} message, got {kind.name}")
    body = memoryview(data)[HEADER_BYTES:]
    if zlib.crc32(body) != crc:
        raise protocol_error(f"{kind.name} message #{seq}: CRC mismatch (corrupted in transit)")
    ints_bytes = 4 * batch
    if batch == 0 or len(body) < ints_bytes:
        raise protocol_error(f"{kind.name} message #{seq}: batch {batch} does not fit a body of {len(body)} bytes")
    ints = torch.from_numpy(np.frombuffer(body[:ints_bytes], dtype=np.int32).copy()).long()
    elem = torch.tensor([], dtype=WIRE_DTYPES[wire_dtype]).element_size()
    payload = body[ints_bytes:]
    if len(payload) % (hidden_size * elem):
        raise protocol_error(
            f"{kind.name} message #{seq}: payload of {len(payload)} bytes is not a whole number of "
            f"{hidden_size}-dim {wire_dtype} vectors"
        )
    n = len(payload) // (hidden_size * elem)
    if phase == Phase.DECODE:
        consistent = n == batch and bool((ints >= 0).all())
    else:
        consistent = n == int(ints.sum()) and bool(((ints >= 0) & (ints <= seqlen)).all())
    if not consistent:
        raise protocol_error(
            f"{kind.name} message #{seq}: shape mismatch: {n} vectors for {'positions' if phase == Phase.DECODE else 'lengths'} "
            f"{ints.tolist()[:8]} (batch {batch}, seqlen {seqlen}, phase {phase.name})"
        )
    if wire_dtype == "bf16":
        arr = torch.from_numpy(np.frombuffer(payload, dtype=np.int16).copy()).view(torch.bfloat16)
    else:
        arr = torch.from_numpy(np.frombuffer(payload, dtype=_NUMPY[wire_dtype]).copy())
    tensor = arr.reshape(n, hidden_size).to(torch.float32)
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise protocol_error(f"{kind.name} message #{seq}: tensor holds {bad} NaN/Inf values; rejected")
    return Message(kind, phase, tensor, ints, seqlen, past, bool(flags & FLAG_LEFT_PAD), client, seq)


Tap = Callable[[str, Message], None]


@dataclass
class Wire:
    """The in-process transport: every message is serialized, counted, deserialized and validated."""

    hidden_size: int
    dtype: str = "fp32"
    taps: list[Tap] = field(default_factory=list)
    bytes_by: dict = field(default_factory=lambda: defaultdict(int))  # (direction, kind, phase) → bytes
    messages_by: dict = field(default_factory=lambda: defaultdict(int))
    mask_bytes_sent: int = 0
    mask_bytes_full: int = 0
    _seq: int = 0

    def __post_init__(self) -> None:
        if self.dtype not in WIRE_DTYPES:
            raise FlbenchError(f"--wire-dtype {self.dtype!r}: accepted {', '.join(WIRE_DTYPES)}")

    def transmit(self, msg: Message) -> Message:
        msg.seq = self._seq
        self._seq += 1
        t = msg.tensor.detach()
        bad = int((~torch.isfinite(t)).sum())
        over = 0 if bad or self.dtype == "fp32" else int((~torch.isfinite(t.to(WIRE_DTYPES[self.dtype]))).sum())
        if bad or over:
            what = (f"holds {bad} NaN/Inf values (numerical overflow or divergence)" if bad else
                    f"has {over} values beyond the range of --wire-dtype {self.dtype} (use fp32 or bf16)")
            raise NonFiniteTensorError(f"{DIRECTION[msg.kind]} {msg.kind.name} message #{msg.seq} "
                                       f"({msg.phase.name.lower()}): the sender's tensor {what}; not sent")
        data = encode(msg, self.dtype)
        key = (DIRECTION[msg.kind], msg.kind.name, msg.phase.name)
        self.bytes_by[key] += len(data)
        self.messages_by[key] += 1
        # what full masks would cost: a bool (B, new, past+new) mask plus int64 (B, new) position ids
        self.mask_bytes_sent += 4 * msg.batch
        self.mask_bytes_full += msg.batch * msg.seqlen * (msg.past + msg.seqlen) + 8 * msg.batch * msg.seqlen
        received = decode(data, self.hidden_size, expect_kind=msg.kind)
        for tap in self.taps:
            tap(DIRECTION[msg.kind], received)
        return received

    def total(self, phase: str | None = None, direction: str | None = None) -> int:
        return sum(
            v for (d, _k, p), v in self.bytes_by.items() if (phase is None or p == phase) and (direction is None or d == direction)
        )

    def n_messages(self, phase: str | None = None) -> int:
        return sum(v for (_d, _k, p), v in self.messages_by.items() if phase is None or p == phase)

    def reset(self) -> None:
        self.bytes_by.clear()
        self.messages_by.clear()
        self.mask_bytes_sent = self.mask_bytes_full = 0

    def stats(self) -> dict:
        return {
            "dtype": self.dtype,
            "header_bytes": HEADER_BYTES,
            "bytes_total": self.total(),
            "messages": self.n_messages(),
            "by_kind": {f"{d} {k} {p}": v for (d, k, p), v in sorted(self.bytes_by.items())},
            "mask_bytes_sent": self.mask_bytes_sent,
            "mask_bytes_full_equivalent": self.mask_bytes_full,
            "mask_bytes_saved": self.mask_bytes_full - self.mask_bytes_sent,
        }


class RecordingTap:
    """Records what the server received (and, separately, what it sent): the attacker's view."""

    def __init__(self) -> None:
        self.received: list[Message] = []
        self.sent: list[Message] = []

    def __call__(self, direction: str, msg: Message) -> None:
        (self.received if direction == "client->server" else self.sent).append(msg)
