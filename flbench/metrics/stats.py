"""Bootstrap confidence intervals for a mean over examples (Efron & Tibshirani, "An Introduction to the
Bootstrap", 1993), computed with `scipy.stats.bootstrap`."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
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
