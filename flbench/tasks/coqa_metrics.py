"""CoQA's answer metrics, with the definitions of the official evaluation script.

Reference: the CoQA evaluation script `evaluate-v1.0.py` (Reddy, Chen and Manning, "CoQA: A Conversational
Question Answering Challenge", TACL 2019; https://stanfordnlp.github.io/coqa/). This is an independent
implementation of its definitions, not a copy:

- normalisation (`CoQAEvaluator.normalize_answer`): lowercase, delete every character of
  `string.punctuation`, replace the whole words a/an/the by a space, collapse runs of whitespace;
- exact match (`compute_exact`): the normalised strings are equal (1 or 0);
- token F1 (`compute_f1`): bag-of-tokens overlap of the normalised answers; when either side has no tokens,
  1 if both are empty and 0 otherwise;
- several gold answers (`_compute_turn_score`): with n > 1 golds, for each gold i the score is the max over
  the *other* n - 1 golds, and the turn score is the mean of those n values (so that a system is compared
  with the humans under the same leave-one-out protocol); a single gold is scored directly;
- the reported numbers are means over turns (the script's "overall" × 100; here in [0, 1]).

QuAC's published F1 uses a different protocol; flbench scores its QuAC slice with these CoQA definitions.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace (the official order)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def answer_tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def exact_match(gold: str, pred: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(pred))


def token_f1(gold: str, pred: str) -> float:
    g, p = answer_tokens(gold), answer_tokens(pred)
    if not g or not p:
        return float(g == p)  # no-answer on either side: 1 only when both are empty
    same = sum((Counter(g) & Counter(p)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def turn_scores(golds: Sequence[str], pred: str) -> dict[str, float]:
    """EM and F1 of one prediction against one or several gold answers (leave-one-out when several)."""
    golds = list(golds)
    if not golds:
        raise ValueError("a turn needs at least one gold answer")
    if len(golds) == 1:
        return {"em": exact_match(golds[0], pred), "f1": token_f1(golds[0], pred)}
    em = f1 = 0.0
    for i in range(len(golds)):
        others = golds[:i] + golds[i + 1:]
        em += max(exact_match(g, pred) for g in others)
        f1 += max(token_f1(g, pred) for g in others)
    return {"em": em / len(golds), "f1": f1 / len(golds)}


def per_turn_scores(golds: Sequence[Sequence[str]], preds: Sequence[str]) -> dict[str, list[float]]:
    """F1 and EM of every turn (`turn_scores`), as {"f1": [...], "em": [...]}."""
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold lists but {len(preds)} predictions")
    per = [turn_scores(g, p) for g, p in zip(golds, preds)]
    return {"f1": [s["f1"] for s in per], "em": [s["em"] for s in per]}


def corpus_scores(golds: Sequence[Sequence[str]], preds: Sequence[str]) -> dict[str, float]:
    """Mean turn F1 and EM over all turns, in [0, 1] (NaN for no turns)."""
    per = per_turn_scores(golds, preds)
    return {k: sum(v) / len(v) if v else float("nan") for k, v in per.items()}
