"""`--split P,Q` → head (embedding + first P blocks), trunk (middle), tail (last Q blocks + norm + LM head).

Constraints: P ≥ 0, Q ≥ 0 and the trunk keeps at least one block (P + Q ≤ N − 1), so the server always
computes something. Several clients each get their own head and tail; the server holds one trunk.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flbench.core.errors import FlbenchError

if TYPE_CHECKING:  # parsing a split needs neither torch nor transformers (reporting sorts splits too)
    from torch import nn

    from splits.parts import Part

MAX_DIGITS = 6  # no LLaMA has a million blocks; longer numbers are refused before int() sees them
_SPLIT_RE = re.compile(r"\s*(-?[0-9]+)\s*,\s*(-?[0-9]+)\s*")


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


def show_value(text: object, limit: int = 40) -> str:
    """repr() of a user's value for a one-line error, shortened in the middle when it is long."""
    r = repr(text)
    if len(r) <= limit:
        return r
    s = str(text)
    return f"{s[:16]!r}…{s[-8:]!r} ({len(s)} characters)"


def parse_split(text: object, option: str = "--split") -> SplitSpec:
    """"P,Q" → SplitSpec: the one parser of partition points (CLI, sweep files, records, checkpoints).

    Accepts two non-negative decimal integers separated by a comma (spaces around them allowed); any other
    text raises FlbenchError naming the value. Whether the model has enough blocks is `SplitSpec.validate`'s job.
    """
    m = _SPLIT_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise FlbenchError(f"{option} {show_value(text)}: expected two integers P,Q (e.g. 2,2)")
    if any(len(g.lstrip("-")) > MAX_DIGITS for g in m.groups()):
        raise FlbenchError(f"{option} {show_value(text)}: P and Q are block counts; expected two integers of at most "
                           f"{MAX_DIGITS} digits (e.g. 2,2)")
    p, q = (int(g) for g in m.groups())
    if p < 0 or q < 0:
        raise FlbenchError(f"{option} {show_value(text)}: P and Q must be non-negative integers")
    return SplitSpec(p, q)


def split_sort_key(split: object) -> tuple[int, int]:
    """Display order of splits: the centralized reference (None or "centralized") first, then by (P, Q);
    text that is not a split sorts last."""
    if split is None or split == "centralized":
        return (-1, -1)
    if isinstance(split, SplitSpec):
        return (split.p, split.q)
    try:
        spec = parse_split(split)
    except FlbenchError:
        return (10**9, 10**9)
    return (spec.p, spec.q)


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
    from splits.parts import Part

    inner = model.model
    return Part(
        "head", model.config, [copy.deepcopy(b) for b in _blocks(model)[: spec.p]], 0,
        copy.deepcopy(inner.rotary_emb), embed=copy.deepcopy(inner.embed_tokens),
    )


def build_trunk(model: Any, spec: SplitSpec) -> Part:
    from splits.parts import Part

    n = len(_blocks(model))
    return Part(
        "trunk", model.config, [copy.deepcopy(b) for b in _blocks(model)[spec.p : n - spec.q]], spec.p,
        copy.deepcopy(model.model.rotary_emb),
    )


def build_tail(model: Any, spec: SplitSpec) -> Part:
    from splits.parts import Part

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
