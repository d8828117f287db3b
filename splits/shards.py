"""Each client's own shard of the training examples: IID, or non-IID by label with Dirichlet(α).

IID: a seeded shuffle cut into K near-equal parts. Non-IID (Hsu et al. 2019, "Measuring the effects of
non-identical data distribution for federated visual classification"): for every label, a draw
p ~ Dirichlet(α·1_K) splits that label's examples among the K clients; small α gives each client a few
dominant labels, large α approaches IID. Draws that leave a client empty are redrawn (same seeded
generator). Shards are disjoint, cover every example, and list indices in ascending order (so one client
keeps the data in its original order).
"""
from __future__ import annotations

import math
from typing import Sequence

from flbench.core.errors import FlbenchError

MAX_DRAWS = 100


def _check(n: int, k: int) -> None:
    if k < 1:
        raise FlbenchError(f"--clients {k}: need at least 1 client")
    if n < k:
        raise FlbenchError(f"--clients {k}: only {n} training example(s); each client needs at least one "
                           f"(use at most {n} clients or more data)")


def iid_shards(n: int, k: int, seed: int = 0) -> list[list[int]]:
    """K near-equal random parts of range(n) (sizes differ by at most one)."""
    import numpy as np

    _check(n, k)
    perm = np.random.default_rng(seed).permutation(n)
    return [sorted(int(i) for i in part) for part in np.array_split(perm, k)]


def dirichlet_shards(labels: Sequence[int], k: int, alpha: float, seed: int = 0) -> list[list[int]]:
    """Split example indices among K clients, label by label, in Dirichlet(α) proportions."""
    import numpy as np

    if not (math.isfinite(alpha) and alpha > 0):
        raise FlbenchError(f"--non-iid {alpha}: the Dirichlet concentration α must be a finite number > 0")
    if any(int(y) < 0 for y in labels):
        raise FlbenchError(f"--non-iid {alpha}: every example needs a class label to shard by label")
    _check(len(labels), k)
    rng = np.random.default_rng(seed)
    ys = np.asarray(labels, dtype=np.int64)
    for _ in range(MAX_DRAWS):
        shards: list[list[int]] = [[] for _ in range(k)]
        for y in np.unique(ys):
            idx = rng.permutation(np.flatnonzero(ys == y))
            cuts = (np.cumsum(rng.dirichlet(np.full(k, alpha))) * len(idx)).round().astype(int)[:-1]
            for c, part in enumerate(np.split(idx, cuts)):
                shards[c].extend(int(i) for i in part)
        if min(len(s) for s in shards) > 0:
            return [sorted(s) for s in shards]
    raise FlbenchError(f"--non-iid {alpha}: {MAX_DRAWS} Dirichlet draws all left a client without examples "
                       f"({len(labels)} examples, {k} clients); use a larger α or fewer clients")


def client_shards(n: int, k: int, seed: int = 0, alpha: float | None = None,
                  labels: Sequence[int] | None = None) -> list[list[int]]:
    """IID shards, or (with `alpha`) Dirichlet(α) shards by `labels`."""
    if alpha is None:
        return iid_shards(n, k, seed)
    if labels is None or len(labels) != n:
        raise FlbenchError(f"--non-iid {alpha}: needs one class label per training example")
    return dirichlet_shards(labels, k, alpha, seed)
