"""`flbench generate`: every bad input ends with exit status 2 and one line naming it, before any generation."""
from __future__ import annotations

import json
import time
import warnings

import pytest
from clihelp import one_line_error

T = ["generate", "--model", "tiny-llama"]


@pytest.mark.parametrize("split", ["9" * 5000 + ",1", "1," + "9" * 5000, "9" * 7 + ",1"])
def test_split_with_thousands_of_digits(cli, split):
    line = one_line_error(cli, *T, "--split", split, "--prompt", "a")
    assert "--split" in line and "expected two integers" in line and len(line) < 300
    if len(split) > 40:
        assert f"({len(split)} characters)" in line


def test_huge_max_new_tokens_is_refused_at_once(cli):
    t0 = time.perf_counter()
    line = one_line_error(cli, *T, "--split", "1,1", "--prompt", "ab", "--max-new-tokens", "1000000000")
    assert time.perf_counter() - t0 < 30
    assert "--max-new-tokens 1000000000" in line and "context of 1024 positions" in line and "accepted 1..1022" in line


@pytest.mark.parametrize("value", ["0", "-3", "abc"])
def test_max_new_tokens_must_be_a_positive_integer(cli, value):
    line = one_line_error(cli, *T, "--split", "1,1", "--prompt", "a", "--max-new-tokens", value)
    assert "'--max-new-tokens'" in line and value in line


def test_prompt_longer_than_the_context(cli):
    line = one_line_error(cli, *T, "--split", "1,1", "--prompt", "a", "--prompt", "x" * 1500)
    assert "--prompt #2 is 1500 tokens" in line and "1024" in line


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])  # even the default value, when given explicitly
def test_wire_dtype_with_centralized(cli, dtype):
    line = one_line_error(cli, *T, "--prompt", "a", "--centralized", "--wire-dtype", dtype)
    assert f"--wire-dtype {dtype}" in line and "--centralized" in line


def test_no_kv_cache_with_centralized(cli):
    line = one_line_error(cli, *T, "--prompt", "a", "--centralized", "--no-kv-cache")
    assert "--no-kv-cache" in line and "--centralized" in line


def test_centralized_without_wire_options_runs(cli):
    code, out, err = cli(*T, "--split", "1,1", "--prompt", "a", "--centralized", "--max-new-tokens", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["mode"] == "centralized"


def _strict(text: str):
    def refuse(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_json_is_strict_and_run_prints_no_future_warning(cli, monkeypatch):
    """A run whose tokens/s is infinite (a zero-second clock) still prints strict JSON (null), and a
    normal split run raises no FutureWarning (transformers' deprecated past_key_values)."""
    import flbench.pipeline.generation as generation

    monkeypatch.setattr(generation.time, "perf_counter", lambda: 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        code, out, err = cli(*T, "--split", "1,1", "--prompt", "hello", "--max-new-tokens", "3", "--json")
    assert code == 0, err
    obj = _strict(out)
    assert obj["tokens_per_s"] is None and obj["seconds"] == 0
    assert "FutureWarning" not in err and "Loading weights" not in err


def test_a_corrupted_wire_message_is_reported_as_an_internal_protocol_error(cli, monkeypatch):
    """Not a user mistake: the one line says it is an internal protocol error, not a bad input."""
    import splits.wire as wire

    real = wire.encode

    def corrupt(msg, dtype):
        data = bytearray(real(msg, dtype))
        data[-1] ^= 0xFF
        return bytes(data)

    monkeypatch.setattr(wire, "encode", corrupt)
    code, out, err = cli(*T, "--split", "1,1", "--prompt", "a", "--max-new-tokens", "2")
    lines = err.strip().splitlines()
    assert code == 70 and out == "" and len(lines) == 1  # EX_SOFTWARE, not the user-mistake status 2
    assert lines[0].startswith("flbench: internal error: internal protocol error on the split wire") and "CRC" in lines[0]
