"""`flbench.pipeline.calibrate`: the public per-token RMS of h_A, real tokens only, deterministic, with the
attention-sink row (position 0) apart."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flbench.core.errors import FlbenchError
from flbench.pipeline.calibrate import calibrate, summarize, token_rms
from splits.partition import SplitSpec, build_head

KW = {"data": ("xsum", "sst2"), "limit": 12, "max_length": 24}


def test_deterministic_and_self_consistent(tiny):
    a = calibrate(tiny, "2,1", **KW)
    assert a == calibrate(tiny, "2,1", **KW)
    assert a["model"] == tiny.identity and a["split"] == "2,1" and a["data"] == ["xsum", "sst2"]
    assert a["n_texts"] == 24 and a["n_first_positions"] == 24 and a["scale"] == "token_rms_median"
    assert a["token_rms_p05"] <= a["token_rms_p25"] <= a["token_rms_median"] <= a["token_rms_p75"] \
        <= a["token_rms_p95"] <= a["token_rms_max"]
    # rms_all is the RMS over every real token: a mean of squares of the per-token RMS
    assert a["rms_all"] >= a["token_rms_mean"] and a["rms_all_over_median"] == pytest.approx(
        a["rms_all"] / a["token_rms_median"])
    other = calibrate(tiny, "2,1", **{**KW, "data": ("sst2", "xsum"), "seed": 1})
    assert other["token_rms_median"] != a["token_rms_median"]  # other texts, other numbers


def test_padding_never_counts(tiny):
    """One text per forward (no padding at all) and padded batches of 16 give the same numbers."""
    alone = calibrate(tiny, "2,1", batch_size=1, **KW)
    padded = calibrate(tiny, "2,1", batch_size=16, **KW)
    assert alone["n_tokens"] == padded["n_tokens"]
    for k, v in alone.items():
        if isinstance(v, float):
            assert padded[k] == pytest.approx(v, rel=1e-5), k


def test_rows_are_the_real_tokens_and_position_0_is_apart(tiny):
    head = build_head(tiny.model, SplitSpec(2, 1)).eval()
    seqs = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    r, pos = token_rms(head, seqs, pad_id=0, batch_size=3)
    assert r.shape == (10,) and pos.tolist() == [0, 1, 2, 3, 4, 0, 1, 0, 1, 2]
    with torch.no_grad():
        for i, s in enumerate(seqs):  # each text alone, unpadded
            ids = torch.tensor([s])
            h = head(ids, torch.ones_like(ids), torch.arange(len(s)).unsqueeze(0))[0].double()
            start = sum(len(x) for x in seqs[:i])
            assert torch.allclose(r[start : start + len(s)], h.square().mean(-1).sqrt(), rtol=1e-5)
    out = summarize(r, pos)
    first = r[pos == 0].numpy()
    assert out["first_position_rms_median"] == pytest.approx(float(np.median(first)))
    assert out["rms_without_position_0"] == pytest.approx(float(r[pos > 0].square().mean().sqrt()))
    assert out["rms_all"] == pytest.approx(float(r.square().mean().sqrt()))


def test_a_sink_moves_rms_all_not_the_median():
    """Synthetic rows: nine ordinary tokens of RMS 1 per text and a position-0 row of RMS 30."""
    r = torch.tensor(([30.0] + [1.0] * 9) * 4, dtype=torch.float64)
    pos = torch.tensor(list(range(10)) * 4)
    out = summarize(r, pos)
    assert out["token_rms_median"] == 1.0 and out["first_position_rms_median"] == 30.0
    assert out["rms_all"] == pytest.approx(((900 + 9) / 10) ** 0.5) and out["rms_without_position_0"] == 1.0
    assert out["first_position_energy_share"] == pytest.approx(900 / 909)


@pytest.mark.parametrize("kw,message", [
    ({"split": "2;1"}, "split: '2;1' is not accepted; expected \"P,Q\""),
    ({"split": "3,3"}, "--split 3,3: the trunk must keep at least one block"),
    ({"data": ("private-records",)}, "data: ('private-records',) is not accepted; expected public corpora"),
    ({"limit": 0}, "limit: 0 is not accepted; expected an integer >= 1"),
])
def test_bad_inputs_are_one_line_errors(tiny, kw, message):
    args = {"split": "2,1", **KW, **kw}
    with pytest.raises(FlbenchError) as e:
        calibrate(tiny, args.pop("split"), **args)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.mark.real_model
def test_smollm2_sink_at_p4(smol):
    """The audit's observation on the real default model: at P = 4 the position-0 row is ~10× the typical
    token, so the all-token RMS is well above the median; the median is the robust scale."""
    out = calibrate(smol, "4,4", limit=50)
    assert out["first_position_rms_median"] > 5 * out["token_rms_median"]
    assert out["rms_all"] > 1.5 * out["token_rms_median"]
    assert out["token_rms_median_without_position_0"] == pytest.approx(out["token_rms_median"], rel=0.05)
