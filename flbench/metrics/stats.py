"""Bootstrap confidence intervals over examples (Efron & Tibshirani, "An Introduction to the Bootstrap",
1993), computed with `scipy.stats.bootstrap`: `bootstrap_ci` for a mean of per-example values,
`bootstrap_statistic` for statistics recomputed on resampled units (corpus-level metrics)."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95


def bootstrap_ci(values: Sequence[float], seed: int = 0, confidence: float = DEFAULT_CONFIDENCE,
                 n_resamples: int = DEFAULT_RESAMPLES,
                 method: Literal["percentile", "BCa", "basic"] = "percentile") -> dict[str, float | int | None]:
    """{"mean", "ci_low", "ci_high", "n"} for the mean of `values`.

    Degenerate inputs do not produce NaN: no values → mean and bounds None (JSON null); one value or all
    values equal → the interval collapses to the mean. BCa falls back to the percentile interval when its
    acceleration cannot be estimated. The resampling is seeded, so the interval is reproducible.
    """
    x = np.asarray(values, dtype=float).ravel()
    if x.size and not np.all(np.isfinite(x)):
        raise ValueError("bootstrap_ci: values must be finite")
    n = int(x.size)
    if n == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = float(x.mean())
    if n == 1 or np.ptp(x) == 0:
        return {"mean": mean, "ci_low": mean, "ci_high": mean, "n": n}

    from scipy import stats

    def run(m: str) -> tuple[float, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DegenerateDataWarning for BCa on tiny samples
            res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                                  method=m, vectorized=True, batch=max(1, min(n_resamples, 2_000_000 // n)),
                                  rng=np.random.default_rng(seed))
        return float(res.confidence_interval.low), float(res.confidence_interval.high)

    low, high = run(method)
    if not (np.isfinite(low) and np.isfinite(high)) and method != "percentile":
        low, high = run("percentile")
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": n}


def bootstrap_statistic(n_units: int, statistic: Callable[[np.ndarray], Sequence[float]], seed: int = 0,
                        confidence: float = DEFAULT_CONFIDENCE,
                        n_resamples: int = DEFAULT_RESAMPLES) -> list[dict[str, float | int | None]]:
    """Percentile bootstrap CIs of statistics that are not means over units (a corpus F1, macro-F1, a
    per-question exact match): `scipy.stats.bootstrap` resamples the unit indices 0..n_units-1 with
    replacement and `statistic(indices)` recomputes every statistic (a sequence of floats) on that resample.

    Returns one {"mean", "ci_low", "ci_high", "n"} per statistic; "mean" is the statistic on all units (the
    point estimate, not the mean of the resamples). Degenerate inputs as in `bootstrap_ci`: no units → None;
    one unit → the interval collapses to the point. Seeded, so reproducible."""
    if n_units == 0:
        k = len(statistic(np.arange(0)))  # statistic of nothing, only to know how many there are
        return [{"mean": None, "ci_low": None, "ci_high": None, "n": 0} for _ in range(k)]
    point = np.asarray(statistic(np.arange(n_units)), dtype=float).ravel()
    if n_units == 1:
        return [{"mean": float(p), "ci_low": float(p), "ci_high": float(p), "n": 1} for p in point]

    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DegenerateDataWarning when every resample gives the same value
        res = stats.bootstrap((np.arange(n_units),), lambda idx: np.asarray(statistic(idx), dtype=float),
                              confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                              vectorized=False, rng=np.random.default_rng(seed))
    low = np.atleast_1d(res.confidence_interval.low)
    high = np.atleast_1d(res.confidence_interval.high)
    out = []
    for p, lo, hi in zip(point, low, high):
        if not (np.isfinite(lo) and np.isfinite(hi)):  # all resamples equal: the interval is the point
            lo = hi = p
        out.append({"mean": float(p), "ci_low": float(lo), "ci_high": float(hi), "n": n_units})
    return out
