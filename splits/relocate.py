"""Moving partition points: LoRA adapter tensors travel with their blocks between the parties.

A checkpoint holds, per part, the adapter tensors of that part's blocks keyed with block indices *local* to
the part (`layers.{i}.self_attn.q_proj.lora_A.default.weight`: block `first_block + i` of the model, see
`splits.parts.Part`). `relocate` re-keys them for another split: a block that moves from the trunk into a
client head (P' > P) takes its tensors from the trunk's state into every client's head state, a block that
moves from a client part into the trunk (P' < P or Q' < Q) must carry the same tensors on every client (the
server holds one trunk) unless one client is chosen. Tensors are never copied or changed, only re-keyed, so
P,Q → P',Q' → P,Q gives back the very same tensors. Blocks that carried no adapter carry none after; tensors
outside the blocks (e.g. an adapter on the LM head) stay with their part.

`inject_blocks` puts adapters (peft) on exactly the given blocks of a part, so a part that after a move mixes
adapted and plain blocks is loaded as such (not with fresh adapters on the plain ones).
"""
from __future__ import annotations

import re

import torch

from flbench.core.errors import FlbenchError
from splits.partition import SplitSpec

BLOCK_KEY = re.compile(r"layers\.([0-9]+)\.(.+)")
ROLES = ("head", "trunk", "tail")
CLIENT_FILE = re.compile(r"client([0-9]+)\.(head|tail)")

State = dict[str, torch.Tensor]


def block_ranges(spec: SplitSpec, n_blocks: int) -> dict[str, tuple[int, int]]:
    """Global [first, end) block range of each part at `spec`."""
    return {"head": (0, spec.p), "trunk": (spec.p, n_blocks - spec.q), "tail": (n_blocks - spec.q, n_blocks)}


def part_name(role: str, client: int) -> str:
    return "trunk" if role == "trunk" else f"client{client}.{role}"


def checkpoint_clients(names) -> list[int]:
    """The client indices that a checkpoint's part names (`client{i}.head|tail`, `trunk`) mention, sorted."""
    return sorted({int(m.group(1)) for n in names if (m := CLIENT_FILE.fullmatch(n))})


def _globalize(name: str, state: State, first: int, end: int) -> tuple[dict[int, State], State]:
    """{global block: {key within the block: tensor}} and the part's tensors outside its blocks."""
    blocks: dict[int, State] = {}
    rest: State = {}
    for k, t in state.items():
        m = BLOCK_KEY.fullmatch(k)
        if m is None:
            rest[k] = t
            continue
        g = first + int(m.group(1))
        if g >= end:
            raise FlbenchError(f"{name}: adapter {k} names local block {m.group(1)}, but the part holds only "
                               f"{end - first} block(s) at this split (blocks {first}..{end - 1})")
        blocks.setdefault(g, {})[m.group(2)] = t
    return blocks, rest


def adapted_blocks(states: dict[str, State], spec: SplitSpec, n_blocks: int) -> list[int]:
    """Global indices of the blocks that carry adapter tensors in any part."""
    ranges = block_ranges(spec, n_blocks)
    out: set[int] = set()
    for name, state in states.items():
        role = name.rsplit(".", 1)[-1]
        out |= set(_globalize(name, state, *ranges[role])[0])
    return sorted(out)


def relocate(states: dict[str, State], src: SplitSpec, dst: SplitSpec, n_blocks: int,
             client: int | None = None, option: str = "--split") -> dict[str, State]:
    """Adapter states of a checkpoint at `src` (`{"trunk": …, "client{i}.head": …, "client{i}.tail": …}`)
    re-keyed for `dst`. With `client`, the result holds that client's parts only, renamed client0 (a
    one-client checkpoint); otherwise every client's. Parts left without tensors are omitted.

    Refuses (FlbenchError) a `dst` the model cannot take and, with several clients and no `client`, a block
    that would move into the shared trunk while the clients' adapters on it differ."""
    src.validate(n_blocks)
    dst.validate(n_blocks)
    bad = [n for n in states if n != "trunk" and not CLIENT_FILE.fullmatch(n)]
    if bad:
        raise FlbenchError(f"adapter part {bad[0]!r}: expected trunk or client<i>.head / client<i>.tail")
    clients = checkpoint_clients(states) or [0]
    if client is not None and client not in clients:
        raise FlbenchError(f"--client {client}: the checkpoint holds client(s) "
                           f"{', '.join(map(str, clients))}; accepted {clients[0]}..{clients[-1]}")
    keep = clients if client is None else [client]
    ranges = block_ranges(src, n_blocks)
    trunk_blocks, trunk_rest = _globalize("trunk", states.get("trunk", {}), *ranges["trunk"])
    per_client: dict[int, dict[int, State]] = {}
    rest: dict[tuple[int, str], State] = {}
    for c in clients:
        blocks = dict(trunk_blocks)
        for role in ("head", "tail"):
            name = part_name(role, c)
            b, r = _globalize(name, states.get(name, {}), *ranges[role])
            blocks.update(b)
            rest[c, role] = r
        per_client[c] = blocks
    new = block_ranges(dst, n_blocks)
    lo, hi = new["trunk"]
    for g in range(lo, hi):  # a client block entering the shared trunk must be the same on every kept client
        if ranges["trunk"][0] <= g < ranges["trunk"][1] or len(keep) < 2:
            continue
        first = per_client[keep[0]].get(g, {})
        for c in keep[1:]:
            other = per_client[c].get(g, {})
            if first.keys() != other.keys() or any(not torch.equal(first[k], other[k]) for k in first):
                raise FlbenchError(
                    f"{option} {dst}: block {g} moves from the clients into the server's one trunk, but client "
                    f"{keep[0]} and client {c} trained different adapters on it; choose one client's with "
                    f"--client I (I in {keep[0]}..{keep[-1]}), or keep block {g} on the clients "
                    f"({f'P ≥ {g + 1}' if g < src.p else f'Q ≥ {n_blocks - g}'})")

    def local(blocks: dict[int, State], role: str) -> State:
        first, end = new[role]
        return {f"layers.{g - first}.{k}": t for g in range(first, end) for k, t in sorted(blocks.get(g, {}).items())}

    out: dict[str, State] = {}
    trunk = {**local(per_client[keep[0]], "trunk"), **trunk_rest}
    if trunk:
        out["trunk"] = trunk
    for i, c in enumerate(keep):
        for role in ("head", "tail"):
            state = {**local(per_client[c], role), **rest[c, role]}
            if state:
                out[part_name(role, i if client is not None else c)] = state
    return out


def inject_blocks(part: torch.nn.Module, lora, state_keys) -> None:
    """Put adapters of spec `lora` (splits.training.LoraSpec) on exactly the modules of `part` that
    `state_keys` (a saved state's keys, e.g. `layers.0.self_attn.q_proj.lora_A.default.weight`) name, and
    freeze everything else. A part whose keys name no module gets none."""
    from peft import LoraConfig, inject_adapter_in_model

    for p in part.parameters():
        p.requires_grad_(False)
    modules = sorted({k.split(".lora_", 1)[0] for k in state_keys if ".lora_" in k})
    if not modules:
        return
    pattern = "|".join(re.escape(m) for m in modules)  # peft full-matches a string target against module names
    cfg = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=f"(?:{pattern})")
    inject_adapter_in_model(cfg, part)
