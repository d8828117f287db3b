"""`output-inversion`: the server reads the tail's outputs (labels in training, the answer at inference)
from its own output h_B.

Sources: the logit lens (nostalgebraist, "interpreting GPT: the logit lens", LessWrong 2020; Belrose et al.,
"Eliciting Latent Predictions from Transformers with the Tuned Lens", arXiv 2303.08112), applied to the
FL-LLaMA split (arXiv 2505.15683), where the server computes h_B itself and only the tail (last Q blocks +
final norm + LM head) stays with the client. The trained variant is a tuned lens: a residual MLP fitted on
auxiliary text run through the public head and trunk (with the known defense on h_A).

Alignment: with `target="next"` (default) the prediction made at position t is the tail's output, i.e. a
guess of token t+1. `invert` returns ids aligned with the input positions: recovered[0] is the most frequent
first token of the auxiliary text (position 0 is never predicted from h_B), recovered[t] = prediction made
at position t-1 for t >= 1; the prediction made at the last position (the token after the input, e.g. the
next generated token) is dropped. With `target="current"` the decoder inverts h_B to the input token at the
same position (learned inversion at the trunk's output) and recovered[t] comes from position t.

Training budget of the "mlp" decoder: as learned-inversion's (attacks.decoders, `DecoderAttack`): to a
validation plateau on held-out public aux text by default, exactly `steps` steps with patience=0.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import torch

from attacks.base import (
    Knowledge,
    Observations,
    SimulatedClient,
    register,
    tokenize_aux,
    wire_round,
)
from attacks.decoders import Decoder, DecoderAttack, build_decoder
from flbench.core.errors import FlbenchError
from flbench.core.params import NonNegativeInt, PositiveFloat, PositiveInt
from splits.partition import build_tail, build_trunk
from splits.sequence import pad_rows, positions_from_mask


@register("output-inversion")
@dataclass
class OutputInversion(DecoderAttack):
    """Logit lens (or a tuned lens fitted on public text) on the server's own output h_B (logit lens, 2020).

    Assumes: the attacker is the server (it holds h_B) and knows the public final norm + LM head; the
    trained variant also runs the public head and trunk on auxiliary text under the known defense.
    decoder: "logit-lens" (final norm + LM head on h_B; no training), "public-tail" (the public tail — its Q
      blocks, final norm and LM head — run on the whole h_B sequence: exactly the victim's next-token
      distribution when the victim's tail is not fine-tuned, so its greedy answer is recovered exactly;
      no training) — both need target "next" — or "mlp" (residual MLP, trained).
    target: "next" (the tail's output: next token) or "current" (the input token at the same position).
    steps, patience, eval_every, min_delta, lr_cuts, val_texts: the "mlp" decoder's training budget
      (`DecoderAttack`); batch_size, lr, max_aux, max_length, mlp_hidden, vocab_sample: its training.
    """

    requires = frozenset({"h_b"})
    decoder: Literal["logit-lens", "public-tail", "mlp"] = "logit-lens"
    target: Literal["next", "current"] = "next"
    batch_size: PositiveInt = 16
    lr: PositiveFloat = 1e-3
    max_aux: PositiveInt = 2000
    max_length: PositiveInt = 48
    mlp_hidden: PositiveInt = 1024
    vocab_sample: NonNegativeInt = 8192
    _first: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.decoder != "mlp" and self.target != "next":
            raise FlbenchError(f"attack {self.name!r}: target={self.target!r} is not accepted with "
                               f"decoder={self.decoder!r} (it predicts the next token); expected "
                               f"target='next', or decoder='mlp'")

    def _fit(self, aux_texts: list[str], knowledge: Knowledge) -> None:
        model, tok = knowledge.model, knowledge.tokenizer
        seqs = self._set_first(aux_texts, tok)
        if self.decoder == "logit-lens":
            self._decoder = build_decoder(model, "lens").eval()
            return
        if self.decoder == "public-tail":
            self._tail = build_tail(model, knowledge.spec).eval().requires_grad_(False)
            return
        if not seqs:
            raise FlbenchError(f"{self.name}: decoder='mlp' needs auxiliary texts to fit on")
        torch.manual_seed(self.seed)
        client = SimulatedClient(knowledge, self.seed + 1)
        trunk = build_trunk(model, knowledge.spec).eval().requires_grad_(False)
        shift = self.target == "next"

        def inputs(client: SimulatedClient, ids: torch.Tensor, mask: torch.Tensor, gen: torch.Generator):
            pos = positions_from_mask(mask)
            with torch.no_grad():
                h = wire_round(trunk(client.h_a(ids, mask, pos), mask, pos), knowledge.wire_dtype)
            if shift:  # position t is trained to predict token t+1; the last real position has no label
                targets = torch.cat([ids[:, 1:], ids[:, :1]], dim=1)
                loss_mask = torch.cat([mask[:, 1:], mask[:, :1] * 0], dim=1)
                return h, targets, loss_mask
            return h, ids, mask

        self._decoder = self._new_decoder(knowledge)
        self.fit_log = self._train(self._decoder, seqs, knowledge, client, inputs, batch_size=self.batch_size,
                                   lr=self.lr, weight_decay=0.0, vocab_sample=self.vocab_sample)

    def _set_first(self, aux_texts: list[str], tok) -> list[list[int]]:
        """Tokenize the aux texts and set the token predicted at position 0 (the most common first token:
        position 0 has no previous output to read it from). Returns the tokenized texts."""
        seqs = tokenize_aux(tok, aux_texts[: self.max_aux], self.max_length) if aux_texts else []
        firsts = Counter(s[0] for s in seqs)
        self._first = firsts.most_common(1)[0][0] if firsts else int(tok.bos_token_id or 0)
        return seqs

    def _new_decoder(self, knowledge: Knowledge) -> Decoder:
        return build_decoder(knowledge.model, "mlp", mlp_hidden=self.mlp_hidden)

    def load_fit_state(self, tensors, meta, aux_texts, knowledge) -> None:
        self._set_first(aux_texts, knowledge.tokenizer)
        super().load_fit_state(tensors, meta, aux_texts, knowledge)

    def _invert(self, obs: Observations) -> list[list[int]]:
        preds = self._public_tail(obs.h_b) if self.decoder == "public-tail" else self._decoder.predict(obs.h_b, self.batch_size)
        if self.target == "current":
            return preds
        return [[self._first] + p[:-1] for p in preds]

    def _public_tail(self, hs: list[torch.Tensor]) -> list[list[int]]:
        """Argmax of the public tail on each example's whole h_B sequence (right-padded batches; the causal
        mask keeps padding out of the real positions)."""
        out: list[list[int]] = []
        for start in range(0, len(hs), self.batch_size):
            chunk = hs[start : start + self.batch_size]
            h, mask = pad_rows([x.float() for x in chunk], 0.0)
            logits = self._tail(h, mask, positions_from_mask(mask))
            ids = logits.argmax(-1)
            out.extend(ids[i, : x.shape[0]].tolist() for i, x in enumerate(chunk))
        return out
