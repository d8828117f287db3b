"""Messages between parties, serialized to bytes without pickle, counted and tapped.

Wire format (version 2, little-endian), one message:

    header   32 bytes  struct "<3sBBBBBHHIIIII":
                       magic b"FLB", version, kind, phase, dtype, flags (bit 0: left padding), client,
                       batch, seq (messages before this one on the client's link), seqlen (new tokens per
                       sample), past (cached tokens per sample), n (vectors in the payload),
                       crc32 of the header's first 28 bytes followed by the body
    ints     4·B bytes int32: each sample's valid length (train/eval/prefill) or position (decode)
    payload  n·d·s bytes: the tensor with padding removed (n = real tokens), in the wire dtype (s bytes)

So a decode step (h_A up, h_B down, batch B) moves 2·(32 + 4·B) + 2·B·d·s bytes, and a prefill of
n real prompt tokens moves 2·(32 + 4·B) + 2·n·d·s bytes. Masks never cross the wire (see
`splits.sequence`); `Wire.stats()` reports what full masks and position ids would have cost instead.

The header declares every size, so a receiver knows the body's length (4·B + n·d·s) and the largest
tensor it would have to build (the padded B × seqlen × d batch) from the 32 header bytes alone; both are
checked against `max_message_bytes` before any body byte is read or any tensor allocated (`read_frame` is
the stream form for a socket transport). Then the CRC (over header and body: any single flipped bit is
caught), the field codes and the phase's rules (decode: one vector per sample at seqlen 1 after a cached
past; prompts: past 0, lengths within seqlen, no empty message, no empty prefill sample), the shape
against the lengths, finiteness. The parties (`splits.parties`) then check every field against their own
state: link sequence number, kind/phase against what they expect next, batch/seqlen/lengths/padding
side against the request they answer or the training forward they continue, past/positions against
their KV cache. A `WireError` is an internal protocol error (a bug or a corrupted transport), never a
user mistake: its message says so. The sender refuses to put NaN/Inf on the wire (`NonFiniteTensorError`:
numerical divergence, e.g. a too-high learning rate or an overflowing noise scale) and messages beyond the
cap (`MessageTooLargeError`: a batch too large for the wire).
"""
from __future__ import annotations

import struct
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable, NamedTuple

import numpy as np
import torch

from flbench.core.errors import FlbenchError, WireError

MAGIC = b"FLB"
VERSION = 2
HEADER = struct.Struct("<3sBBBBBHHIIIII")
HEADER_BYTES = HEADER.size  # 32
CRC_OFFSET = HEADER_BYTES - 4  # the CRC is the header's last field and covers everything else
assert HEADER_BYTES == 32
MAX_BATCH = 0xFFFF  # the header's batch field is 16 bits
FIELD_MAX = 0xFFFFFFFF
# The default cap: a message may carry CAP_SEQUENCES full-context sequences in fp32 (the widest wire dtype).
CAP_SEQUENCES = 64
FALLBACK_CONTEXT = 8192  # when the model declares no context length


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
_DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
_NUMPY = {"fp32": np.float32, "fp16": np.float16}
FLAG_LEFT_PAD = 1
RECEIVER_BYTES = 4  # the receiver rebuilds tensors in fp32


class NonFiniteTensorError(FlbenchError):
    """A party's outgoing tensor holds NaN/Inf (numerical divergence); it is refused before it is sent."""


class MessageTooLargeError(FlbenchError):
    """A party's outgoing message exceeds the wire's `max_message_bytes`; it is refused before it is sent."""


def protocol_error(detail: str) -> WireError:
    """A WireError whose message says it is an internal protocol error, not a mistake in the user's input."""
    return WireError(f"internal protocol error on the split wire (a bug or a corrupted transport, not a bad "
                     f"input): {detail}")


