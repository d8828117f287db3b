"""Bootstrap confidence intervals: sane on degenerate input, contain the mean, shrink with n, seeded."""
from __future__ import annotations

import math

import numpy as np
import pytest

from flbench.metrics import bootstrap_ci


def test_degenerate_inputs_do_not_give_nan():
    assert bootstrap_ci([]) == {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    assert bootstrap_ci([0.3]) == {"mean": 0.3, "ci_low": 0.3, "ci_high": 0.3, "n": 1}
    for method in ("percentile", "BCa"):
        assert bootstrap_ci([1.0] * 7, method=method) == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 7}
        res = bootstrap_ci([0.0, 1.0], method=method)
        assert all(math.isfinite(res[k]) for k in ("mean", "ci_low", "ci_high"))
    with pytest.raises(ValueError):
        bootstrap_ci([0.1, float("nan")])


@pytest.mark.parametrize("method", ["percentile", "BCa"])
def test_ci_contains_mean_and_is_seeded(method):
    x = np.random.default_rng(1).random(60)
    res = bootstrap_ci(x, seed=3, method=method)
    assert res["ci_low"] <= res["mean"] <= res["ci_high"]
    assert res["mean"] == pytest.approx(x.mean())
    assert res["ci_high"] - res["ci_low"] > 0
    assert bootstrap_ci(x, seed=3, method=method) == res


def test_ci_width_shrinks_with_n():
    rng = np.random.default_rng(0)
    widths = []
    for n in (20, 200, 2000):
        res = bootstrap_ci(rng.integers(0, 2, size=n).astype(float), seed=0)
        widths.append(res["ci_high"] - res["ci_low"])
    assert widths[0] > widths[1] > widths[2] > 0
    # about 1/sqrt(n): ten times the data, roughly a third of the width
    assert widths[2] < 0.5 * widths[1]


def test_ci_matches_normal_approximation_for_a_proportion():
    x = np.array([1.0] * 300 + [0.0] * 700)
    res = bootstrap_ci(x, seed=0)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 1000)
    assert res["ci_low"] == pytest.approx(0.3 - half, abs=0.01)
    assert res["ci_high"] == pytest.approx(0.3 + half, abs=0.01)


def test_bootstrap_statistic_for_corpus_metrics():
    from flbench.metrics import bootstrap_statistic

    x = np.random.default_rng(2).random(80)
    (mean_ci, max_ci) = bootstrap_statistic(len(x), lambda idx: [x[idx].mean(), x[idx].max()], seed=1)
    assert mean_ci["mean"] == pytest.approx(x.mean()) and max_ci["mean"] == pytest.approx(x.max())
    assert mean_ci["n"] == max_ci["n"] == 80
    # a mean statistic resampled by index gives (about) the interval of the vectorised mean bootstrap
    ref = bootstrap_ci(x, seed=1)
    assert mean_ci["ci_low"] == pytest.approx(ref["ci_low"], abs=0.01)
    assert mean_ci["ci_high"] == pytest.approx(ref["ci_high"], abs=0.01)
    assert max_ci["ci_high"] <= x.max() + 1e-12  # a resample never exceeds the sample maximum
    assert bootstrap_statistic(len(x), lambda idx: [x[idx].mean()], seed=1) == [mean_ci]  # seeded
    assert bootstrap_statistic(0, lambda idx: [float("nan")]) == [{"mean": None, "ci_low": None, "ci_high": None, "n": 0}]
    assert bootstrap_statistic(1, lambda idx: [0.25]) == [{"mean": 0.25, "ci_low": 0.25, "ci_high": 0.25, "n": 1}]
    const = bootstrap_statistic(5, lambda idx: [1.0])[0]
    assert const["ci_low"] == const["ci_high"] == 1.0
