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

from flbench.core.errors import FlbenchError

# Compute dtypes of the parts (`--dtype`); distinct from the wire dtype (`--wire-dtype`, splits.wire).
COMPUTE_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def available_devices() -> list[str]:
    """The devices this machine offers: cpu, then cuda:0..cuda:N-1 (and mps where present)."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def check_device(name: str, flag: str = "--device") -> str:
    """A device name this machine has (`cpu`, `cuda`, `cuda:1`, `mps`), normalised; else one FlbenchError line."""
    have = available_devices()
    try:
        dev = torch.device(str(name).strip())
    except (RuntimeError, ValueError):
        raise FlbenchError(f"{flag} {name!r} is not a device name; available here: {', '.join(have)}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise FlbenchError(f"{flag} {name!r}: device type {dev.type} is not supported; available here: {', '.join(have)}")
    text = "cpu" if dev.type == "cpu" else str(dev)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FlbenchError(f"{flag} {name!r}: CUDA is not available on this machine; available here: {', '.join(have)}")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise FlbenchError(f"{flag} {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                           f"available here: {', '.join(have)}")
    if dev.type == "mps" and text not in have:
        raise FlbenchError(f"{flag} {name!r}: MPS is not available on this machine; available here: {', '.join(have)}")
    return text


def check_dtype(name: str, flag: str = "--dtype") -> torch.dtype:
    if name not in COMPUTE_DTYPES:
        raise FlbenchError(f"{flag} {name!r}: accepted {', '.join(COMPUTE_DTYPES)}")
    return COMPUTE_DTYPES[name]


def place(module: nn.Module, device: str | torch.device = "cpu", dtype: str = "fp32") -> nn.Module:
    """Move a part or a whole causal LM to `device` and cast it to compute dtype `dtype`, in place. Rotary
    embeddings keep their fp32 frequency table (as transformers builds it; cos/sin are cast to the hidden
    states' dtype when used), so a split part and the centralized model at one dtype compute the same."""
    module.to(device=device, dtype=check_dtype(dtype))
    for name, sub in module.named_modules():
        if name.endswith("rotary_emb"):
            sub.float()
    return module


def part_placement(part: nn.Module) -> tuple[torch.device, torch.dtype]:
    """(device, compute dtype) of a part: those of its first floating-point parameter (LoRA adapters, kept in
    fp32 master weights, are skipped)."""
    for n, p in part.named_parameters():
        if p.is_floating_point() and "lora_" not in n:
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


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

        mask2d: (B, past + T) padding mask (1 = real token), or None for packed sequences without a cache
        (positions restarting at 0 start a new sequence: transformers builds the block-diagonal causal mask);
        position_ids: (B, T). Returns hidden states (B, T, d), or logits (B, T, V) for the tail.
        """
        device, dtype = part_placement(self)
        if mask2d is None and cache is not None:
            raise ValueError("packed sequences (mask2d=None) run without a KV cache")
        mask2d = None if mask2d is None else mask2d.to(device)
        position_ids = position_ids.to(device)
        hidden = self.embed_tokens(x.to(device)) if self.embed_tokens is not None else x.to(device=device, dtype=dtype)
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