def default_max_message_bytes(hidden_size: int, context: int | None = None) -> int:
    """Generous but finite: CAP_SEQUENCES full-context sequences of `hidden_size` fp32 values (and their
    lengths), e.g. 64 × 8192 × 576 × 4 B ≈ 1.2 GB for smollm2-135m."""
    ctx = int(context) if context else FALLBACK_CONTEXT
    return HEADER_BYTES + CAP_SEQUENCES * (4 + ctx * int(hidden_size) * RECEIVER_BYTES)


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

    @property
    def n(self) -> int:
        return int(self.tensor.shape[0]) if self.tensor.ndim else 0

    def header_only(self) -> "Message":
        """The same header fields without the tensor (what a party remembers of a request)."""
        return Message(self.kind, self.phase, torch.empty(0), self.ints.detach().clone(), self.seqlen, self.past,
                       self.left_pad, self.client, self.seq)


class Header(NamedTuple):
    magic: bytes
    version: int
    kind: int
    phase: int
    dtype: int
    flags: int
    client: int
    batch: int
    seq: int
    seqlen: int
    past: int
    n: int
    crc: int


def _crc(header_prefix: bytes | memoryview, body: bytes | memoryview) -> int:
    return zlib.crc32(body, zlib.crc32(header_prefix))


def _sizes(batch: int, n: int, seqlen: int, hidden_size: int, wire_dtype: str) -> tuple[int, int]:
    """(message bytes, bytes of the padded fp32 batch a receiver builds) for the declared sizes."""
    return (HEADER_BYTES + 4 * batch + n * hidden_size * _DTYPE_BYTES[wire_dtype],
            batch * seqlen * hidden_size * RECEIVER_BYTES)


