"""`joint-inversion` reads the forward (h_A) and backward (dL/dh_B) channels of a cell's fine-tuning traffic
together: each channel alone is a record scored the same way, and the joint decision is at least as good as the
better channel when the other is destroyed by its defense (the evidence adds; a noisy channel adds little)."""
from __future__ import annotations

import pytest
import torch

from attacks import make_attack
from attacks.map_inversion import _with_evidence
from flbench.core.errors import FlbenchError
from flbench.pipeline.cell import run_cell
from flbench.pipeline.config import RunConfig, validate

CELL = {"model": "tiny-llama", "split": "1,0", "task": {"name": "sst2", "limit": 2},
        "finetune": {"steps": 2, "batch_size": 4, "max_length": 64}, "victims": {"limit": 8}, "seed": 0}
LOUD_H_A = {"name": "gaussian", "params": {"sigma": 16.0, "relative": True}}
LOUD_GRAD = {"name": "grad-dp", "params": {"clip": 1e-4, "noise_multiplier": 10.0}}


def _cell(channels: str, defense=None, grad=None) -> dict[str, dict]:
    cfg = {**CELL, "attacks": ["gradient-label", "joint-inversion"],
           "attack_params": {"joint-inversion": {"channels": channels, "grad_candidates": "answers",
                                                 "positions": "all"},
                             "gradient-label": {"candidates": "answers", "positions": "all"}}}
    if defense:
        cfg["defense"] = defense
    if grad:
        cfg["grad_defense"] = grad
    return {r["attack"]["name"]: r["attack"] for r in run_cell(validate(RunConfig, cfg), progress=False)}


def _acc(a: dict) -> float:
    return a["metrics"]["label_accuracy"]["mean"]


@pytest.fixture(scope="module")
def loud_h_a():
    return _cell("h_a+grad_b", defense=LOUD_H_A), _cell("h_a", defense=LOUD_H_A)


@pytest.fixture(scope="module")
def loud_grad():
    return _cell("h_a+grad_b", grad=LOUD_GRAD), _cell("h_a", grad=LOUD_GRAD)


def test_each_channel_is_a_record_of_its_own(loud_grad):
    both, fwd = loud_grad
    assert both["joint-inversion"]["channel"] == "h_a+grad_b" and fwd["joint-inversion"]["channel"] == "h_a"
    assert both["gradient-label"]["channel"] == "grad_b"
    assert both["joint-inversion"]["data"] == "train:sst2" and both["joint-inversion"]["n"] == 8
    # the forward channel alone decides no labelled positions: no detection metrics
    assert "detection_recall" not in fwd["joint-inversion"]["metrics"]
    assert "detection_recall" in both["joint-inversion"]["metrics"]


def test_a_destroyed_gradient_leaves_the_forward_channel(loud_grad):
    both, fwd = loud_grad
    assert _acc(both["gradient-label"]) <= 0.75  # the backward channel alone: about a coin flip
    assert _acc(fwd["joint-inversion"]) == 1.0  # undefended h_A: the answer token is an input token
    assert _acc(both["joint-inversion"]) == 1.0


def test_a_destroyed_h_a_leaves_the_backward_channel(loud_h_a):
    both, fwd = loud_h_a
    assert _acc(both["gradient-label"]) == 1.0  # exact at Q = 0 without gradient noise
    assert _acc(fwd["joint-inversion"]) < 1.0
    assert _acc(both["joint-inversion"]) == 1.0  # the gradient's evidence decides the labelled positions


def test_evidence_adds_to_the_prior_only_where_given():
    prior = torch.zeros(3, 5)
    ev = [{2: torch.tensor([0.0, 1, 2, 3, 4])}, {}, {1: torch.ones(5)}]
    victim = torch.tensor([0, 0, 1])  # two beams of victim 0, one of victim 1
    out = _with_evidence(prior, ev, victim, 2)
    assert torch.equal(out[0], ev[0][2]) and torch.equal(out[1], ev[0][2]) and torch.equal(out[2], torch.zeros(5))
    assert _with_evidence(prior, ev, victim, 3) is prior  # nobody has evidence at 3
    assert torch.equal(_with_evidence(None, ev, victim, 2)[2], torch.zeros(5))


