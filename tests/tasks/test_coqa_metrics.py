"""CoQA metrics (definitions of the official evaluate-v1.0.py) and ROUGE, on hand-checked examples."""
from __future__ import annotations

import pytest

from flbench.tasks.coqa_metrics import corpus_scores, exact_match, normalize_answer, token_f1, turn_scores
from flbench.tasks.metrics import rouge_f1, token_f1_exact


@pytest.mark.parametrize("raw,norm", [
    ("The Cat's  hat!", "cats hat"),  # lower → "the cat's  hat!" → no punct → "the cats  hat" → no article
    ("An apple, a day", "apple day"),
    ("theater at the-end", "theater at theend"),  # punctuation goes first ("the-end" → "theend"): no article
    ("  Mickey\tMouse. ", "mickey mouse"),
    ("a", ""),
    ("", ""),
])
def test_normalize_answer_by_hand(raw, norm):
    assert normalize_answer(raw) == norm


def test_exact_match_and_f1_by_hand():
    assert exact_match("Mickey Mouse.", "the mickey mouse") == 1.0
    assert exact_match("Mickey Mouse", "Minnie Mouse") == 0.0
    # gold {big, red, dog}, pred {red, dog, barked}: 2 shared → P = R = 2/3 → F1 = 2/3
    assert token_f1("the big red dog", "a red dog barked") == pytest.approx(2 / 3)
    # repeated tokens count with multiplicity: gold [dog, dog], pred [dog] → P 1, R 1/2 → 2/3
    assert token_f1("dog dog", "dog") == pytest.approx(2 / 3)
    assert token_f1("red", "blue") == 0.0


def test_empty_answers_by_hand():
    assert token_f1("", "") == 1.0  # both no-answer
    assert token_f1("", "something") == 0.0 and token_f1("something", "") == 0.0
    assert token_f1("the", "a") == 1.0  # both normalise to no tokens
    assert exact_match("the", "") == 1.0


def test_leave_one_out_by_hand():
    golds, pred = ["red dog", "dog", "cat"], "dog"
    # per gold: F1 vs "red dog" = 2/3 (P 1, R 1/2), vs "dog" = 1, vs "cat" = 0; EM 0, 1, 0
    # leave out 0 → max(1, 0) = 1 (EM 1); leave out 1 → max(2/3, 0) = 2/3 (EM 0); leave out 2 → 1 (EM 1)
    s = turn_scores(golds, pred)
    assert s["f1"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert s["em"] == pytest.approx(2 / 3)
    single = turn_scores(["red dog"], "dog")  # one gold: scored directly
    assert single == {"em": 0.0, "f1": pytest.approx(2 / 3)}
    # two identical golds: leaving one out still leaves the other
    assert turn_scores(["dog", "dog"], "dog") == {"em": 1.0, "f1": 1.0}
    c = corpus_scores([golds, ["red dog"]], [pred, "dog"])
    assert c["f1"] == pytest.approx(((1 + 2 / 3 + 1) / 3 + 2 / 3) / 2)
    assert c["em"] == pytest.approx((2 / 3 + 0) / 2)


def test_rouge_equals_rouge_score_directly():
    from rouge_score import rouge_scorer

    refs = [["The cats were sitting on the mat."], ["A dog ran home.", "The dogs are running to their homes quickly."]]
    preds = ["cats sat on a mat", "dogs running home"]
    got = rouge_f1(refs, preds)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for t in ("rouge1", "rouge2", "rougeL"):
        per = [max(scorer.score(r, p)[t].fmeasure for r in rs) for rs, p in zip(refs, preds)]
        assert got[t] == pytest.approx(sum(per) / len(per), abs=1e-12)
    # stemming: "running"/"run" and "cats"/"cat" match
    assert rouge_f1([["the cat runs"]], ["cats running"])["rouge1"] == pytest.approx(2 * (2 / 2) * (2 / 3) / (1 + 2 / 3))
    assert rouge_f1([["x y"]], [""])["rougeL"] == 0.0


def test_private_qa_token_f1_keeps_case_and_punctuation():
    assert token_f1_exact("123 Main St, Springfield", "123 Main St, Springfield") == 1.0
    assert token_f1_exact("jane@x.com", "Jane@x.com") == 0.0
    assert token_f1_exact("March 22, 1971", "March 22, 1980") == pytest.approx(2 / 3)
