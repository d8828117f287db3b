"""`score_reconstructions`: every attack-recovery metric with a seeded 95% bootstrap CI, in one dict."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flbench.metrics import recovery as R
from flbench.metrics.stats import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, bootstrap_ci

# Every metric is in [0, 1] and higher means the attack recovered more (worse privacy).
ATTACK_METRICS: dict[str, str] = {
    "token_accuracy": "position-wise token recovery rate (token ids; whitespace tokens when no ids are given)",
    "token_precision": "recovered token set: fraction that is in the original",
    "token_recall": "original token set: fraction that was recovered",
    "token_f1": "harmonic mean of token-set precision and recall",
    "rouge_l": "ROUGE-L F-measure (rouge-score, no stemming)",
    "bleu": "sacrebleu sentence BLEU / 100 (CI over examples); 'corpus' holds corpus BLEU / 100",
    "exact_match": "reconstruction equals the original up to whitespace",
    "pii_recovery": "fraction of an example's PII values found verbatim; examples without PII left out",
}
HIGHER_IS_BETTER_FOR_ATTACK = True


def score_reconstructions(
    originals: Sequence[str],
    recovered: Sequence[str],
    original_ids: Sequence[Sequence[int]] | None = None,
    recovered_ids: Sequence[Sequence[int]] | None = None,
    pii: Sequence[Sequence[Any]] | None = None,
    seed: int = 0,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> dict[str, dict[str, float | int | None]]:
    """Score reconstructions against the originals, example by example.

    Returns one entry per name in ATTACK_METRICS, each `{"mean", "ci_low", "ci_high", "n"}` (n = examples
    scored; `bleu` adds `"corpus"`). Token metrics use `original_ids`/`recovered_ids` when both are given
    (padding must already be stripped), else whitespace tokens of the texts. `pii[i]` lists example i's PII
    (PiiSpan objects, (kind, value) pairs or plain strings); with no `pii`, or no example carrying any,
    pii_recovery is `{"mean": None, ...,"n": 0}`. Intervals are percentile bootstraps seeded by `seed`.
    """
    originals, recovered = list(originals), list(recovered)
    if len(originals) != len(recovered):
        raise ValueError(f"{len(originals)} originals but {len(recovered)} reconstructions")
    if (original_ids is None) != (recovered_ids is None):
        raise ValueError("give both original_ids and recovered_ids, or neither")
    if original_ids is not None:
        o_tok = [R.as_ids(s) for s in original_ids]
        r_tok = [R.as_ids(s) for s in recovered_ids]  # type: ignore[union-attr]
        if not len(o_tok) == len(r_tok) == len(originals):
            raise ValueError(f"{len(o_tok)} original_ids and {len(r_tok)} recovered_ids for {len(originals)} texts")
    else:
        o_tok = [R.whitespace_tokens(t) for t in originals]
        r_tok = [R.whitespace_tokens(t) for t in recovered]
    if pii is not None and len(pii) != len(originals):
        raise ValueError(f"{len(pii)} PII lists for {len(originals)} texts")

    precision, recall, f1 = R.token_prf(o_tok, r_tok)
    per_example = {
        "token_accuracy": R.token_accuracy(o_tok, r_tok),
        "token_f1": f1,
        "token_precision": precision,
        "token_recall": recall,
        "rouge_l": R.rouge_l(originals, recovered),
        "bleu": R.sentence_bleu(originals, recovered),
        "exact_match": R.exact_match(originals, recovered),
        "pii_recovery": R.pii_recovery(recovered, pii) if pii is not None else [],
    }
    out = {name: bootstrap_ci(values, seed=seed, confidence=confidence, n_resamples=n_resamples)
           for name, values in per_example.items()}
    out["bleu"]["corpus"] = R.corpus_bleu(originals, recovered) if originals else None
    return out


def pii_recovery_by_kind(recovered: Sequence[str], pii: Sequence[Sequence[Any]], seed: int = 0,
                         **ci_kwargs) -> dict[str, dict[str, float | int | None]]:
    """PII recovery per PII kind (name, email, phone, ...), each with its bootstrap CI."""
    kinds = sorted({R.pii_kind(i) for items in pii for i in items})
    return {k: bootstrap_ci(R.pii_recovery(recovered, pii, kind=k), seed=seed, **ci_kwargs) for k in kinds}
