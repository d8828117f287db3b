"""A `Part` is one party's contiguous slice of a LLaMA-family decoder.

head  = embedding + blocks [0, P)            (client)
trunk = blocks [P, N-Q)                      (server)
tail  = blocks [N-Q, N) + final norm + LM head (client)

Each part holds its own deep copies of the blocks (parties never share module objects), its own rotary
embedding (public, weightless) and a config whose `num_hidden_layers` is the part's block count, so each
party can keep its own transformers `DynamicCache` with block indices local to the part. Masks are never
received: each part rebuilds the causal+padding mask from a 2-D padding mask it reconstructs from the
lengths carried in the message header (see `splits.sequence`).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask


class Part(nn.Module):
    def __init__(
        self,
        role: str,
        config: Any,
        layers: list[nn.Module],
        first_block: int,
        rotary: nn.Module,
        embed: nn.Module | None = None,
        norm: nn.Module | None = None,
        lm_head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.role = role
        self.first_block = first_block
        self.config = copy.deepcopy(config)
        self.config.num_hidden_layers = len(layers)
        global_types = getattr(config, "layer_types", None)
        if global_types is not None:
            self.config.layer_types = list(global_types[first_block : first_block + len(layers)])
        self.layers = nn.ModuleList(layers)
        for local_idx, layer in enumerate(self.layers):
            layer.self_attn.layer_idx = local_idx
        self.rotary_emb = rotary
        self.embed_tokens = embed
        self.norm = norm
        self.lm_head = lm_head

    @property
    def n_blocks(self) -> int:
        return len(self.layers)

    @property
    def block_range(self) -> tuple[int, int]:
        return self.first_block, self.first_block + self.n_blocks

    def new_cache(self) -> DynamicCache | None:
        return DynamicCache(config=self.config) if self.n_blocks else None

    def _masks(self, hidden: torch.Tensor, mask2d: torch.Tensor, position_ids: torch.Tensor, cache) -> dict:
        kwargs = dict(
            config=self.config,
            inputs_embeds=hidden,
            attention_mask=mask2d,
            cache=cache,
            position_ids=position_ids,
        )
        types = set(getattr(self.config, "layer_types", None) or ["full_attention"])
        masks = {}
        if "full_attention" in types:
            masks["full_attention"] = create_causal_mask(**kwargs)
        if "sliding_attention" in types:
            masks["sliding_attention"] = create_sliding_window_causal_mask(**kwargs)
        return masks

    def forward(
        self,
        x: torch.Tensor,
        mask2d: torch.Tensor,
        position_ids: torch.Tensor,
        cache: DynamicCache | None = None,
    ) -> torch.Tensor:
        """x: token ids (B, T) for the head, hidden states (B, T, d) otherwise.

        mask2d: (B, past + T) padding mask (1 = real token); position_ids: (B, T).
        Returns hidden states (B, T, d), or logits (B, T, V) for the tail.
        """
        hidden = self.embed_tokens(x) if self.embed_tokens is not None else x
        if self.n_blocks:
            masks = self._masks(hidden, mask2d, position_ids, cache)
            pos_emb = self.rotary_emb(hidden, position_ids=position_ids)
            for layer in self.layers:
                kind = getattr(layer, "attention_type", "full_attention")
                hidden = layer(
                    hidden,
                    attention_mask=masks.get(kind, masks.get("full_attention")),
                    position_embeddings=pos_emb,
                    position_ids=position_ids,
                    cache=cache,
                    use_cache=cache is not None,
                )
        if self.norm is not None:
            hidden = self.norm(hidden)
        if self.lm_head is not None:
            hidden = self.lm_head(hidden)
        return hidden
