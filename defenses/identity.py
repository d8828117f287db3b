"""`none`: the undefended baseline; sends the head's hidden states as they are."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from defenses.base import BaseDefense, register


@register("none")
@dataclass
class NoDefense(BaseDefense):
    """Identity: the server sees the clean h_A (FL-LLaMA without noise). Records call counts and signal RMS."""

    def _apply(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self._stats.add(h, None, 0.0)
        return h

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "noise": None, "formal_dp": False}