def test_joint_inversion_needs_the_training_traffic_and_valid_channels():
    with pytest.raises(FlbenchError, match="channels"):
        make_attack("joint-inversion", channels="grad_b")
    with pytest.raises(FlbenchError, match="joint-inversion.*--finetune-steps|fine-tuning"):
        validate(RunConfig, {"model": "tiny-llama", "split": "1,0", "attacks": ["joint-inversion"],
                             "task": {"name": "sst2", "limit": 2}, "victims": {"limit": 2}})


@pytest.mark.parametrize("positions,outside", [("all", 0.0), ("detect", 0.0), ("answer", float("-inf"))])
def test_tokens_outside_the_label_candidates(positions, outside):
    """With grad_candidates="answers" a non-answer token means "no label here" (ratio 0) where being labelled is
    uncertain — with positions="all" every position is scored, and an unlabelled one must stay free to hold any
    token (a -inf there forced answer tokens into the prompt and broke an exact forward decode) — and is
    impossible (-inf) at the position the answer-only recipe labels (positions="answer")."""
    from types import SimpleNamespace

    from attacks.joint_inversion import JointInversion

    j = JointInversion(grad_candidates="answers", positions=positions)
    j._vocab, j._gradient = 6, True
    from attacks.gradient_label import GradientLabel

    backward = GradientLabel(candidates="answers")  # its public accessors over a fitted state of 2 answers
    backward._cand, backward._answer_len = torch.tensor([1, 4]), 1
    backward.evidence = lambda h, g: {3: torch.tensor([2.0, 5.0])}
    assert list(backward.answer_positions(4)) == [3] and list(backward.answer_positions(1)) == []
    j._backward = backward
    obs = SimpleNamespace(grad_b=[torch.zeros(4, 2)], h_b=[torch.zeros(4, 2)], lengths=[4])
    (row,) = j._evidence(obs, 0).values()
    assert row.tolist() == [outside, 2.0, outside, outside, 5.0, outside]
    # the forward channel alone reads no gradient, but still knows the recipe: the last token is an answer
    j.channels, j._gradient = "h_a", False
    if positions == "answer":
        assert {t: r.tolist() for t, r in j._evidence(obs, 0).items()} == {3: [outside, 0.0, outside, outside, 0.0, outside]}
    else:
        assert j._evidence(obs, 0) == {}


def test_recipe_aware_joint_labels_every_sequence_with_an_answer_under_both_defenses():
    """Both edges defended (loud h_A noise, grad-dp): with the answer-only recipe (positions="answer", answers as
    candidates) the joint attack labels exactly the recipe's positions of every training sequence and recovers an
    answer there, whatever the noise. No ordering against the better channel is asserted here: with both channels
    noisy the summed evidence can lose to either alone (results/bench/attacks_gradient_channels.json, sigma 8 / z 3:
    0.656 joint against 0.750 for h_A alone)."""
    cfg = {**CELL, "attacks": ["gradient-label", "joint-inversion"], "defense": LOUD_H_A,
           "grad_defense": {"name": "grad-dp", "params": {"clip": 1e-2, "noise_multiplier": 0.5}},
           "attack_params": {"joint-inversion": {"grad_candidates": "answers", "positions": "answer"},
                             "gradient-label": {"candidates": "answers", "positions": "answer"}}}
    recs = {r["attack"]["name"]: r["attack"] for r in run_cell(validate(RunConfig, cfg), progress=False)}
    joint = recs["joint-inversion"]
    # tiny-llama's tokenizer spells the answers character by character: each labelled position holds one of the
    # answers' characters (the recipe restricts tokens, not whole answer strings)
    letters = set(" positive negative")
    assert joint["examples"] and all(len(e["recovered"]) == len(e["original"]) == 9 and set(e["recovered"]) <= letters
                                     for e in joint["examples"]), joint["examples"]
    assert joint["diagnostics"]["labelled_positions"] == 9 * joint["n"]  # the 9 answer positions of every sequence
    assert 0.0 <= joint["metrics"]["label_accuracy"]["mean"] <= 1.0
