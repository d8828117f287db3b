"""embedding-nn is exact at P = 0 without noise (the issue's acceptance check), in both metrics."""
from __future__ import annotations

import numpy as np
import pytest

from attacks import Knowledge, capture, make_attack
from flbench.data import load_corpus
from flbench.metrics import token_accuracy
from splits import SplitRuntime, SplitSpec


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_exact_at_p0_without_noise(tiny, metric):
    rt = SplitRuntime(tiny, SplitSpec(0, 1))
    knowledge = Knowledge.from_runtime(rt)
    victims = [r.text for r in load_corpus("private-records", limit=10, seed=2)]
    obs, ids = capture(rt, victims, batch_size=4)
    rec = make_attack("embedding-nn", knowledge, metric=metric).fit([], knowledge).invert(obs)
    assert float(np.mean(token_accuracy(ids, rec))) >= 0.99
