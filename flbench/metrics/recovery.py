"""Per-example scores of how much of an original text an attack recovered. Every function returns one float
in [0, 1] per example (1 = fully recovered), so that confidence intervals can be bootstrapped over examples.

Sources:
- token accuracy: the position-wise token recovery rate used for embedding/hidden-state inversion, e.g.
  Song & Raghunathan, "Information Leakage in Embedding Models", CCS 2020 (arXiv 2004.00053), and
  Morris et al., "Text Embeddings Reveal (Almost) As Much As Text", EMNLP 2023 (arXiv 2310.06816).
- token-set precision/recall/F1: bag-of-words recovery as in Song & Raghunathan (2020) and the
  set-overlap F1 of Rajpurkar et al., "SQuAD", EMNLP 2016 (here on sets, not multisets).
- ROUGE-L: Lin, "ROUGE: A Package for Automatic Evaluation of Summaries", ACL Workshop 2004, computed by
  Google's `rouge-score` package (LCS-based F-measure).
- BLEU: Papineni et al., "BLEU: a Method for Automatic Evaluation of Machine Translation", ACL 2002,
  computed by `sacrebleu` (Post, "A Call for Clarity in Reporting BLEU Scores", WMT 2018); sentence BLEU
  with exponential smoothing and effective order (sacrebleu's `sentence_bleu` defaults), scaled to [0, 1].
- PII recovery: fraction of an example's PII values appearing verbatim in the reconstruction, after the
  exact-extraction criterion of Carlini et al., "Extracting Training Data from Large Language Models",
  USENIX Security 2021, and Lukas et al., "Analyzing Leakage of Personally Identifiable Information in
  Language Models", IEEE S&P 2023 (arXiv 2302.00539).
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from functools import lru_cache
from typing import Any

Tokens = Sequence[Hashable]


def _check_pair(a: Sequence, b: Sequence, what: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{what}: {len(a)} originals but {len(b)} reconstructions")


def as_ids(seq: Any) -> list[int]:
    """A token-id sequence (list, tuple, numpy array or torch tensor) as a list of ints."""
    if hasattr(seq, "tolist"):
        seq = seq.tolist()
    return [int(t) for t in seq]


def token_accuracy_one(original: Tokens, recovered: Tokens) -> float:
    """Fraction of positions i with recovered[i] == original[i], over max(len(original), len(recovered))
    positions: missing or extra tokens count as wrong. Two empty sequences score 1."""
    n = max(len(original), len(recovered))
    if n == 0:
        return 1.0
    return sum(o == r for o, r in zip(original, recovered)) / n


def token_accuracy(originals: Sequence[Tokens], recovered: Sequence[Tokens]) -> list[float]:
    _check_pair(originals, recovered, "token_accuracy")
    return [token_accuracy_one(o, r) for o, r in zip(originals, recovered)]


def token_prf_one(original: Tokens, recovered: Tokens) -> tuple[float, float, float]:
    """(precision, recall, F1) of the recovered token set against the original token set.
    Both empty: (1, 1, 1); exactly one empty: (0, 0, 0)."""
    o, r = set(original), set(recovered)
    if not o and not r:
        return 1.0, 1.0, 1.0
    common = len(o & r)
    if not o or not r or common == 0:
        return 0.0, 0.0, 0.0
    p, rec = common / len(r), common / len(o)
    return p, rec, 2 * p * rec / (p + rec)


def token_prf(originals: Sequence[Tokens], recovered: Sequence[Tokens]) -> tuple[list[float], list[float], list[float]]:
    """Per-example precision, recall and F1 lists."""
    _check_pair(originals, recovered, "token_prf")
    rows = [token_prf_one(o, r) for o, r in zip(originals, recovered)]
    return [x[0] for x in rows], [x[1] for x in rows], [x[2] for x in rows]


def whitespace_tokens(text: str) -> list[str]:
    return text.split()


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer, tokenizers

    # no stemming: recovering "diagnosed" when "diagnosis" was sent is not a full recovery
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False), tokenizers.DefaultTokenizer(use_stemmer=False)


def rouge_l(originals: Sequence[str], recovered: Sequence[str]) -> list[float]:
    """ROUGE-L F-measure per example (rouge-score's tokenizer: lower-cased ASCII alphanumerics).
    Two texts without any such token (e.g. both empty) score 1 when equal, else 0."""
    _check_pair(originals, recovered, "rouge_l")
    scorer, tok = _rouge()
    out = []
    for o, r in zip(originals, recovered):
        if not tok.tokenize(o) and not tok.tokenize(r):
            out.append(float(o.strip() == r.strip()))
        else:
            out.append(float(scorer.score(o, r)["rougeL"].fmeasure))
    return out


@lru_cache(maxsize=1)
def _bleu():
    from sacrebleu.metrics import BLEU

    return BLEU(effective_order=True)  # what sacrebleu.sentence_bleu uses; harmless for corpus scores


def _unit(x: float) -> float:
    return min(1.0, max(0.0, x / 100.0))  # sacrebleu reports 0-100 (and 100.00000000000004 for a match)


def sentence_bleu(originals: Sequence[str], recovered: Sequence[str]) -> list[float]:
    """sacrebleu sentence BLEU / 100 per example. Both empty → 1."""
    _check_pair(originals, recovered, "sentence_bleu")
    bleu = _bleu()
    return [1.0 if not o.strip() and not r.strip() else _unit(bleu.sentence_score(r, [o]).score)
            for o, r in zip(originals, recovered)]


def corpus_bleu(originals: Sequence[str], recovered: Sequence[str]) -> float:
    """sacrebleu corpus BLEU / 100 (n-gram counts pooled over all examples)."""
    _check_pair(originals, recovered, "corpus_bleu")
    if not originals:
        return float("nan")
    # effective order only matters when no example reaches 4 tokens (then standard BLEU is 0 even for a match)
    return _unit(_bleu().corpus_score(list(recovered), [list(originals)]).score)


def normalize_ws(text: str) -> str:
    return " ".join(text.split())


def exact_match(originals: Sequence[str], recovered: Sequence[str]) -> list[float]:
    """1 when the texts are equal after collapsing whitespace runs (case and punctuation count), else 0."""
    _check_pair(originals, recovered, "exact_match")
    return [float(normalize_ws(o) == normalize_ws(r)) for o, r in zip(originals, recovered)]


def pii_value(item: Any) -> str:
    """A PII value from a PiiSpan (anything with `.value`), a (kind, value, ...) tuple, a dict or a str."""
    if isinstance(item, str):
        return item
    if hasattr(item, "value"):
        return item.value
    if isinstance(item, dict):
        return item["value"]
    return item[1]


def pii_kind(item: Any) -> str:
    if isinstance(item, str):
        return "pii"
    if hasattr(item, "kind"):
        return item.kind
    if isinstance(item, dict):
        return item["kind"]
    return item[0]


def pii_recovery(recovered: Sequence[str], pii: Sequence[Sequence[Any]], kind: str | None = None) -> list[float]:
    """Per example with PII: the fraction of its distinct PII values (of `kind`, if given) found verbatim
    (case-sensitive substring) in its reconstruction. Examples without such PII are left out, so the list
    can be shorter than `recovered`."""
    _check_pair(pii, recovered, "pii_recovery")
    out = []
    for r, items in zip(recovered, pii):
        values = list(dict.fromkeys(pii_value(i) for i in items if kind is None or pii_kind(i) == kind))
        values = [v for v in values if v]
        if values:
            out.append(sum(v in r for v in values) / len(values))
    return out
