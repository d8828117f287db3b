"""Client shards: disjoint, covering, seeded; Dirichlet(α) shards skew the label mix (more for small α)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flbench.core.errors import FlbenchError
from splits.shards import client_shards, dirichlet_shards, iid_shards


def assert_partition(shards: list[list[int]], n: int, k: int) -> None:
    assert len(shards) == k and all(shards)
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(n))  # disjoint and covering
    assert all(s == sorted(s) for s in shards)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), k=st.integers(1, 12), seed=st.integers(0, 2**31))
def test_iid_shards_partition_the_data_evenly(n, k, seed):
    if k > n:
        with pytest.raises(FlbenchError, match=f"--clients {k}: only {n} training example"):
            iid_shards(n, k, seed)
        return
    shards = iid_shards(n, k, seed)
    assert_partition(shards, n, k)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert iid_shards(n, k, seed) == shards  # seeded


def test_one_client_keeps_everything_in_order():
    assert iid_shards(7, 1, seed=3) == [list(range(7))]
    assert dirichlet_shards([0, 1, 1, 0, 2], 1, 0.1) == [list(range(5))]


def test_iid_shards_depend_on_the_seed():
    assert iid_shards(100, 4, seed=0) != iid_shards(100, 4, seed=1)


def _fractions(shards, labels, label=1):
    return [sum(labels[i] == label for i in s) / len(s) for s in shards]


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 6), alpha=st.sampled_from([0.5, 1.0, 10.0]), seed=st.integers(0, 2**31),
       n_labels=st.integers(1, 4))
def test_dirichlet_shards_partition_the_data(k, alpha, seed, n_labels):
    """(Smaller α with a single label and many clients can leave a client empty in every draw: that is the
    one-line error below, not a partition.)"""
    labels = [i % n_labels for i in range(120)]
    shards = dirichlet_shards(labels, k, alpha, seed)
    assert_partition(shards, 120, k)
    assert dirichlet_shards(labels, k, alpha, seed) == shards  # seeded


def test_dirichlet_shards_are_non_iid_and_alpha_sets_the_skew():
    labels = [0, 1] * 200  # balanced
    skewed = dirichlet_shards(labels, 4, 0.1, seed=0)
    mild = dirichlet_shards(labels, 4, 1000.0, seed=0)
    f_skewed, f_mild = _fractions(skewed, labels), _fractions(mild, labels)
    assert max(f_skewed) - min(f_skewed) > 0.5, f_skewed  # label proportions differ between clients
    assert max(f_mild) - min(f_mild) < 0.15, f_mild  # large α: close to IID
    assert dirichlet_shards(labels, 4, 0.1, seed=1) != skewed  # the seed matters
    iid = iid_shards(len(labels), 4, seed=0)
    assert max(_fractions(iid, labels)) - min(_fractions(iid, labels)) < 0.2


@pytest.mark.parametrize("call,needle", [
    (lambda: dirichlet_shards([0, 1, 0], 2, 0.0), "α must be a finite number > 0"),
    (lambda: dirichlet_shards([0, 1, 0], 2, float("nan")), "α must be a finite number > 0"),
    (lambda: dirichlet_shards([0, -1, 0], 2, 1.0), "needs a class label"),
    (lambda: dirichlet_shards([0, 1], 3, 1.0), "--clients 3: only 2 training example"),
    (lambda: dirichlet_shards([0, 0, 0, 1], 4, 1e-4), "draws all left a client without examples"),
    (lambda: client_shards(5, 2, alpha=0.5), "needs one class label per training example"),
])
def test_impossible_shards_are_one_line_errors(call, needle):
    with pytest.raises(FlbenchError, match=needle) as e:
        call()
    assert "\n" not in str(e.value)
