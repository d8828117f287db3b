"""Normal runs print no FutureWarning: the split parts use transformers' current cache API (`cache=`, not the
deprecated `past_key_values=`) for masks and decoder layers, in forward, training and KV-cached generation."""
from __future__ import annotations

import warnings

import torch

from flbench.pipeline.generation import run_generation
from splits import SplitRuntime, SplitSpec


def test_split_forward_and_generate_raise_no_future_warning(tiny):
    ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    mask = (ids != 0).long()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        rt = SplitRuntime(tiny, SplitSpec(1, 1))
        rt.forward(ids, mask)
        for mode in ("kv-cache", "naive", "centralized"):
            res = run_generation(tiny, ids, mask, 4, mode, rt.spec, rt, stop_at_eos=False)
            assert all(len(t) == 4 for t in res.token_ids)
