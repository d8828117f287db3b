"""Linking a training run's releases across epochs (attacks/linking.py)."""
from __future__ import annotations

import pytest
import torch

from attacks import Observations
from attacks.linking import grouped, link_by_distance, linking_accuracy, oracle_groups
from flbench.core.errors import FlbenchError


def _run(n=12, epochs=3, d=16, sigma=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = [3 + i % 4 for i in range(n)]  # several examples share each length
    clean = [torch.randn(t, d, generator=g) for t in lengths]
    h, example_of, epoch_of = [], [], []
    for e in range(epochs):
        order = torch.randperm(n, generator=g).tolist()
        for i in order:
            h.append(clean[i] + sigma * torch.randn(clean[i].shape, generator=g))
            example_of.append(i)
            epoch_of.append(e)
    return h, example_of, epoch_of


def test_releases_are_linked_to_their_example_by_distance_within_a_length():
    h, example_of, epoch_of = _run()
    groups = link_by_distance(h, epoch_of)
    assert len(groups) == 12 and all(len(g) == 3 for g in groups)
    assert linking_accuracy(groups, example_of) == 1.0
    assert sorted(map(sorted, groups)) == sorted(map(sorted, oracle_groups(example_of)))


def test_linking_degrades_to_chance_when_noise_swamps_the_content():
    h, example_of, epoch_of = _run(sigma=50.0)
    acc = linking_accuracy(link_by_distance(h, epoch_of), example_of)
    assert acc < 0.8  # 3 examples per length: chance is 1/3


def test_grouped_observations_carry_every_release():
    h, example_of, epoch_of = _run()
    obs = Observations([len(x) for x in h], h_a=h)
    view = grouped(obs, oracle_groups(example_of))
    assert len(view) == 12 and view.releases == 3
    assert all(r.shape[0] == 3 for r in view.h_a_releases)
    with pytest.raises(FlbenchError, match="different lengths"):
        grouped(obs, [[0, next(i for i, x in enumerate(h) if len(x) != len(h[0]))]])
