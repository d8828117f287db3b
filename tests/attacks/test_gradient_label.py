"""`gradient-label`: the training targets from the dL/dh_B the server receives (the backward channel).

On the tiny random LLaMA: exact at Q = 0 (the tail is norm + LM head: the true label's predicted gradient is
the observation), near-exact with tail blocks (and the client's LoRA adapters in them, unknown to the server),
worse than the trivial baseline under heavy gradient noise (grad-dp, its law known to the attacker); the
observations pair every GRAD_B with its training forward."""
from __future__ import annotations

import pytest
import torch

from attacks import Knowledge, make_attack, observe
from defenses import make_defense, make_generator
from flbench.core.errors import FlbenchError
from flbench.data import load_corpus
from splits import SplitRuntime, SplitSpec
from splits.sequence import pad_rows
from splits.training import LoraSpec, SequentialTrainer
from splits.wire import RecordingTap


@pytest.fixture(scope="module")
def texts():
    return [r.text for r in load_corpus("private-records", limit=8, seed=1)]


def _train(tiny, split, texts, answer_only, grad_defense=None, steps=2, lr=1e-2):
    """Two training steps of 4 texts each (whole-text LM loss, or the loss on the last 3 tokens only), tapped.
    Returns (runtime, tap, truth): truth = [(ids, target positions)] in wire order."""
    rt = SplitRuntime(tiny, SplitSpec(*split), grad_defense=grad_defense,
                      grad_generator=None if grad_defense is None else make_generator(seed=5))
    trainer = SequentialTrainer(rt, LoraSpec(), lr=lr)
    tap = RecordingTap()
    rt.wire.taps.append(tap)
    truth = []
    for s in range(steps):
        ids = [tiny.tokenizer(t, truncation=True, max_length=32)["input_ids"] for t in texts[4 * s:4 * s + 4]]
        x, mask = pad_rows(ids, 0)
        labels = pad_rows([[-100] * (len(i) - 3) + i[-3:] for i in ids], -100)[0] if answer_only else None
        trainer.step(x, mask, labels)
        truth += [(i, list(range(len(i) - 3, len(i))) if answer_only else list(range(1, len(i)))) for i in ids]
    return rt, tap, truth


def _attack(rt, tap, **params):
    k = Knowledge.from_runtime(rt)
    a = make_attack("gradient-label", k, **params)
    rec = a.fit([], k).invert(observe(tap))
    return a, rec


def _accuracy(rec, truth):
    hits = [r[t] == ids[t] for r, (ids, targets) in zip(rec, truth) for t in targets]
    return sum(hits) / len(hits)


@pytest.mark.parametrize("answer_only", [False, True])
def test_exact_at_q0(tiny, texts, answer_only):
    rt, tap, truth = _train(tiny, (1, 0), texts, answer_only)
    a, rec = _attack(rt, tap)
    assert _accuracy(rec, truth) == 1.0
    assert a.labelled == [targets for _, targets in truth]  # a gradient row ⇔ a label (no attention in the tail)
    assert all(f > 0.999 for fits in a.fits for f in fits)  # the true label's predicted gradient IS the observation
    assert all(r[0] == a._fill for r in rec)  # position 0 is never a target


@pytest.mark.parametrize("split", [(1, 1), (1, 2)])
@pytest.mark.parametrize("answer_only", [False, True])
def test_near_exact_with_tail_blocks(tiny, texts, split, answer_only):
    rt, tap, truth = _train(tiny, split, texts, answer_only)
    _, rec = _attack(rt, tap, positions="all" if not answer_only else "detect")
    assert _accuracy(rec, truth) >= 0.95, _accuracy(rec, truth)


def test_beats_baseline_and_heavy_gradient_noise_hurts(tiny, texts):
    """The shared contract of every attack (tests/attacks/test_attacks_shared.py), on training traffic."""
    rt, tap, truth = _train(tiny, (1, 1), texts, False)
    _, rec = _attack(rt, tap, positions="all")
    clean = _accuracy(rec, truth)
    counts = torch.bincount(torch.tensor([i[t] for i, ts in truth for t in ts]))
    baseline = _accuracy([[int(counts.argmax())] * len(i) for i, _ in truth], truth)
    noisy_dp = make_defense("grad-dp", clip=1e-3, noise_multiplier=10.0)  # σ = 10 × C: noise swamps the clip
    rt, tap, truth = _train(tiny, (1, 1), texts, False, grad_defense=noisy_dp)
    a, rec = _attack(rt, tap, positions="all")
    noisy = _accuracy(rec, truth)
    assert a.fit_log["noise_sigma"] == pytest.approx(1e-2)  # the defense's law: σ = z·C
    assert clean > baseline + 0.5 and noisy < clean - 0.5, (clean, baseline, noisy)


