"""`embedding-nn`: map every observed hidden vector to its nearest token embedding.

Source: embedding inversion by nearest neighbour in the public embedding space, as in Song & Raghunathan,
"Information Leakage in Embedding Models", CCS 2020 (arXiv 2004.00053), and the FL-LLaMA threat analysis
(arXiv 2505.15683): at P = 0 the server receives the (noised) token embeddings themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from attacks.base import Attack, Knowledge, Observations, register
from flbench.core.params import PositiveInt


@register("embedding-nn")
@dataclass
class EmbeddingNN(Attack):
    """Nearest public token embedding to each observed h_A vector (Song & Raghunathan, CCS 2020).

    Assumes: the server sees h_A and knows the public embedding matrix; no training. Exact at P = 0 without
    noise; at deeper splits it is the baseline the residual stream still leaks to.
    metric: "cosine" (angle) or "l2" (Euclidean distance).
    chunk: vectors scored per matrix product (memory bound only).
    """

    metric: Literal["cosine", "l2"] = "cosine"
    chunk: PositiveInt = 4096

    def _fit(self, aux_texts: list[str], knowledge: Knowledge) -> None:
        emb = knowledge.model.get_input_embeddings().weight.detach().float()
        if self.metric == "cosine":
            self._table = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            self._bias = None
        else:  # argmin |h - e|^2 = argmax (2 h.e - |e|^2)
            self._table = 2 * emb
            self._bias = emb.square().sum(-1)

    def nearest(self, h: torch.Tensor) -> torch.Tensor:
        """Token ids (n,) of the nearest embeddings to the rows of h (n, d)."""
        out = []
        for part in torch.split(h.float(), self.chunk):
            scores = part @ self._table.T
            if self._bias is not None:
                scores -= self._bias
            out.append(scores.argmax(-1))
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)

    def _invert(self, obs: Observations) -> list[list[int]]:
        return [self.nearest(h).tolist() for h in obs.h_a]
