"""Hand-checked values for each per-example recovery metric, and agreement with the reference packages."""
from __future__ import annotations

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from flbench.data import PiiSpan
from flbench.metrics import (
    corpus_bleu,
    exact_match,
    pii_recovery,
    rouge_l,
    sentence_bleu,
    token_accuracy,
    token_prf,
)

ORIG = [
    "Patient Mary White, SSN 764-59-8504, was diagnosed with asthma.",
    "the cat sat on the mat",
    "New contact for Eric Rose: 658.890.0754, ericrose19@yahoo.com.",
]
REC = [
    "Patient Mary Whyte, SSN 764-59-8504, was diagnosed with asthma.",
    "the cat lay on the mat",
    "New contact for Eric: 658.890.0754",
]


def test_token_accuracy_hand_checked():
    assert token_accuracy([[1, 2, 3, 4]], [[1, 2, 0, 4]]) == [0.75]
    # missing and extra positions count as wrong: denominator is the longer length
    assert token_accuracy([[1, 2, 3]], [[1, 2]]) == pytest.approx([2 / 3])
    assert token_accuracy([[1, 2]], [[1, 2, 3, 4]]) == [0.5]
    assert token_accuracy([[5, 6, 7]], [[7, 6, 5]]) == pytest.approx([1 / 3])
    assert token_accuracy([[]], [[]]) == [1.0]
    with pytest.raises(ValueError):
        token_accuracy([[1]], [])


def test_token_prf_hand_checked():
    p, r, f = token_prf([[1, 2, 3, 4]], [[1, 2, 5]])
    assert p == pytest.approx([2 / 3]) and r == pytest.approx([1 / 2]) and f == pytest.approx([4 / 7])
    # sets: order and repetition do not matter
    assert token_prf([[1, 2, 2, 3]], [[3, 2, 1, 1]]) == ([1.0], [1.0], [1.0])
    assert token_prf([[1, 2]], [[3]]) == ([0.0], [0.0], [0.0])
    assert token_prf([[1]], [[]]) == ([0.0], [0.0], [0.0])
    assert token_prf([[]], [[]]) == ([1.0], [1.0], [1.0])
    # works on whitespace tokens too
    p, r, f = token_prf([["the", "cat", "sat"]], [["the", "dog", "sat"]])
    assert p == r == f == pytest.approx([2 / 3])


def test_rouge_l_hand_checked_and_equals_rouge_score():
    # LCS of "the cat sat on the mat" / "the cat lay on the mat" is 5 of 6 tokens each way
    assert rouge_l(["the cat sat on the mat"], ["the cat lay on the mat"]) == pytest.approx([5 / 6])
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    expected = [scorer.score(o, r)["rougeL"].fmeasure for o, r in zip(ORIG, REC)]
    assert rouge_l(ORIG, REC) == pytest.approx(expected)
    assert rouge_l(["", "?"], ["", "abc"]) == [1.0, 0.0]


def test_bleu_equals_sacrebleu():
    expected = [sacrebleu.sentence_bleu(r, [o]).score / 100 for o, r in zip(ORIG, REC)]
    assert sentence_bleu(ORIG, REC) == pytest.approx(expected)
    assert corpus_bleu(ORIG, REC) == pytest.approx(sacrebleu.corpus_bleu(REC, [ORIG]).score / 100)
    assert sentence_bleu(ORIG, ORIG) == pytest.approx([1.0] * 3)
    assert all(0.0 <= v <= 1.0 for v in sentence_bleu(ORIG, ORIG))
    assert sentence_bleu(["some words here"], [""]) == [0.0]
    assert corpus_bleu(["hi", "yo"], ["hi", "yo"]) == pytest.approx(1.0)  # short texts still score 1


def test_exact_match():
    assert exact_match(["a b  c", "a b c", "A b c"], [" a b c\n", "a b", "a b c"]) == [1.0, 0.0, 0.0]


def test_pii_recovery_per_example_and_exclusion():
    pii = [
        [PiiSpan("name", "Mary White", 8, 18), PiiSpan("id_number", "764-59-8504", 24, 35)],
        [],  # no PII: left out
        [("name", "Eric Rose"), ("phone", "658.890.0754"), ("email", "ericrose19@yahoo.com")],
    ]
    assert pii_recovery(REC, pii) == pytest.approx([1 / 2, 1 / 3])
    assert pii_recovery(REC, pii, kind="phone") == [1.0]
    # plain strings; repeated values count once; matching is case-sensitive
    assert pii_recovery(["bob and BOB"], [["bob", "bob", "Alice"]]) == [0.5]
    assert pii_recovery(["x"], [[]]) == []


def test_accepts_numpy_and_torch_ids():
    torch = pytest.importorskip("torch")
    from flbench.metrics import score_reconstructions

    res = score_reconstructions(["a b"], ["a c"], original_ids=[torch.tensor([1, 2])],
                                recovered_ids=[np.array([1, 3])])
    assert res["token_accuracy"]["mean"] == 0.5
