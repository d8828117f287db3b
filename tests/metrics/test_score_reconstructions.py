"""score_reconstructions: the output shape, perfect and failed reconstructions, ids vs whitespace tokens."""
from __future__ import annotations

import json

import pytest

from flbench.data import load_corpus
from flbench.metrics import ATTACK_METRICS, pii_recovery_by_kind, score_reconstructions

KEYS = {"token_accuracy", "token_f1", "token_precision", "token_recall", "rouge_l", "bleu", "exact_match",
        "pii_recovery"}


@pytest.fixture(scope="module")
def records():
    return load_corpus("private-records", limit=40, seed=5)


def test_perfect_reconstruction_scores_one_everywhere(records):
    texts = [r.text for r in records]
    ids = [[ord(c) for c in t] for t in texts]
    res = score_reconstructions(texts, list(texts), ids, [list(i) for i in ids], pii=[r.pii for r in records])
    assert set(res) == KEYS == set(ATTACK_METRICS)
    for name, m in res.items():
        assert m["mean"] == pytest.approx(1.0), name
        assert m["ci_low"] == pytest.approx(1.0) and m["ci_high"] == pytest.approx(1.0), name
        assert m["n"] == len(texts)
    assert res["bleu"]["corpus"] == pytest.approx(1.0)
    json.dumps(res)  # plain JSON, no NaN


def test_garbage_reconstruction_scores_low(records):
    texts = [r.text for r in records]
    res = score_reconstructions(texts, ["zzz qqq"] * len(texts), pii=[r.pii for r in records], seed=1)
    for name in KEYS:
        assert res[name]["mean"] < 0.05, name
        assert res[name]["ci_low"] <= res[name]["mean"] <= res[name]["ci_high"]


def test_partial_reconstruction_hand_checked():
    res = score_reconstructions(
        ["alice has asthma", "bob is fine"],
        ["alice has flu", "bob is fine"],
        original_ids=[[1, 2, 3], [4, 5, 6]],
        recovered_ids=[[1, 2, 9], [4, 5, 6]],
        pii=[[("name", "alice"), ("diagnosis", "asthma")], []],
    )
    assert res["token_accuracy"]["mean"] == pytest.approx((2 / 3 + 1) / 2)
    assert res["exact_match"]["mean"] == 0.5
    assert res["pii_recovery"] == {"mean": 0.5, "ci_low": 0.5, "ci_high": 0.5, "n": 1}


def test_whitespace_tokens_when_no_ids():
    res = score_reconstructions(["a b c d"], ["a b x d"])
    assert res["token_accuracy"]["mean"] == 0.75
    assert res["token_recall"]["mean"] == 0.75


def test_no_pii_and_bad_input():
    res = score_reconstructions(["a"], ["b"])
    assert res["pii_recovery"] == {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    with pytest.raises(ValueError):
        score_reconstructions(["a", "b"], ["a"])
    with pytest.raises(ValueError):
        score_reconstructions(["a"], ["a"], original_ids=[[1]])


def test_pii_recovery_by_kind(records):
    texts = [r.text for r in records]
    # recover only names
    rec = [" ".join(s.value for s in r.pii if s.kind == "name") for r in records]
    by_kind = pii_recovery_by_kind(rec, [r.pii for r in records])
    assert by_kind["name"]["mean"] == 1.0
    assert all(v["mean"] == 0.0 for k, v in by_kind.items() if k != "name")
    assert texts