def encode(msg: Message, wire_dtype: str) -> bytes:
    t = msg.tensor.detach().cpu()
    if wire_dtype == "bf16":
        # numpy has no bfloat16: ship the raw 16-bit patterns
        payload = t.to(torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes()
    else:
        payload = t.to(WIRE_DTYPES[wire_dtype]).contiguous().numpy().tobytes()
    ints = msg.ints.to(device="cpu", dtype=torch.int32).contiguous().numpy().tobytes()
    body = ints + payload
    fields = (MAGIC, VERSION, int(msg.kind), int(msg.phase), _DTYPE_CODE[wire_dtype],
              FLAG_LEFT_PAD if msg.left_pad else 0, msg.client, msg.batch, msg.seq & FIELD_MAX, msg.seqlen,
              msg.past, msg.n)
    prefix = HEADER.pack(*fields, 0)[:CRC_OFFSET]
    return prefix + struct.pack("<I", _crc(prefix, body)) + body


def parse_header(data: bytes | memoryview, hidden_size: int, max_message_bytes: int) -> tuple[Header, str, int]:
    """Check the 32 header bytes on their own: magic, version, codes, and the declared sizes against the cap.
    Returns (header, wire dtype, body length). Nothing of the body is read and nothing allocated."""
    if len(data) < HEADER_BYTES:
        raise protocol_error(f"message of {len(data)} bytes is shorter than the {HEADER_BYTES}-byte header")
    h = Header(*HEADER.unpack_from(data))
    if h.magic != MAGIC or h.version != VERSION:
        raise protocol_error(f"bad header: magic {h.magic!r} version {h.version} (expected {MAGIC!r} version {VERSION})")
    try:
        kind, _, wire_dtype = Kind(h.kind), Phase(h.phase), _CODE_DTYPE[h.dtype]
    except (ValueError, KeyError):
        raise protocol_error(f"bad header: kind {h.kind}, phase {h.phase}, dtype code {h.dtype}") from None
    if h.flags & ~FLAG_LEFT_PAD:
        raise protocol_error(f"bad header: unknown flag bits {h.flags:#04x} in {kind.name} message #{h.seq}")
    total, padded = _sizes(h.batch, h.n, h.seqlen, hidden_size, wire_dtype)
    if total > max_message_bytes or padded > max_message_bytes:
        raise protocol_error(
            f"{kind.name} message #{h.seq} declares {total} bytes (batch {h.batch}, {h.n} vectors) and a padded "
            f"{h.batch}×{h.seqlen}×{hidden_size} batch of {padded} bytes; the receiver's max_message_bytes is "
            f"{max_message_bytes}: refused before reading the body")
    return h, wire_dtype, total - HEADER_BYTES


def read_frame(read: Callable[[int], bytes], hidden_size: int, max_message_bytes: int) -> bytes:
    """Read one message from a byte stream (`read(k)` returns exactly k bytes): the header first, its
    declared sizes checked against the cap, then exactly the declared body. `decode` the result."""
    head = read(HEADER_BYTES)
    _, _, body_len = parse_header(head, hidden_size, max_message_bytes)
    return bytes(head) + bytes(read(body_len))


def decode(data: bytes, hidden_size: int, expect_kind: Kind | None = None,
           max_message_bytes: int | None = None, expect_dtype: str | None = None) -> Message:
    """Deserialize and validate one message on its own (the receiving party then checks it against its state)."""
    cap = default_max_message_bytes(hidden_size) if max_message_bytes is None else max_message_bytes
    h, wire_dtype, body_len = parse_header(data, hidden_size, cap)
    kind, phase = Kind(h.kind), Phase(h.phase)
    what = f"{kind.name} {phase.name.lower()} message #{h.seq}"
    if len(data) != HEADER_BYTES + body_len:
        raise protocol_error(f"{what}: the header declares a {body_len}-byte body (batch {h.batch}, {h.n} vectors "
                             f"of {hidden_size} {wire_dtype}), got {len(data) - HEADER_BYTES} bytes")
    view = memoryview(data)
    if _crc(view[:CRC_OFFSET], view[HEADER_BYTES:]) != h.crc:
        raise protocol_error(f"{what}: CRC mismatch (corrupted in transit)")
    if expect_kind is not None and kind != expect_kind:
        raise protocol_error(f"expected a {expect_kind.name} message, got {kind.name}")
    if expect_dtype is not None and wire_dtype != expect_dtype:
        raise protocol_error(f"{what}: wire dtype {wire_dtype}, but this link carries {expect_dtype}")
    _check_fields(h, kind, phase, what)
    ints = torch.from_numpy(np.frombuffer(view[HEADER_BYTES:HEADER_BYTES + 4 * h.batch], dtype=np.int32).copy()).long()
    _check_ints(h, phase, ints, what)
    payload = view[HEADER_BYTES + 4 * h.batch:]
    if wire_dtype == "bf16":
        arr = torch.from_numpy(np.frombuffer(payload, dtype=np.int16).copy()).view(torch.bfloat16)
    else:
        arr = torch.from_numpy(np.frombuffer(payload, dtype=_NUMPY[wire_dtype]).copy())
    tensor = arr.reshape(h.n, hidden_size).to(torch.float32)
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise protocol_error(f"{what}: tensor holds {bad} NaN/Inf values; rejected")
    return Message(kind, phase, tensor, ints, h.seqlen, h.past, bool(h.flags & FLAG_LEFT_PAD), h.client, h.seq)


def _check_fields(h: Header, kind: Kind, phase: Phase, what: str) -> None:
    """The phase's rules on the header alone."""
    if h.batch == 0:
        raise protocol_error(f"{what}: batch 0")
    if kind in (Kind.GRAD_A, Kind.GRAD_B) and phase != Phase.TRAIN:
        raise protocol_error(f"{what}: gradients only travel in training")
    if phase == Phase.DECODE:
        if h.seqlen != 1 or h.past < 1 or h.n != h.batch:
            raise protocol_error(f"{what}: a decode step carries one new token per sample after a cached past "
                                 f"(seqlen 1, past ≥ 1, {h.batch} vectors); got seqlen {h.seqlen}, past {h.past}, "
                                 f"{h.n} vectors")
    else:
        if h.past != 0:
            raise protocol_error(f"{what}: past {h.past}: only decode steps continue a cached past")
        if h.n == 0:
            raise protocol_error(f"{what}: empty (no real tokens in any of its {h.batch} samples)")


def _check_ints(h: Header, phase: Phase, ints: torch.Tensor, what: str) -> None:
    if phase == Phase.DECODE:
        # a sample's position is the number of its real tokens so far: at least its prompt's one, at most past
        if not bool(((ints >= 1) & (ints <= h.past)).all()):
            raise protocol_error(f"{what}: positions {ints.tolist()[:8]} outside 1..past {h.past}")
        return
    if not bool(((ints >= 0) & (ints <= h.seqlen)).all()) or int(ints.sum()) != h.n:
        raise protocol_error(f"{what}: shape mismatch: {h.n} vectors for lengths {ints.tolist()[:8]} "
                             f"(batch {h.batch}, seqlen {h.seqlen})")
    if phase == Phase.PREFILL and not bool((ints >= 1).all()):
        raise protocol_error(f"{what}: empty prompt in a prefill (lengths {ints.tolist()[:8]}): nothing to "
                             "generate from")


Tap = Callable[[str, Message], None]


@dataclass
class Wire:
    """The in-process transport: every message is serialized, counted, deserialized and validated.

    `max_message_bytes` caps what a receiver accepts (declared sizes, checked before allocation); None →
    `default_max_message_bytes(hidden_size, context)`. Senders stamp `seq` (their link counter)."""

    hidden_size: int
    dtype: str = "fp32"
    taps: list[Tap] = field(default_factory=list)
    bytes_by: dict = field(default_factory=lambda: defaultdict(int))  # (direction, kind, phase) → bytes
    messages_by: dict = field(default_factory=lambda: defaultdict(int))
    mask_bytes_sent: int = 0
    mask_bytes_full: int = 0
    max_message_bytes: int | None = None
    context: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in WIRE_DTYPES:
            raise FlbenchError(f"--wire-dtype {self.dtype!r}: accepted {', '.join(WIRE_DTYPES)}")
        if self.max_message_bytes is None:
            self.max_message_bytes = default_max_message_bytes(self.hidden_size, self.context)
        if self.max_message_bytes < HEADER_BYTES:
            raise FlbenchError(f"max_message_bytes {self.max_message_bytes}: must be at least {HEADER_BYTES}")

    def transmit(self, msg: Message) -> Message:
        """In process: serialize, count, deserialize + validate, taps."""
        data = self.send_bytes(msg)
        self.count(msg, len(data))
        return self.receive_bytes(data, msg.kind)

    def send_bytes(self, msg: Message) -> bytes:
        """The sender's half: refuse NaN/Inf and oversized messages, then encode (nothing counted)."""
        t = msg.tensor.detach()
        where = f"{DIRECTION[msg.kind]} {msg.kind.name} message #{msg.seq} ({msg.phase.name.lower()})"
        bad = int((~torch.isfinite(t)).sum())
        over = 0 if bad or self.dtype == "fp32" else int((~torch.isfinite(t.to(WIRE_DTYPES[self.dtype]))).sum())
        if bad or over:
            what = (f"holds {bad} NaN/Inf values (numerical overflow or divergence)" if bad else
                    f"has {over} values beyond the range of --wire-dtype {self.dtype} (use fp32 or bf16)")
            raise NonFiniteTensorError(f"{where}: the sender's tensor {what}; not sent")
        total, padded = _sizes(msg.batch, msg.n, msg.seqlen, self.hidden_size, self.dtype)
        if msg.batch > MAX_BATCH or max(total, padded) > self.max_message_bytes:
            raise MessageTooLargeError(
                f"{where}: {msg.batch} sequences of up to {msg.seqlen} tokens ({max(total, padded)} bytes) exceed "
                f"the wire's limit of {self.max_message_bytes} bytes per message (and {MAX_BATCH} sequences); "
                "use a smaller batch or shorter sequences")
        return encode(msg, self.dtype)

    def count(self, msg: Message, nbytes: int) -> None:
        """Count one message (bytes and messages by direction, kind and phase; what masks would have cost)."""
        key = (DIRECTION[msg.kind], msg.kind.name, msg.phase.name)
        self.bytes_by[key] += nbytes
        self.messages_by[key] += 1
        # what full masks would cost: a bool (B, new, past+new) mask plus int64 (B, new) position ids
        self.mask_bytes_sent += 4 * msg.batch
        self.mask_bytes_full += msg.batch * msg.seqlen * (msg.past + msg.seqlen) + 8 * msg.batch * msg.seqlen

    def receive_bytes(self, data: bytes, expect_kind: Kind | None = None, tap: bool = True) -> Message:
        """The receiver's half: decode + validate (header and cap first, CRC, fields, finiteness), then taps."""
        received = decode(data, self.hidden_size, expect_kind=expect_kind, max_message_bytes=self.max_message_bytes,
                          expect_dtype=self.dtype)
        if tap:
            for t in self.taps:
                t(DIRECTION[received.kind], received)
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
