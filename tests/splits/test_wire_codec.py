"""The wire format: round trips per dtype, and rejection of malformed or non-finite messages."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flbench.core.errors import FlbenchError, WireError
from splits.wire import (
    CRC_OFFSET,
    HEADER,
    HEADER_BYTES,
    MAGIC,
    Header,
    Kind,
    Message,
    NonFiniteTensorError,
    Phase,
    Wire,
    decode,
    encode,
)

D = 8


def make_msg(lengths=(3, 1, 2), seqlen=3, kind=Kind.HIDDEN_A, phase=Phase.EVAL, d=D, seed=0, past=0) -> Message:
    g = torch.Generator().manual_seed(seed)
    n = sum(lengths) if phase != Phase.DECODE else len(lengths)
    return Message(kind, phase, torch.randn(n, d, generator=g), torch.tensor(lengths), seqlen, past, True, 1, 7)


def reheader(data: bytes, body: bytes | None = None, **fields) -> bytes:
    """Rewrite header fields (and optionally the body) with a *valid* CRC (over header and body), to reach
    the later checks."""
    values = Header(*HEADER.unpack_from(data))._replace(**fields)
    body = data[HEADER_BYTES:] if body is None else body
    prefix = HEADER.pack(*values._replace(crc=0))[:CRC_OFFSET]
    return prefix + struct.pack("<I", zlib.crc32(body, zlib.crc32(prefix))) + body


# --- round trips ----------------------------------------------------------------------------------------

def test_fp32_round_trip_is_exact_and_keeps_the_header():
    msg = make_msg()
    data = encode(msg, "fp32")
    assert len(data) == HEADER_BYTES + 4 * 3 + 6 * D * 4
    got = decode(data, D, expect_kind=Kind.HIDDEN_A)
    assert torch.equal(got.tensor, msg.tensor)
    assert got.ints.tolist() == [3, 1, 2]
    assert (got.kind, got.phase, got.seqlen, got.past, got.left_pad, got.client, got.seq) == (
        Kind.HIDDEN_A, Phase.EVAL, 3, 0, True, 1, 7)
    assert got.tensor.dtype == torch.float32


finite = st.floats(min_value=-6e4, max_value=6e4, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=25, deadline=None)
@given(values=st.lists(finite, min_size=D, max_size=4 * D).map(lambda v: v[: len(v) // D * D]),
       dtype=st.sampled_from(["bf16", "fp16"]))
def test_half_precision_round_trip_within_dtype_precision(values, dtype):
    t = torch.tensor(values, dtype=torch.float32).view(-1, D)
    n = t.shape[0]
    msg = Message(Kind.HIDDEN_B, Phase.TRAIN, t, torch.tensor([n]), n)
    data = encode(msg, dtype)
    assert len(data) == HEADER_BYTES + 4 + n * D * 2
    got = decode(data, D, expect_kind=Kind.HIDDEN_B).tensor
    # exactly what a cast to the wire dtype gives ...
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    assert torch.equal(got, t.to(torch_dtype).to(torch.float32))
    # ... which is within half an ulp: relative 2^-9 (bf16, 8 significant bits) / 2^-11 (fp16) for normal
    # numbers, plus the absolute spacing of subnormals near zero
    rel, tiny_abs = {"bf16": (2.0**-8, 1e-38), "fp16": (2.0**-11, 2.0**-24)}[dtype]
    assert ((got - t).abs() <= rel * t.abs() + tiny_abs).all()


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_wire_transmit_round_trip_per_dtype(dtype):
    w = Wire(D, dtype)
    msg = make_msg()
    got = w.transmit(msg)
    tol = {"fp32": 0.0, "bf16": 2.0**-8, "fp16": 2.0**-11}[dtype]
    assert torch.allclose(got.tensor, msg.tensor, rtol=tol, atol=1e-6)
    assert w.total() == HEADER_BYTES + 4 * 3 + 6 * D * {"fp32": 4, "bf16": 2, "fp16": 2}[dtype]


def test_unknown_wire_dtype_is_a_user_error():
    with pytest.raises(FlbenchError, match="fp32, bf16, fp16"):
        Wire(D, "int8")


# --- rejection ------------------------------------------------------------------------------------------

def test_bad_magic():
    data = encode(make_msg(), "fp32")
    with pytest.raises(WireError, match="magic"):
        decode(b"XXXX" + data[4:], D)


def test_bad_version():
    data = reheader(encode(make_msg(), "fp32"), version=9)
    with pytest.raises(WireError, match="version 9"):
        decode(data, D)


@pytest.mark.parametrize("field,value", [("kind", 99), ("phase", 42), ("dtype", 7)])
def test_unknown_header_codes(field, value):
    data = reheader(encode(make_msg(), "fp32"), **{field: value})
    with pytest.raises(WireError, match="bad header"):
        decode(data, D)


def test_wrong_expected_kind():
    data = encode(make_msg(kind=Kind.HIDDEN_A), "fp32")
    with pytest.raises(WireError, match="expected a HIDDEN_B message, got HIDDEN_A"):
        decode(data, D, expect_kind=Kind.HIDDEN_B)


def test_shorter_than_header():
    data = encode(make_msg(), "fp32")
    for cut in (0, 1, HEADER_BYTES - 1):
        with pytest.raises(WireError, match="shorter than the 32-byte header"):
            decode(data[:cut], D)


@pytest.mark.parametrize("cut", [1, 4, D * 4, D * 4 + 3])
def test_truncated_message_is_refused_by_its_declared_size(cut):
    data = encode(make_msg(), "fp32")
    with pytest.raises(WireError, match="declares a 204-byte body .*got"):
        decode(data[:-cut], D)
    with pytest.raises(WireError, match="declares a 204-byte body .*got"):  # and with a valid CRC
        decode(reheader(data, body=data[HEADER_BYTES:-cut]), D)


def test_missing_vector_with_valid_crc_is_a_shape_mismatch():
    data = encode(make_msg(), "fp32")  # lengths 3,1,2 → 6 vectors
    truncated = reheader(data, body=data[HEADER_BYTES:-D * 4], n=5)  # 5 vectors, declared as such
    with pytest.raises(WireError, match="shape mismatch"):
        decode(truncated, D)


@pytest.mark.parametrize("lengths", [(3, 1, 1), (3, 2, 2), (4, 0, 2), (3, -1, 4)])
def test_lengths_not_matching_payload(lengths):
    """Same 6-vector payload, but the header's lengths say otherwise (or exceed seqlen = 3, or are negative)."""
    data = encode(make_msg(), "fp32")
    body = np.asarray(lengths, dtype=np.int32).tobytes() + data[HEADER_BYTES + 12:]
    with pytest.raises(WireError, match="shape mismatch"):
        decode(reheader(data, body=body), D)


