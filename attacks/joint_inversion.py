"""`joint-inversion`: the forward and backward channels of split fine-tuning read together.

During split fine-tuning the server receives, for every training sequence, h_A (the client head's output, after
the h_A defense) and dL/dh_B (the tail's gradient, after the gradient defense), and it holds h_B. The two
channels carry evidence about the same tokens: h_A at position t + 1 is a function of the input tokens 0..t+1
(exact-forward inversion reads it, `map-inversion`), and the gradient row at logit position t is a function of
the label at t — the input token t + 1 under a language-modelling loss, or the answer token under an
answer-only loss (`gradient-label`). With independent noise on the two edges the log-likelihoods add, so the
MAP decision under both is the exact-forward beam search with the gradient's log-evidence added to the public
prior at the labelled positions (`GradientLabel.evidence`): BiSR (Chen et al., ACM CCS 2024) combines the
forward and backward directions in the same spirit (there by optimisation; here by exact scoring).

`channels="h_a"` runs the same search without the gradient on the same training traffic, so the record of the
forward channel alone is scored exactly like the joint one; `gradient-label` is the backward channel alone.
The pipeline scores all three at the training targets (flbench.pipeline.gradient).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from attacks.base import Attack, Knowledge, Observations, make_attack, register
from flbench.core.params import Fraction, NonNegativeInt, PositiveInt, UnitIntervalOpen


@register("joint-inversion")
@dataclass
class JointInversion(Attack):
    """Exact-forward inversion of training h_A with the gradient's evidence on the labels (BiSR-style, CCS 2024).

    Assumes: the server records the fine-tuning traffic (h_A, h_B, dL/dh_B), knows the public weights, the
    split, the loss, and both defenses' laws (Kerckhoffs); not the client's adapters or noise draws.
    channels: "h_a+grad_b" (both) or "h_a" (the forward channel alone, on the same traffic; with
      positions="answer" and grad_candidates="answers" it still uses the public recipe — the sequence ends with
      one of the answers — which needs no gradient).
    top_k, prior, beam, expand, fallback, batch_size, mismatch: map-inversion's search (see `map-inversion`).
    grad_candidates, positions, false_alarm, min_fit: gradient-label's decoder (see `gradient-label`), whose
      evidence is added at the positions it takes as labelled (with positions="answer" and
      grad_candidates="answers", the recipe-aware attacker of an answer-only loss: the sequence ends with one
      of the public answers).
    """

    requires = frozenset({"h_a", "h_b", "grad_b"})
    primary_metric = "token_accuracy"
    channels: Literal["h_a+grad_b", "h_a"] = "h_a+grad_b"
    top_k: PositiveInt = 32
    prior: bool = True
    beam: PositiveInt = 1
    expand: NonNegativeInt = 4
    fallback: bool = True
    batch_size: PositiveInt = 8
    mismatch: bool = True
    grad_candidates: Literal["vocab", "answers"] = "vocab"
    positions: Literal["detect", "all", "answer"] = "detect"
    false_alarm: UnitIntervalOpen = 1e-3
    min_fit: Fraction = 0.5
    fit_log: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    labelled: list | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def channel(self) -> str:
        return self.channels

    def _parts(self, knowledge: Knowledge | None) -> tuple[Attack, Attack]:
        forward = make_attack("map-inversion", knowledge, seed=self.seed, top_k=self.top_k, prior=self.prior,
                              beam=self.beam, expand=self.expand, fallback=self.fallback,
                              batch_size=self.batch_size, mismatch=self.mismatch,
                              candidates="prior+proxy" if self.prior else "proxy")
        # the gradient decoder also holds the public recipe (answer tokens, answer length) the forward channel
        # alone may use; its gradient evidence is read only when channels include grad_b
        backward = make_attack("gradient-label", knowledge, seed=self.seed, candidates=self.grad_candidates,
                               positions=self.positions, false_alarm=self.false_alarm, min_fit=self.min_fit)
        return forward, backward

    def check(self, knowledge: Knowledge) -> None:
        super().check(knowledge)
        self._parts(knowledge)  # each part's own checks (a likelihood for h_A, answers for the labels)

    def _fit(self, aux_texts: list[str], knowledge: Knowledge) -> None:
        self._forward, self._backward = self._parts(knowledge)
        self._forward.fit(aux_texts, knowledge)
        self._backward.fit(aux_texts, knowledge)
        self._gradient = self.channels != "h_a"
        self._vocab = int(knowledge.model.get_input_embeddings().weight.shape[0])
        self.fit_log = {"forward": self._forward.fit_log,
                        "backward": self._backward.fit_log if self._gradient else None}

    def _evidence(self, obs: Observations, i: int) -> dict[int, torch.Tensor]:
        """Entry i's gradient evidence over the whole vocabulary ({input position: (V,)}): the log-likelihood
        ratio of "labelled with y" against "no label here" (`GradientLabel.evidence`). A token outside the
        gradient decoder's candidates (grad_candidates="answers") cannot be the label: at a position the recipe
        makes labelled (positions="answer") it is impossible (-inf); elsewhere being labelled is itself uncertain
        (detect: a test; all: every position is scored, and an unlabelled one must stay free to hold any token),
        so for such a token the position is simply unlabelled: ratio 0."""
        n = obs.lengths[i]
        if not self._gradient:  # the forward channel alone: only the public recipe, if it pins the answer
            if self.positions != "answer" or self.grad_candidates != "answers" or n < 2:
                return {}
            cand = self._backward.candidate_ids
            ev = {t: torch.zeros(int(cand.numel())) for t in self._backward.answer_positions(n)}
        elif obs.grad_b[i] is None or n < 2:
            return {}
        else:
            ev = self._backward.evidence(obs.h_b[i].float(), obs.grad_b[i].float())
        cand = self._backward.candidate_ids
        if int(cand.numel()) == self._vocab:
            return ev
        outside = float("-inf") if self.positions == "answer" else 0.0
        full = {}
        for t, e in ev.items():
            row = torch.full((self._vocab,), outside)
            row[cand] = e
            full[t] = row
        return full

    def _invert(self, obs: Observations) -> list[list[int]]:
        cache: dict[int, dict[int, torch.Tensor]] = {}

        def evidence(i: int) -> dict[int, torch.Tensor]:
            if i not in cache:
                cache[i] = self._evidence(obs, i)
            return cache[i]

        self._forward._evidence_fn = evidence
        # the training traffic comes from a new client version every step (its adapters move): the server knows
        # each message's step from the order of the traffic, so the mismatch test runs per step
        self._forward._mismatch_groups = list(obs.steps) if obs.steps is not None else None
        try:
            out = self._forward._invert(obs)
        finally:
            self._forward._evidence_fn = self._forward._mismatch_groups = None
        # the positions the gradient took as labelled (None: the forward channel alone decides none)
        self.labelled = [sorted(cache.get(i, {})) for i in range(len(obs))] if self._gradient else None
        return out

    def diagnostics(self, true_ids: list[list[int]]) -> dict[str, Any]:
        out = dict(self._forward.diagnostics(true_ids))
        if self._gradient:
            out["labelled_positions"] = sum(len(p) for p in self.labelled)
        return out
