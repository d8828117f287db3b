"""The decoder training loop (attacks.decoders.train_decoder) on a synthetic, easy inversion task: noisy copies
of the tiny LLaMA's token embeddings with their coordinates permuted and sign-flipped (so the untrained
decoder, a logit lens, recovers nothing), decoded by the residual MLP + final norm + LM head. With a
plateau rule it stops before its budget and keeps the best-validation weights; with patience=0 it runs the
fixed budget and keeps the last ones."""
from __future__ import annotations

import pytest
import torch

from attacks.decoders import build_decoder, holdout, train_decoder
from flbench.core.errors import FlbenchError


def _task(tiny, noise: float = 1.0):
    """make_batch(gen) and a fixed validation batch: h = ±(embedding(token) + noise) in permuted coordinates,
    target = the token."""
    emb = tiny.model.get_input_embeddings().weight.detach().float()
    vocab, d = emb.shape
    perm = torch.randperm(d, generator=torch.Generator().manual_seed(7))
    sign = torch.where(torch.rand(d, generator=torch.Generator().manual_seed(8)) < 0.5, -1.0, 1.0)

    def batch(gen: torch.Generator, rows: int = 8, length: int = 12):
        ids = torch.randint(vocab, (rows, length), generator=gen)
        h = emb[ids] + noise * emb.std() * torch.randn(ids.shape + (d,), generator=gen)
        return (h * sign)[..., perm], ids, torch.ones_like(ids)

    return batch, batch(torch.Generator().manual_seed(123), rows=32)


def test_plateau_stops_before_budget_and_restores_the_best_weights(tiny):
    torch.manual_seed(0)
    make_batch, val = _task(tiny)
    dec = build_decoder(tiny.model, "mlp", mlp_hidden=256)
    log = train_decoder(dec, make_batch, steps=5000, lr=3e-3, vocab_sample=0, val=val, eval_every=20,
                        patience=3, min_delta=0.005, lr_cuts=1, eval_batch=8)
    assert log["stop_reason"] == "plateau" and log["stopped_at"] == log["steps"] < 5000 and log["budget"] == 5000
    curve = log["curve"]
    steps = [c[0] for c in curve]
    assert steps[0] == 0 and steps == sorted(steps) and steps[-1] == log["stopped_at"]
    assert all(s % 20 == 0 for s in steps)
    assert len(log["lr_cut_steps"]) == 1 and log["lr_cut_steps"][0] < log["stopped_at"]
    best = max(c[1] for c in curve)
    assert curve[0][1] < 0.1 and best > 0.9  # it learned
    # the returned weights are the best validation ones: re-scoring them gives the best point of the curve
    acc, loss = dec.evaluate(val, 8)
    assert acc == pytest.approx(best, abs=1e-6) == pytest.approx(log["val_accuracy"], abs=1e-6)
    assert loss == pytest.approx(log["val_loss"], abs=1e-5)
    assert [log["best_step"], round(acc, 6)] == next(c[:2] for c in curve if c[0] == log["best_step"])
    assert not dec.training


def test_fixed_budget_runs_every_step_and_keeps_the_last_weights(tiny):
    make_batch, val = _task(tiny)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        dec = build_decoder(tiny.model, "mlp", mlp_hidden=64)
        log = train_decoder(dec, make_batch, steps=25, lr=3e-3, vocab_sample=0, patience=0)
        runs.append(dec.evaluate(val, 8))
    assert log["steps"] == log["stopped_at"] == log["budget"] == 25 and log["stop_reason"] == "budget"
    assert "curve" not in log
    assert runs[0] == runs[1]  # deterministic: same seed, same weights


def test_plateau_without_validation_batch_is_refused(tiny):
    make_batch, _ = _task(tiny)
    with pytest.raises(FlbenchError, match="needs a validation batch"):
        train_decoder(build_decoder(tiny.model, "mlp", mlp_hidden=8), make_batch, 10, 1e-3, patience=2)


def test_holdout_is_seeded_disjoint_and_bounded():
    seqs = [[i, i + 1] for i in range(50)]
    train, val = holdout(seqs, 100, seed=0, owner="x")
    assert len(val) == 10 and len(train) == 40  # at most a fifth
    assert not {tuple(s) for s in train} & {tuple(s) for s in val}
    assert holdout(seqs, 100, seed=0, owner="x") == (train, val) != holdout(seqs, 100, seed=1, owner="x")
    assert len(holdout(seqs, 3, 0, "x")[1]) == 3 and len(holdout(seqs[:2], 3, 0, "x")[1]) == 1
    with pytest.raises(FlbenchError, match="patience=0"):
        holdout(seqs[:1], 3, 0, "attack 'x'")