def test_batch_larger_than_body():
    data = reheader(encode(make_msg(), "fp32"), batch=60000)
    with pytest.raises(WireError, match="batch 60000, 6 vectors"):
        decode(data, D)


def test_zero_batch_is_rejected():
    data = encode(make_msg(), "fp32")
    with pytest.raises(WireError, match="batch 0"):
        decode(reheader(data, batch=0, body=data[HEADER_BYTES + 12:]), D)


def test_receiver_hidden_size_mismatch():
    data = encode(make_msg(d=D), "fp32")  # 6 vectors × 8 = 48 floats
    for d in (16, 5):
        with pytest.raises(WireError, match=f"vectors of {d} fp32"):
            decode(data, d)


def test_decode_phase_needs_one_vector_per_sample():
    msg = make_msg(lengths=(4, 9), seqlen=1, phase=Phase.DECODE, past=9)  # positions 4 and 9, 2 vectors
    assert decode(encode(msg, "fp32"), D).ints.tolist() == [4, 9]
    data = encode(msg, "fp32")
    extra = reheader(data, body=data[HEADER_BYTES:] + data[-D * 4:], n=3)
    with pytest.raises(WireError, match="one new token per sample"):
        decode(extra, D)


@pytest.mark.parametrize("where", [HEADER_BYTES, HEADER_BYTES + 12, -1, 8, 12, 20, 28, 31])  # body; client, seq, past, crc
def test_crc_mismatch(where):
    data = bytearray(encode(make_msg(), "fp32"))
    data[where] ^= 0x10
    with pytest.raises(WireError, match="CRC mismatch"):
        decode(bytes(data), D)


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_tensor_is_rejected(dtype, bad):
    msg = make_msg()
    msg.tensor[4, 2] = bad
    with pytest.raises(WireError, match="1 NaN/Inf values; rejected"):
        decode(encode(msg, dtype), D)
    w = Wire(D, dtype)
    with pytest.raises(NonFiniteTensorError, match="1 NaN/Inf values .*; not sent"):  # the sender refuses
        w.transmit(msg)
    assert w.total() == 0


def test_wire_error_says_it_is_an_internal_protocol_error():
    data = bytearray(encode(make_msg(), "fp32"))
    data[-1] ^= 0xFF
    with pytest.raises(WireError, match="^internal protocol error .*not a bad input.*CRC mismatch"):
        decode(bytes(data), D)


def test_fp16_overflow_is_rejected_not_silently_clipped():
    msg = make_msg()
    msg.tensor[0, 0] = 1e6  # finite in fp32, inf in fp16
    with pytest.raises(WireError, match="NaN/Inf"):
        decode(encode(msg, "fp16"), D)
    with pytest.raises(NonFiniteTensorError, match="beyond the range of --wire-dtype fp16"):
        Wire(D, "fp16").transmit(msg)


def test_wire_error_is_a_flbench_error():
    assert issubclass(WireError, FlbenchError)
    assert struct.calcsize(HEADER.format) == HEADER_BYTES == 32
    assert encode(make_msg(), "fp32")[:3] == MAGIC
