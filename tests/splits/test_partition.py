"""`--split P,Q` parsing and validation: P blocks in the head, Q in the tail, at least one in the trunk."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flbench.core.errors import FlbenchError
from splits import SplitRuntime, SplitSpec, build_split, parse_split, split_sort_key


@pytest.mark.parametrize("text,expected", [("2,2", (2, 2)), ("0,0", (0, 0)), (" 5 , 7 ", (5, 7)), ("28,1", (28, 1))])
def test_parse_split_accepts_two_integers(text, expected):
    spec = parse_split(text)
    assert (spec.p, spec.q) == expected
    assert str(spec) == f"{expected[0]},{expected[1]}"


@pytest.mark.parametrize("text", ["", "2", "2,2,2", "a,b", "1.5,2", "2,x", "two,2", ",", "2;2", "+1,2", "1e1,2"])
def test_parse_split_rejects_non_integer_text(text):
    with pytest.raises(FlbenchError, match="expected two integers P,Q") as e:
        parse_split(text)
    assert repr(text) in str(e.value)  # names the bad value


@pytest.mark.parametrize("text", ["-1,2", "2,-3"])
def test_parse_split_rejects_negative(text):
    with pytest.raises(FlbenchError, match="non-negative") as e:
        parse_split(text)
    assert repr(text) in str(e.value)


@pytest.mark.parametrize("text", ["--1,2", "²,1", "1,³"])
def test_parse_split_rejects_odd_digits_with_a_user_error(text):
    with pytest.raises(FlbenchError):
        parse_split(text)


@pytest.mark.parametrize("text", ["9" * 5000 + ",1", "1," + "9" * 4301, "1234567,1", "-" + "9" * 5000 + ",0"])
def test_parse_split_refuses_huge_numbers_in_one_short_line(text):
    with pytest.raises(FlbenchError, match="--split") as e:
        parse_split(text)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 200
    if len(text) > 40:
        assert f"({len(text)} characters)" in msg


def test_parse_split_names_the_option_it_parses():
    with pytest.raises(FlbenchError, match="^splits\\[1\\] 'x'"):
        parse_split("x", option="splits[1]")


def test_split_sort_key_orders_centralized_first_then_numerically():
    order = sorted(["10,1", "2,2", "x", "centralized", "1,3", " 2 , 1 "], key=split_sort_key)
    assert order == ["centralized", "1,3", " 2 , 1 ", "2,2", "10,1", "x"]
    assert split_sort_key(None) == (-1, -1) and split_sort_key(SplitSpec(3, 4)) == (3, 4)


@settings(max_examples=25, deadline=None)
@given(text=st.text(max_size=8))
def test_parse_split_never_raises_anything_but_flbench_error(text):
    try:
        spec = parse_split(text)
    except FlbenchError:
        return
    assert spec.p >= 0 and spec.q >= 0


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 40), p=st.integers(-3, 45), q=st.integers(-3, 45))
def test_validate_accepts_exactly_the_valid_partitions(n, p, q):
    spec = SplitSpec(p, q)
    valid = p >= 0 and q >= 0 and p + q <= n - 1
    if valid:
        assert spec.validate(n) is spec
    else:
        with pytest.raises(FlbenchError, match=f"the model has {n} blocks"):
            spec.validate(n)


@pytest.mark.parametrize("p,q", [(-1, 0), (0, -1), (4, 0), (0, 4), (2, 2), (3, 1), (5, 5)])
def test_runtime_rejects_bad_split_naming_the_block_count(tiny, p, q):
    with pytest.raises(FlbenchError, match="4 blocks"):
        SplitRuntime(tiny, SplitSpec(p, q))


def test_trunk_must_keep_a_block_message(tiny):
    with pytest.raises(FlbenchError) as e:
        SplitRuntime(tiny, parse_split("2,2"))
    msg = str(e.value)
    assert "2,2" in msg and "P + Q ≤ 3" in msg and "4 blocks" in msg


@pytest.mark.real_model
def test_real_model_rejects_split_naming_30_blocks(smol):
    with pytest.raises(FlbenchError, match="30 blocks"):
        build_split(smol.model, SplitSpec(15, 15))
    with pytest.raises(FlbenchError, match="30 blocks"):
        build_split(smol.model, SplitSpec(-1, 2))


def test_zero_clients_is_rejected(tiny):
    with pytest.raises(FlbenchError, match="--clients 0"):
        SplitRuntime(tiny, SplitSpec(1, 1), n_clients=0)


@pytest.mark.parametrize("p,q", [(0, 0), (1, 2), (3, 0), (0, 3), (2, 1)])
def test_parts_cover_every_block_once(tiny, p, q):
    parts = build_split(tiny.model, SplitSpec(p, q), n_clients=2)
    n = 4
    assert parts.n_blocks == n
    assert len(parts.heads) == len(parts.tails) == 2
    for head, tail in zip(parts.heads, parts.tails):
        assert head.block_range == (0, p)
        assert tail.block_range == (n - q, n)
        assert head.embed_tokens is not None and head.lm_head is None
        assert tail.lm_head is not None and tail.norm is not None and tail.embed_tokens is None
    assert parts.trunk.block_range == (p, n - q) and parts.trunk.n_blocks >= 1
    assert parts.trunk.embed_tokens is None and parts.trunk.lm_head is None
    # parties never share module objects (each client has its own copies, none with the original model)
    params = [id(t) for m in [*parts.heads, *parts.tails, parts.trunk] for t in m.parameters()]
    params += [id(t) for t in tiny.model.parameters()]
    assert len(params) == len(set(params))
