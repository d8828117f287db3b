"""`--split P,Q` → head (embedding + first P blocks), trunk (middle), tail (last Q blocks + norm + LM head).

Constraints: P ≥ 0, Q ≥ 0 and the trunk keeps at least one block (P + Q ≤ N − 1), so the server always
computes something. Several clients each get their own head and tail; the server holds one trunk.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from torch import nn

from flbench.core.errors import FlbenchError
from splits.parts import Part


@dataclass(frozen=True)
class SplitSpec:
    p: int
    q: int

    def __str__(self) -> str:
        return f"{self.p},{self.q}"

    def validate(self, n_blocks: int) -> "SplitSpec":
        if self.p < 0 or self.q < 0:
            raise FlbenchError(f"--split {self}: P and Q must be ≥ 0 (the model has {n_blocks} blocks)")
        if self.p + self.q > n_blocks - 1:
            raise FlbenchError(
                f"--split {self}: the trunk must keep at least one block, so P + Q ≤ {n_blocks - 1} "
                f"(the model has {n_blocks} blocks)"
            )
        return self


def parse_split(text: str) -> SplitSpec:
    parts = str(text).replace(" ", "").split(",")
    if len(parts) != 2 or not all(re.fullmatch(r"-?[0-9]+", p) for p in parts):
        raise FlbenchError(f"--split {text!r}: expected two integers P,Q (e.g. 2,2)")
    p, q = (int(x) for x in parts)
    if p < 0 or q < 0:
        raise FlbenchError(f"--split {text!r}: P and Q must be non-negative integers")
    return SplitSpec(p, q)


@dataclass
class SplitParts:
    spec: SplitSpec
    n_blocks: int
    heads: list[Part]
    tails: list[Part]
    trunk: Part


def _blocks(model: Any) -> list[nn.Module]:
    return list(model.model.layers)


def build_head(model: Any, spec: SplitSpec) -> Part:
    inner = model.model
    return Part(
        "head", model.config, [copy.deepcopy(b) for b in _blocks(model)[: spec.p]], 0,
        copy.deepcopy(inner.rotary_emb), embed=copy.deepcopy(inner.embed_tokens),
    )


def build_trunk(model: Any, spec: SplitSpec) -> Part:
    n = len(_blocks(model))
    return Part(
        "trunk", model.config, [copy.deepcopy(b) for b in _blocks(model)[spec.p : n - spec.q]], spec.p,
        copy.deepcopy(model.model.rotary_emb),
    )


def build_tail(model: Any, spec: SplitSpec) -> Part:
    n = len(_blocks(model))
    inner = model.model
    return Part(
        "tail", model.config, [copy.deepcopy(b) for b in _blocks(model)[n - spec.q :]], n - spec.q,
        copy.deepcopy(inner.rotary_emb), norm=copy.deepcopy(inner.norm), lm_head=copy.deepcopy(model.lm_head),
    )


def build_split(model: Any, spec: SplitSpec, n_clients: int = 1) -> SplitParts:
    n = len(_blocks(model))
    spec.validate(n)
    if n_clients < 1:
        raise FlbenchError(f"--clients {n_clients}: need at least 1 client")
    heads = [build_head(model, spec) for _ in range(n_clients)]
    tails = [build_tail(model, spec) for _ in range(n_clients)]
    return SplitParts(spec, n, heads, tails, build_trunk(model, spec))
