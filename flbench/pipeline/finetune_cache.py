"""Sharing a cell's fine-tuned client between cells whose fine-tuning is the same (issue 13: "checkpoints shared
between cells that differ only in the attack").

A cell's fine-tuning reads its model (and weights), split, h_A defense, gradient defense, task (its training
portion), fine-tuning recipe, seed, wire dtype, compute dtype and devices. It does not read the attacks, their
parameters, the victims, the attacker's knowledge or the utility evaluation. An adaptive-attacker cell
(`attacker: {head: surrogate}`) and its public-head twin therefore train the same client; so do cells that differ
only in their attack list. With a cache directory (`--fit-cache DIR`, beside the attackers' fits) the first such
cell stores its fine-tuned adapters and the others load them instead of training again (≈ 15 min per cell at
the defenses sweep's 60 steps on this machine). The attacker's own surrogate fine-tuning goes through the same
cache under its own recipe (its seed, and its task if another).

The utility evaluation is shared the same way: it reads the fine-tuned client (so everything above) plus the task
block of the config (eval limit, batch size), and nothing of the attacks, so twin cells score the same examples
through the same adapters with the same noise draws. Its result (the record's task block and the evaluation's wire
bytes and SNR) is stored as `<dir>/utility/<key>.json` (≈ 2–7 min per cell here).

The one exception: a cell whose attacks read the fine-tuning traffic (gradient attacks) needs the recordings made
during training, which are not stored, so it always trains (and stores the result for the others).

Entries: `<dir>/finetune/<key>/` holding the adapters (safetensors), losses.jsonl and run.json as `flbench train`
writes them, plus `cell.json` (the key's inputs and what the cell needs beyond the adapters: the training
summary, the number of releases per example and the gradient defense's record block). The key is the SHA-256 of
the canonical JSON of the inputs above and `FINETUNE_CACHE_VERSION`; bump it whenever a change to flbench
changes what fine-tuning produces. An entry is written to a temporary directory and renamed into place, so a
crash leaves no half entry.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from flbench.core.canonical import canonical_json, content_key, finite_or_null, normalize_numbers
from flbench.core.errors import FlbenchError

FINETUNE_CACHE_VERSION = 1
UTILITY_CACHE_VERSION = 1  # bump whenever a change to flbench changes what the utility evaluation produces
INFO = "cell.json"


def key_inputs(cfg, loaded, devices: dict) -> dict[str, Any]:
    """What the cell's fine-tuning reads (module docstring), as canonical JSON data."""
    c = cfg.resolved()
    return normalize_numbers({
        "version": FINETUNE_CACHE_VERSION, "model": c["model"],
        "weights_sha256": (loaded.identity or {}).get("weights_sha256"), "split": c.get("split"),
        "defense": c.get("defense"), "grad_defense": c.get("grad_defense"), "task": (c.get("task") or {}).get("name"),
        "finetune": c.get("finetune"), "seed": c.get("seed"), "wire_dtype": c.get("wire_dtype"),
        "dtype": c.get("dtype", "fp32"), "devices": {k: str(v) for k, v in sorted(devices.items())}})


key_of = content_key  # an entry's name: the sha256 of its canonical inputs (shared with the fit cache)


def _checked_entry(path: Path, inputs: dict[str, Any], what: str, redo: str,
                   blocks: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The JSON object at `path` if it exists, else None. One-line errors (naming `what` and how to recover) when
    it is unreadable, is not an object, lacks one of `blocks` (each an object), or was stored under other inputs
    than `inputs` (a key collision or a hand-edited entry)."""
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FlbenchError(f"{what} is unreadable ({e}); delete it to {redo}") from None
    ok = isinstance(entry, dict) and all(isinstance(entry.get(b), dict) for b in blocks)
    if not ok or entry.get("inputs") != json.loads(canonical_json(inputs)):
        raise FlbenchError(f"{what} does not match its key; delete it to {redo}")
    return entry


def load(root: Path, inputs: dict[str, Any], workdir: Path) -> dict[str, Any] | None:
    """Copy entry `inputs` into `workdir` (the cell's checkpoint directory) and return its `cell.json`, or None
    on a miss. An entry whose stored inputs differ from its key's is refused in one line."""
    entry = root / key_of(inputs)
    info = _checked_entry(entry / INFO, inputs, f"fine-tuning cache entry {entry}", "train again")
    if info is None:
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    for p in entry.iterdir():
        if p.name != INFO:
            shutil.copy2(p, workdir / p.name)
    return info


def store(root: Path, inputs: dict[str, Any], checkpoint: Path, info: dict[str, Any]) -> str:
    """Store the fine-tuned `checkpoint` directory and `info` under the key of `inputs`; returns the key. An entry
    already there (another cell stored the same fine-tuning) is kept."""
    key = key_of(inputs)
    entry = root / key
    if (entry / INFO).is_file():
        return key
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(checkpoint, tmp)
    (tmp / INFO).write_text(canonical_json(finite_or_null({**info, "inputs": inputs})), encoding="utf-8")
    try:
        os.replace(tmp, entry)
    except OSError:  # a concurrent cell renamed the same entry in first: keep it
        shutil.rmtree(tmp, ignore_errors=True)
        if not (entry / INFO).is_file():
            raise
    return key


def utility_key_inputs(cfg, finetune_inputs: dict[str, Any]) -> dict[str, Any]:
    """What the cell's utility evaluation reads (module docstring): its fine-tuning's key inputs and the task block
    of the config."""
    return normalize_numbers({"version": UTILITY_CACHE_VERSION, "finetune": finetune_inputs,
                              "task": cfg.resolved().get("task")})


def load_utility(root: Path, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The stored evaluation of `inputs` ({"task", "info"}), or None on a miss; a file that is unreadable or whose
    stored inputs differ from its key's is refused in one line."""
    path = root / f"{key_of(inputs)}.json"
    entry = _checked_entry(path, inputs, f"utility cache entry {path}", "evaluate again", ("task", "info"))
    if entry is None:
        return None
    return {"task": entry["task"], "info": entry["info"]}


def store_utility(root: Path, inputs: dict[str, Any], task: dict[str, Any], info: dict[str, Any]) -> str:
    """Store an evaluation under the key of `inputs` (temporary name, then rename); returns the key."""
    key = key_of(inputs)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{key}.{os.getpid()}.tmp"
    tmp.write_text(canonical_json(finite_or_null({"inputs": inputs, "task": task, "info": info})), encoding="utf-8")
    os.replace(tmp, root / f"{key}.json")
    return key