def test_mild_gradient_noise_keeps_the_labels(tiny, texts):
    """Noise-aware decoding: with a clip above the gradients' norm and little noise, the likelihood-ratio test
    still finds the labelled positions and their labels."""
    rt, tap, truth = _train(tiny, (1, 0), texts, True, grad_defense=make_defense("grad-dp", clip=10.0,
                                                                                   noise_multiplier=1e-6))
    a, rec = _attack(rt, tap)
    assert _accuracy(rec, truth) == 1.0
    assert a.labelled == [targets for _, targets in truth]


def test_answers_restrict_the_candidates(tiny, texts):
    rt, tap, truth = _train(tiny, (1, 0), texts, True)
    answers = tuple({(ids[t],) for ids, targets in truth for t in targets})
    from dataclasses import replace

    k = replace(Knowledge.from_runtime(rt), answers=answers)
    a = make_attack("gradient-label", k, candidates="answers")
    rec = a.fit([], k).invert(observe(tap))
    assert a.fit_log["candidates"] == len({t for (t,) in answers}) and _accuracy(rec, truth) == 1.0
    # under noise that swamps the gradient, positions="all" still decodes every position among the answers
    rt, tap, truth = _train(tiny, (1, 0), texts, True, grad_defense=make_defense("grad-dp", clip=1e-4,
                                                                                   noise_multiplier=10.0))
    k = replace(Knowledge.from_runtime(rt), answers=answers)
    a = make_attack("gradient-label", k, candidates="answers", positions="all")
    rec = a.fit([], k).invert(observe(tap))
    assert a.labelled == [list(range(1, len(ids))) for ids, _ in truth]
    assert all((r[t],) in answers for r, (ids, targets) in zip(rec, truth) for t in targets)
    with pytest.raises(FlbenchError, match="candidates='answers' needs a training task"):
        make_attack("gradient-label", Knowledge.from_runtime(rt), candidates="answers")


def test_observations_pair_each_gradient_with_its_forward(tiny, texts):
    rt, tap, truth = _train(tiny, (1, 1), texts, False)
    rt.forward(*pad_rows([[5, 6, 7]], 0))  # eval traffic after training: no gradient
    obs = observe(tap, examples_per_epoch=4)
    assert obs.lengths == [len(i) for i, _ in truth] + [3]
    assert [tuple(g.shape) for g in obs.grad_b[:-1]] == [(len(i), 64) for i, _ in truth] and obs.grad_b[-1] is None
    assert obs.steps == [0] * 4 + [1] * 4 + [-1] and obs.epochs == [0] * 4 + [1] * 4 + [-1]
    assert obs.clients == [0] * 9 and obs.trained() == list(range(8))
    assert obs.available() == {"h_a", "h_b", "grad_b"}
    assert observe(tap, observes={"h_a", "h_b"}).grad_b is None
    with pytest.raises(FlbenchError, match="needs observations grad_b"):
        k = Knowledge.from_runtime(rt)
        make_attack("gradient-label", k).fit([], k).invert(observe(tap, observes={"h_a", "h_b"}))


def test_pooling_the_epochs_of_a_run_beats_the_gradient_noise(tiny, texts):
    """Every epoch re-sends each example's gradient with a fresh grad-dp draw: linked by h_A across 8 epochs
    and averaged (noise σ/√8), the labels the single releases lose come back."""
    import random

    from defenses import make_defense

    d = make_defense("grad-dp", clip=1e-3, noise_multiplier=0.1)
    rt = SplitRuntime(tiny, SplitSpec(1, 1), grad_defense=d, grad_generator=make_generator(seed=5))
    trainer = SequentialTrainer(rt, LoraSpec(), lr=1e-3)
    tap = RecordingTap()
    rt.wire.taps.append(tap)
    truth, rng = [], random.Random(0)
    for _ in range(8):  # 8 epochs of the same 4 texts, a new order each
        order = rng.sample(range(4), 4)
        ids = [tiny.tokenizer(texts[i], truncation=True, max_length=32)["input_ids"] for i in order]
        x, mask = pad_rows(ids, 0)
        trainer.step(x, mask, None)
        truth += [(i, list(range(1, len(i)))) for i in ids]
    k = Knowledge.from_runtime(rt)
    obs = observe(tap, examples_per_epoch=4)
    acc = {}
    for pool in ("none", "linked"):
        a = make_attack("gradient-label", k, positions="all", pool=pool).fit([], k)
        acc[pool] = _accuracy(a.invert(obs), truth)
        diag = a.diagnostics([ids for ids, _ in truth])
    assert diag["linking_accuracy"] == 1.0 and diag["pooled_groups"] == 4
    assert acc["none"] < 0.4 and acc["linked"] > 0.8, acc
    with pytest.raises(FlbenchError, match="pool='linked'"):  # no epochs known: nothing to link
        make_attack("gradient-label", k, pool="linked").fit([], k).invert(observe(tap))
