"""Attack-recovery metrics: how much of the victim's text an attack reconstructed, with bootstrap CIs.

    score_reconstructions(originals, recovered, original_ids, recovered_ids, pii, seed=0)
        -> {"token_accuracy": {"mean", "ci_low", "ci_high", "n"}, ..., "bleu": {..., "corpus"}}
"""
from flbench.metrics.recovery import (
    corpus_bleu,
    exact_match,
    pii_recovery,
    rouge_l,
    sentence_bleu,
    token_accuracy,
    token_prf,
)
from flbench.metrics.score import (
    ATTACK_METRICS,
    HIGHER_IS_BETTER_FOR_ATTACK,
    pii_recovery_by_kind,
    score_reconstructions,
)
from flbench.metrics.stats import bootstrap_ci, bootstrap_statistic

__all__ = [
    "ATTACK_METRICS", "HIGHER_IS_BETTER_FOR_ATTACK", "bootstrap_ci", "bootstrap_statistic", "corpus_bleu", "exact_match",
    "pii_recovery", "pii_recovery_by_kind", "rouge_l", "score_reconstructions", "sentence_bleu",
    "token_accuracy", "token_prf",
]
