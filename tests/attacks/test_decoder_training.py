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


class _Killed(Exception):
    pass


def _noisy_task(tiny, noise_gen: torch.Generator):
    """Like `_task`, with the noise drawn from a second generator (as the simulated client's noise is)."""
    emb = tiny.model.get_input_embeddings().weight.detach().float()
    vocab, d = emb.shape
    perm = torch.randperm(d, generator=torch.Generator().manual_seed(7))

    def batch(gen: torch.Generator, rows: int = 8, length: int = 12):
        ids = torch.randint(vocab, (rows, length), generator=gen)
        h = emb[ids] + emb.std() * torch.randn(ids.shape + (d,), generator=noise_gen)
        return h[..., perm], ids, torch.ones_like(ids)

    return batch, _task(tiny)[1]


def _fit(tiny, ckpt, kill_at: int | None = None, **kw):
    """A fresh decoder (same init) fitted on the noisy task; the run dies at step `kill_at` if given."""
    noise_gen = torch.Generator().manual_seed(99)
    make_batch, val = _noisy_task(tiny, noise_gen)
    calls = [0]

    def batches(gen):
        calls[0] += 1
        if kill_at is not None and calls[0] == kill_at:
            raise _Killed
        return make_batch(gen)

    torch.manual_seed(0)
    dec = build_decoder(tiny.model, "mlp", mlp_hidden=64)
    log = train_decoder(dec, batches, lr=3e-3, val=val, eval_batch=8, checkpoint=ckpt, generators=(noise_gen,), **kw)
    return dec, log, calls[0]


@pytest.mark.parametrize("mode", [
    dict(steps=400, patience=2, eval_every=10, min_delta=0.01, lr_cuts=1, vocab_sample=0),  # plateau rule
    dict(steps=60, patience=0, eval_every=10, vocab_sample=64),  # fixed budget, sampled softmax
])
def test_a_killed_fit_resumes_from_its_checkpoint_and_ends_bit_identical(tiny, tmp_path, mode):
    """A fit killed mid-run and restarted on the same checkpoint file continues from the last checkpoint (not
    step 0) and ends with the weights, curve and stop of an uninterrupted fit; the file is gone afterwards."""
    ref_dec, ref_log, _ = _fit(tiny, tmp_path / "ref.pt", **mode)
    assert ref_log["resumed_from"] == 0 and not (tmp_path / "ref.pt").exists()
    if mode["patience"]:
        assert ref_log["lr_cut_steps"] and ref_log["stop_reason"] == "plateau"  # the kill lands after the cut
        kill = ref_log["lr_cut_steps"][0] + 7
    else:
        kill = 37
    ckpt = tmp_path / "fit.partial.pt"
    with pytest.raises(_Killed):
        _fit(tiny, ckpt, kill_at=kill, **mode)
    assert ckpt.is_file()
    dec, log, calls = _fit(tiny, ckpt, **mode)
    last = (kill - 1) // mode["eval_every"] * mode["eval_every"]
    assert log["resumed_from"] == last > 0 and calls == log["steps"] - last
    assert not ckpt.exists()
    for (n, p), (_, q) in zip(dec.named_parameters(), ref_dec.named_parameters()):
        assert torch.equal(p, q), n
    for k in ("steps", "stop_reason", "curve", "best_step", "val_accuracy", "lr_cut_steps", "loss", "train_accuracy"):
        assert log.get(k) == ref_log.get(k), k


def test_a_checkpoint_of_another_fit_or_an_unreadable_one_is_refused(tiny, tmp_path):
    mode = dict(steps=30, patience=0, eval_every=10, vocab_sample=0)
    ckpt = tmp_path / "fit.partial.pt"
    with pytest.raises(_Killed):
        _fit(tiny, ckpt, kill_at=15, **mode)
    with pytest.raises(FlbenchError, match="belongs to another fit"):
        _fit(tiny, ckpt, **{**mode, "steps": 40})
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(FlbenchError, match="unreadable.*delete it"):
        _fit(tiny, ckpt, **mode)
