"""An on-disk cache of attacker fits, so cells that differ only in what the fit does not read share one fit.

A learned attack's fit (e.g. learned-inversion's decoder, ≈ 15 min at its 1,200-step budget on this machine)
reads only public things: its parameters, the auxiliary texts, the public head the attacker runs, the law of
the client's h_A defense and the wire dtype (`Knowledge.fit_identity`). It does not read the victims, the
victim's fine-tuned adapters, the gradient-edge defense or the task. Sweep cells that differ only in those
(e.g. sweeps/defenses.yaml's `grad_defenses` axis, or a rerun after a change to fine-tuning) can therefore
reuse one fit. The key is the SHA-256 of the canonical JSON of all of it plus `FIT_CACHE_VERSION`; bump the
version whenever a change to flbench changes what a fit produces, so stale entries are never read.

Files: `<dir>/<key>.safetensors` (the fitted tensors; no pickle) and `<key>.json` (the key's inputs, the
attack's fit metadata and the original fit time). Entries are written to a temporary name and renamed, so a
crash leaves no half entry; concurrent sweeps writing the same key write the same values. While a fit runs, an
attack that checkpoints (the decoder attacks, attacks.decoders) keeps `<key>.partial.pt` there: a cell killed
mid-fit and rerun on the same key continues from its last checkpoint instead of from step 0, and ends with
the same entry an uninterrupted fit writes.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flbench.core.canonical import canonical_json, content_key, normalize_numbers
from flbench.core.errors import FlbenchError

if TYPE_CHECKING:
    from attacks.base import Attack, Knowledge

FIT_CACHE_VERSION = 1


def text_digest(texts: Sequence[str]) -> str:
    """SHA-256 of a list of texts (order and boundaries included)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


class FitCache:
    """A directory of fitted attack states (module docstring)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        if self.dir.exists() and not self.dir.is_dir():
            raise FlbenchError(f"--fit-cache {str(self.dir)!r}: exists and is not a directory; expected a directory")

    def key_inputs(self, attack: Attack, aux_texts: Sequence[str], knowledge: Knowledge) -> dict[str, Any]:
        return normalize_numbers({"version": FIT_CACHE_VERSION, "attack": attack.name,
                                  "params": attack.params(), "knowledge": knowledge.fit_identity(),
                                  "aux": {"n": len(aux_texts), "sha256": text_digest(aux_texts)}})

    @staticmethod
    def key_of(inputs: dict[str, Any]) -> str:
        """The entry name of a fit whose `key_inputs` are `inputs`."""
        return content_key(inputs)

    def partial_path(self, key: str) -> Path:
        """Where a running fit of entry `key` checkpoints itself (module docstring)."""
        return self.dir / f"{key}.partial.pt"

    def key(self, attack: Attack, aux_texts: Sequence[str], knowledge: Knowledge) -> str:
        return self.key_of(self.key_inputs(attack, aux_texts, knowledge))

    def load(self, attack: Attack, aux_texts: Sequence[str], knowledge: Knowledge,
             inputs: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Restore `attack`'s fit from the cache; returns the entry's metadata, or None on a miss. `inputs`:
        the fit's `key_inputs`, when the caller already computed them (they hash the aux texts)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        inputs = self.key_inputs(attack, aux_texts, knowledge) if inputs is None else inputs
        key = self.key_of(inputs)
        tensors_f, meta_f = self.dir / f"{key}.safetensors", self.dir / f"{key}.json"
        if not (tensors_f.is_file() and meta_f.is_file()):
            return None
        try:
            meta = json.loads(meta_f.read_text())
            tensors = load_file(str(tensors_f))
        except (OSError, ValueError, SafetensorError) as e:
            raise FlbenchError(f"fit cache entry {tensors_f} is unreadable ({e}); delete it to refit") from None
        if meta.get("inputs") != json.loads(canonical_json(inputs)):
            raise FlbenchError(f"fit cache entry {meta_f} does not match its key; delete it to refit")
        attack.load_fit_state(tensors, meta["state"], list(aux_texts), knowledge)
        return meta

    def store(self, attack: Attack, aux_texts: Sequence[str], knowledge: Knowledge, fit_seconds: float,
              inputs: dict[str, Any] | None = None) -> str | None:
        """Write `attack`'s fitted state (if it has one); returns the key, or None when nothing was stored.
        `inputs` as in `load`."""
        from safetensors.torch import save_file

        state = attack.fit_state()
        if state is None:
            return None
        tensors, meta = state
        inputs = self.key_inputs(attack, aux_texts, knowledge) if inputs is None else inputs
        key = self.key_of(inputs)
        self.dir.mkdir(parents=True, exist_ok=True)
        entry = {"inputs": inputs, "state": meta,
                 "fit_seconds": round(fit_seconds, 3), "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp = f".{key}.{os.getpid()}.tmp"
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(self.dir / f"{tmp}.safetensors"))
        (self.dir / f"{tmp}.json").write_text(canonical_json(entry))
        os.replace(self.dir / f"{tmp}.safetensors", self.dir / f"{key}.safetensors")
        os.replace(self.dir / f"{tmp}.json", self.dir / f"{key}.json")
        return key


def open_fit_cache(path: str | os.PathLike | None, option: str = "--fit-cache") -> FitCache | None:
    """The cache at `path` (checked writable before any work starts, as an output directory), or None."""
    if path is None:
        return None
    from flbench.core.io import check_output

    return FitCache(check_output(path, kind="dir", existing_dir_ok=True, option=option))


def fit_with_cache(attack: Attack, aux_texts: Sequence[str], knowledge: Knowledge,
                   cache: FitCache | None) -> dict[str, Any] | None:
    """`attack.fit(aux_texts, knowledge)`, through `cache` when the attack declares its fit cacheable.
    Returns what a record states about it ({"key", "hit", "fit_seconds" of the original fit}) or None when
    the cache was not used."""
    if cache is None or not attack.fit_cacheable:
        attack.fit(aux_texts, knowledge)
        return None
    attack.check(knowledge)
    inputs = cache.key_inputs(attack, aux_texts, knowledge)
    key = cache.key_of(inputs)
    attack._knowledge = knowledge
    meta = cache.load(attack, aux_texts, knowledge, inputs)
    if meta is not None:
        return {"key": key, "hit": True, "fit_seconds": meta.get("fit_seconds")}
    t0 = time.perf_counter()
    attack.fit_checkpoint = cache.partial_path(key)
    try:
        attack.fit(aux_texts, knowledge)
    finally:
        attack.fit_checkpoint = None
    log = getattr(attack, "fit_log", None) or {}
    seconds = time.perf_counter() - t0 + float(log.get("resumed_seconds") or 0.0)  # with earlier processes' share
    stored = cache.store(attack, aux_texts, knowledge, seconds, inputs)
    out = {"key": key, "hit": False, "fit_seconds": round(seconds, 3), "stored": stored is not None}
    if log.get("resumed_from"):
        out["resumed_from"] = log["resumed_from"]
    return out
