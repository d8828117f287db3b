"""`learned-inversion`: train a decoder that reads each input token back from the hidden states h_A.

Source: the hidden-state reconstruction attack of FL-LLaMA, "A Federated Splitting Framework for LLMs:
Security, Efficiency, and Adaptability" (arXiv 2505.15683) and the authors' code: run the public head on
auxiliary text, add the defense's noise, and train a decoder (initialised from the public weights: the
head's blocks + final norm + LM head, a "mirror" of the head) to predict every input token from the hidden
state at its position; decode by argmax. Related: He et al., "Model Inversion Attacks against
Collaborative Inference", ACSAC 2019 (learned inverse networks on split-model activations).

Training budget: by default the decoder trains to a validation plateau on held-out PUBLIC auxiliary text,
with at most `steps` steps, and keeps its best-validation weights; `patience=0` is the earlier fixed budget
of exactly `steps` steps (attacks.decoders, `DecoderAttack`). The fit log records the validation curve.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from attacks.base import (
    Knowledge,
    Observations,
    SimulatedClient,
    register,
    tokenize_aux,
)
from attacks.decoders import Decoder, DecoderAttack, build_decoder
from flbench.core.params import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)
from splits.sequence import positions_from_mask


@register("learned-inversion")
@dataclass
class LearnedInversion(DecoderAttack):
    """Decoder trained on public text to invert h_A token by token (FL-LLaMA, arXiv 2505.15683).

    Assumes: the server sees h_A and knows the public head weights, the split and the defense with its
    parameters (it trains against fresh noise of the same law), and has public auxiliary text.
    decoder: "blocks" (mirror: copies of blocks 0..P-1 + final norm + LM head; at P = 0 norm + LM head) or
      "mlp" (residual 2-layer MLP + final norm + LM head). batch_size, lr, weight_decay: AdamW.
    steps, patience, eval_every, min_delta, lr_cuts, val_texts: the training budget (`DecoderAttack`): train to
      a validation plateau on held-out aux texts, at most `steps` steps; patience=0: exactly `steps` steps.
    max_aux: auxiliary texts used; max_length: tokens per aux text. vocab_sample: random negatives of the
      sampled softmax during training (0 = full softmax). train_head: also train the (tied) LM head.
    random_tokens: fraction of aux tokens replaced by uniformly random vocabulary ids during training, so
      the decoder also sees rare tokens (names, e-mail pieces) the aux text lacks; the attacker may run the
      public head on any input, so this uses nothing beyond the threat model. The validation batch gets the
      same treatment (one fixed seeded draw), so it measures what training optimises, on held-out text.
    """

    decoder: Literal["blocks", "mlp"] = "blocks"
    batch_size: PositiveInt = 16
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0
    max_aux: PositiveInt = 2000
    max_length: PositiveInt = 48
    mlp_hidden: PositiveInt = 1024
    vocab_sample: NonNegativeInt = 8192
    train_head: bool = False
    random_tokens: Fraction = 0.2

    def _fit(self, aux_texts: list[str], knowledge: Knowledge) -> None:
        model, tok = knowledge.model, knowledge.tokenizer
        torch.manual_seed(self.seed)  # decoder init (the MLP's first layer)
        seqs = tokenize_aux(tok, aux_texts[: self.max_aux], self.max_length)
        client = SimulatedClient(knowledge, self.seed + 1)
        vocab = int(model.get_input_embeddings().weight.shape[0])

        def inputs(client: SimulatedClient, ids: torch.Tensor, mask: torch.Tensor, gen: torch.Generator):
            if self.random_tokens > 0:
                swap = (torch.rand(ids.shape, generator=gen) < self.random_tokens) & mask.bool()
                ids = torch.where(swap, torch.randint(vocab, ids.shape, generator=gen), ids)
            return client.h_a(ids, mask, positions_from_mask(mask)), ids, mask

        self._decoder = self._new_decoder(knowledge)
        self.fit_log = self._train(self._decoder, seqs, knowledge, client, inputs, batch_size=self.batch_size,
                                   lr=self.lr, weight_decay=self.weight_decay, vocab_sample=self.vocab_sample)

    def _new_decoder(self, knowledge: Knowledge) -> Decoder:
        return build_decoder(knowledge.model, self.decoder, knowledge.spec.p, self.mlp_hidden, self.train_head)

    def _invert(self, obs: Observations) -> list[list[int]]:
        return self._decoder.predict(obs.h_a, self.batch_size)
