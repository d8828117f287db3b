"""Classification metrics for NLU tasks, with the official SuperGLUE definitions where they differ."""
from __future__ import annotations

from collections import defaultdict


def accuracy(golds: list[int], preds: list[int]) -> float:
    if not golds:
        return float("nan")
    return sum(int(g == p) for g, p in zip(golds, preds)) / len(golds)


def binary_f1(golds: list[int], preds: list[int], positive: int = 1) -> float:
    """F1 of the `positive` class; 0.0 when it has no true positives (sklearn's zero_division=0)."""
    tp = sum(1 for g, p in zip(golds, preds) if g == positive and p == positive)
    fp = sum(1 for g, p in zip(golds, preds) if g != positive and p == positive)
    fn = sum(1 for g, p in zip(golds, preds) if g == positive and p != positive)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def macro_f1(golds: list[int], preds: list[int], n_classes: int) -> float:
    """Unweighted mean of per-class F1 over all `n_classes` (SuperGLUE CB's F1, as lm-evaluation-harness)."""
    return sum(binary_f1(golds, preds, c) for c in range(n_classes)) / n_classes


def multirc_em0_f1a(groups: list[str], golds: list[int], preds: list[int]) -> dict[str, float]:
    """MultiRC's official metrics. EM0: fraction of questions whose every answer option is classified
    correctly. F1a: binary F1 (positive = "correct answer") over all answer options pooled."""
    by_q: dict[str, bool] = defaultdict(lambda: True)
    for q, g, p in zip(groups, golds, preds):
        by_q[q] = by_q[q] and g == p
    em0 = sum(by_q.values()) / len(by_q) if by_q else float("nan")
    return {"em0": em0, "f1a": binary_f1(golds, preds, 1)}


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_f1_per_example(references: list[list[str]], predictions: list[str],
                         types: tuple[str, ...] = ROUGE_TYPES) -> dict[str, list[float]]:
    """ROUGE F1 of every example with the `rouge-score` package (Google's reference implementation, as in the
    XSum and SAMSum papers' tooling): `RougeScorer(types, use_stemmer=True)`; an example with several
    references takes, per ROUGE type, the best one (`RougeScorer.score_multi`). ROUGE-L is sentence-level LCS."""
    from rouge_score import rouge_scorer

    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} reference lists but {len(predictions)} predictions")
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=True)
    out: dict[str, list[float]] = {t: [] for t in types}
    for refs, pred in zip(references, predictions):
        s = scorer.score_multi(list(refs), pred)
        for t in types:
            out[t].append(s[t].fmeasure)
    return out


def rouge_f1(references: list[list[str]], predictions: list[str], types: tuple[str, ...] = ROUGE_TYPES) -> dict[str, float]:
    """Mean ROUGE F1 over examples (`rouge_f1_per_example`); NaN for no examples."""
    per = rouge_f1_per_example(references, predictions, types)
    return {t: sum(v) / len(v) if v else float("nan") for t, v in per.items()}


def token_f1_exact(gold: str, pred: str) -> float:
    """F1 of the whitespace tokens of `gold` and `pred` taken as they are (case and punctuation kept)."""
    from collections import Counter

    g, p = gold.split(), pred.split()
    if not g or not p:
        return float(g == p)
    same = sum((Counter(g) & Counter(p)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)
