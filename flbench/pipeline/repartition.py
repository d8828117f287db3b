"""`flbench repartition` and `--split` on load: a checkpoint written by `flbench train` at P,Q served (or
rewritten) at P',Q'. The adapter tensors travel with their blocks between the parties (`splits.relocate`);
nothing is recomputed, so the split forward at P',Q' with the moved adapters equals the one at P,Q.

A rewritten checkpoint is a `flbench train --out` directory like any other: one safetensors file per part,
`run.json` (the source's, with the new `split`, `lora.parts` = the parts that now hold adapters, `lora.blocks` =
the global indices of the adapted blocks, and a `repartitioned` history) and the source's `losses.jsonl`.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from flbench.core.canonical import strict_json
from flbench.core.errors import FlbenchError
from flbench.core.io import atomic_write_dir
from flbench.pipeline.utility import _bad_checkpoint, read_checkpoint
from splits.partition import SplitSpec, parse_split, show_value
from splits.relocate import adapted_blocks, block_ranges, checkpoint_clients, inject_blocks, relocate
from splits.training import PART_NAMES, LoraSpec

State = dict[str, torch.Tensor]


def checkpoint_blocks(meta: dict, ckpt_dir, model_blocks: int | None = None) -> int:
    """The model's block count as the checkpoint's run.json records it (`n_blocks`, written by train), or,
    when it records none, `model_blocks` (the loaded model's)."""
    n = meta.get("n_blocks", model_blocks)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise _bad_checkpoint(Path(ckpt_dir) / "run.json", f"'n_blocks' is {n!r}; expected the model's block count "
                              "(a positive integer)")
    return n


def lora_spec(meta: dict) -> LoraSpec:
    lo = meta["lora"]
    return LoraSpec(rank=int(lo["rank"]), alpha=float(lo["alpha"]), dropout=float(lo.get("dropout", 0.0)),
                    target_modules=tuple(lo["target_modules"]), parts=tuple(lo["parts"]))


def read_adapter_files(ckpt_dir) -> dict[str, State]:
    """{part name: adapter state} of every `*.safetensors` in the directory (safetensors only, never pickle);
    NaN/Inf values and names that are not a part are refused with one line naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from splits.relocate import CLIENT_FILE

    states = {}
    for f in sorted(Path(ckpt_dir).glob("*.safetensors")):
        name = f.name[: -len(".safetensors")]
        if name != "trunk" and not CLIENT_FILE.fullmatch(name):
            raise _bad_checkpoint(f, "not an adapter file of a part (trunk, client<i>.head, client<i>.tail)")
        try:
            state = load_file(str(f))
        except (SafetensorError, OSError) as e:
            raise _bad_checkpoint(f, f"not a readable safetensors file ({e})") from None
        bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
        if bad is not None:
            raise _bad_checkpoint(f, f"adapter weight {bad} holds NaN/Inf values")
        states[name] = state
    return states


def source_states(meta: dict, ckpt_dir, model_blocks: int | None = None) -> dict[str, State]:
    """The checkpoint's adapter states at its own split, checked: every key names a block of its part, and
    (for a repartitioned checkpoint) the adapted blocks are those run.json lists in `lora.blocks`."""
    n = checkpoint_blocks(meta, ckpt_dir, model_blocks)
    src = parse_split(meta["split"])
    states = read_adapter_files(ckpt_dir)
    for name, state in states.items():  # keys beyond the part's blocks: a damaged or foreign checkpoint
        try:
            adapted_blocks({name: state}, src, n)
        except FlbenchError as e:
            raise _bad_checkpoint(Path(ckpt_dir) / f"{name}.safetensors", str(e)) from None
    want = meta["lora"].get("blocks")
    if want is not None and adapted_blocks(states, src, n) != want:
        raise _bad_checkpoint(Path(ckpt_dir) / "run.json", f"lora blocks {show_value(want)} are not the blocks "
                              f"the adapter files hold ({adapted_blocks(states, src, n)})")
    return states


def moved_states(meta: dict, ckpt_dir, spec: SplitSpec, client: int | None = None,
                 option: str = "--split", model_blocks: int | None = None) -> dict[str, State]:
    """The checkpoint's adapter states re-keyed for `spec` (see `splits.relocate.relocate`)."""
    n = checkpoint_blocks(meta, ckpt_dir, model_blocks)
    spec.validate(n)
    states = source_states(meta, ckpt_dir, n)
    return relocate(states, parse_split(meta["split"]), spec, n, client=client, option=option)


def check_repartition(meta: dict, ckpt_dir, spec: SplitSpec, option: str = "--split") -> None:
    """Refuse, before any model loads, a split the checkpoint cannot be moved to (adapters are small: this
    reads them)."""
    if meta["split"] != str(spec):
        moved_states(meta, ckpt_dir, spec, option=option)


def load_into(rt, meta: dict, ckpt_dir) -> LoraSpec:
    """Load the checkpoint's adapters into `rt`'s parts at `rt.spec`, moving them from the checkpoint's split
    when it differs: adapters go on exactly the blocks that carry them (a block without one gets none)."""
    lora = lora_spec(meta)
    src = parse_split(meta["split"])
    n = rt.parts.n_blocks
    states = (moved_states(meta, ckpt_dir, rt.spec, model_blocks=n) if src != rt.spec
              else source_states(meta, ckpt_dir, n))
    if not states:
        raise _bad_checkpoint(Path(ckpt_dir), "no client0.head/client0.tail/trunk .safetensors adapter files")
    for name, part in rt.modules().items():
        key = "trunk" if name.endswith("trunk") else name
        state = states.get(key, {})
        inject_blocks(part, lora, state)
        if not state:
            continue
        where = Path(ckpt_dir) / f"{key}.safetensors"
        if src != rt.spec:
            where = f"{where} (moved from --split {src} to {rt.spec})"
        try:
            missing, unexpected = part.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatch
            raise _bad_checkpoint(where, f"adapter shapes do not match the {name} part "
                                  f"({str(e).splitlines()[-1].strip()})") from None
        bad = unexpected or [k for k in missing if "lora_" in k]
        if bad:
            raise _bad_checkpoint(where, f"adapter keys do not match the {name} part (e.g. {bad[0]})")
        part.eval()
    return lora


def repartition(ckpt_dir, spec: SplitSpec, out: Path, client: int | None = None, overwrite: bool = False) -> dict:
    """Rewrite the checkpoint for `spec` into `out` (atomically, as one directory). Returns the summary."""
    from safetensors.torch import save as safetensors_bytes

    ckpt_dir = Path(ckpt_dir)
    meta = read_checkpoint(ckpt_dir)
    src = parse_split(meta["split"])
    n = checkpoint_blocks(meta, ckpt_dir)
    states = moved_states(meta, ckpt_dir, spec, client=client)
    new = block_ranges(spec, n)
    files: dict[str, bytes] = {}
    for name, state in states.items():
        role = name.rsplit(".", 1)[-1]
        files[f"{name}.safetensors"] = safetensors_bytes(
            {k: v.contiguous() for k, v in state.items()},
            metadata={"format": "pt", "part": role, "first_block": str(new[role][0])})
    losses = ckpt_dir / "losses.jsonl"
    if losses.is_file():
        files["losses.jsonl"] = losses.read_bytes()
    clients = checkpoint_clients(states) or [0]
    run = copy.deepcopy(meta)
    run["split"] = str(spec)
    run["lora"]["parts"] = [r for r in PART_NAMES if any(k.rsplit(".", 1)[-1] == r for k in states)]
    run["lora"]["blocks"] = adapted_blocks(states, spec, n)
    if client is not None:
        run["clients"] = 1
    history = run.get("repartitioned") if isinstance(run.get("repartitioned"), list) else []
    run["repartitioned"] = history + [{"from_split": str(src), "to_split": str(spec), "source": str(ckpt_dir),
                                       "client": client}]
    run["out"] = str(out)
    files["run.json"] = (strict_json(run, indent=2, default=str) + "\n").encode()
    atomic_write_dir(out, files, overwrite=overwrite)
    moved = {role: f"{a}..{b - 1}" if b > a else "-" for role, (a, b) in new.items()}
    return {"checkpoint": str(ckpt_dir), "out": str(out), "from_split": str(src), "split": str(spec),
            "n_blocks": n, "clients": len(clients), "client": client, "blocks": moved,
            "adapted_blocks": run["lora"]["blocks"],
            "files": {name: len(state) for name, state in sorted(states.items())},
            "adapter_tensors": sum(len(s) for s in states.values()),
            "adapter_parameters": sum(int(t.numel()) for s in states.values() for t in s.values())}
