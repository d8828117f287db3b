"""Linking the releases of a training run: which h_A entries of different epochs are the same example.

A fine-tuning run sends every training example once per epoch (in a new order, with fresh noise); the server
sees unlabelled TRAIN messages. To combine an example's releases (`Observations.h_a_releases`, summed
log-likelihood in `map-inversion`) it must first link them. Two releases of the same example differ by the
noise only (and by the client's adapters having moved between epochs); two different examples differ by their
content as well. So within each group of equal length (lengths travel in clear in the headers), the entries of
every later epoch are matched one-to-one to the first epoch's entries minimising the summed squared distance
(an assignment problem: scipy.optimize.linear_sum_assignment, the Hungarian method — Kuhn 1955). Entries of a
length that appears once per epoch are linked by length alone.

`oracle_groups` is the scorer's upper bound: the true example of every entry.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from attacks.base import Observations
from flbench.core.errors import FlbenchError


def link_by_distance(h_a: Sequence[torch.Tensor], epochs: Sequence[int]) -> list[list[int]]:
    """Groups of entry indices, one group per entry of the first epoch, holding its linked entry of every later
    epoch (entries a later epoch cannot match one-to-one — e.g. unequal counts per length — are left out)."""
    if len(h_a) != len(epochs):
        raise FlbenchError(f"link: {len(h_a)} entries but {len(epochs)} epochs")
    from scipy.optimize import linear_sum_assignment

    first = min(epochs)
    by_len: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (h, e) in enumerate(zip(h_a, epochs)):
        by_len[(int(h.shape[0]), int(e))].append(i)
    groups = {i: [i] for i, e in enumerate(epochs) if e == first}
    for (length, epoch), later in sorted(by_len.items()):
        if epoch == first:
            continue
        anchors = by_len.get((length, first), [])
        if not anchors:
            continue
        a = torch.stack([h_a[i].float().flatten() for i in anchors])
        b = torch.stack([h_a[i].float().flatten() for i in later])
        cost = torch.cdist(a.double(), b.double()).square().numpy()
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols):
            groups[anchors[r]].append(later[c])
    return [groups[i] for i in sorted(groups)]


def oracle_groups(example_of: Sequence[int]) -> list[list[int]]:
    """Groups by the true example of every entry (scorer side), ordered by each example's first entry."""
    out: dict[int, list[int]] = {}
    for i, ex in enumerate(example_of):
        out.setdefault(int(ex), []).append(i)
    return list(out.values())


def grouped(obs: Observations, groups: Sequence[Sequence[int]]) -> Observations:
    """Observations with one entry per group: h_a = the group's first entry, h_a_releases = all of its entries
    (groups whose entries differ in length are refused)."""
    if obs.h_a is None:
        raise FlbenchError("link: the observations hold no h_A")
    lengths, first, releases = [], [], []
    k = min(len(g) for g in groups)
    for g in groups:
        hs = [obs.h_a[i] for i in g[:k]]
        if len({h.shape for h in hs}) != 1:
            raise FlbenchError(f"link: group {list(g)} mixes entries of different lengths")
        lengths.append(int(hs[0].shape[0]))
        first.append(hs[0])
        releases.append(torch.stack(hs))
    return Observations(lengths, h_a=first, h_a_releases=releases if k > 1 else None)


def linking_accuracy(groups: Sequence[Sequence[int]], example_of: Sequence[int]) -> float:
    """Share of linked (non-anchor) entries that belong to their anchor's example."""
    pairs = [(g[0], j) for g in groups for j in g[1:]]
    return sum(example_of[a] == example_of[j] for a, j in pairs) / len(pairs) if pairs else float("nan")
