"""Resolve `--model` (registry name, local directory or Hugging Face id) to a loaded causal LM: fp32 on the
CPU by default, or cast to a compute dtype (`--dtype`) and moved to a device (`--device`) after loading (the
weights' identity, `weights_sha256`, is that of the stored weights whatever the dtype).

Only LLaMA-family layouts are accepted: `model.embed_tokens`, `model.layers`, `model.norm`,
`model.rotary_emb` and `lm_head` — the pieces the FL-LLaMA split cuts apart.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from flbench.core.errors import FlbenchError
from flbench.core.registry import Registry

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


@dataclass
class LoadedModel:
    name: str
    model: Any  # a *ForCausalLM in eval mode, in `dtype` on `device`
    tokenizer: Any
    source: str  # where the weights came from (cache dir, local dir, hub id, "random init")
    weights_sha256: str
    extra: dict = field(default_factory=dict)
    dtype: str = "fp32"  # compute dtype of `model` (fp32|bf16|fp16)
    device: str = "cpu"

    @property
    def context_length(self) -> int | None:
        """Tokens the model can attend over (config.max_position_embeddings), if it declares one: prompts,
        generated tokens and training sequences must fit in it."""
        n = getattr(self.model.config, "max_position_embeddings", None)
        return int(n) if n else None

    @property
    def identity(self) -> dict:
        return {"name": self.name, "source": self.source, "weights_sha256": self.weights_sha256}


@dataclass(frozen=True)
class ModelEntry:
    description: str
    load: Callable[[Path, bool], LoadedModel]


models: Registry[ModelEntry] = Registry("model")


def flbench_home() -> Path:
    return Path(os.environ.get("FLBENCH_HOME", Path.home() / ".cache" / "flbench")).expanduser()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def state_dict_sha256(model: torch.nn.Module) -> str:
    """Hash of the parameters (names, shapes and bytes), for models that have no file on disk."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Load weights without transformers' progress bars ("Loading weights") and info/warning logs: normal
    output is ours only (stdout for --json, our own progress on stderr). Restores the previous settings."""
    from transformers.utils import logging as hf_logging

    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def check_llama_family(model: Any, where: str) -> None:
    model_type = getattr(model.config, "model_type", None)
    inner = getattr(model, "model", None)
    missing = [
        a
        for a, obj in (
            ("model.embed_tokens", inner and getattr(inner, "embed_tokens", None)),
            ("model.layers", inner and getattr(inner, "layers", None)),
            ("model.norm", inner and getattr(inner, "norm", None)),
            ("model.rotary_emb", inner and getattr(inner, "rotary_emb", None)),
            ("lm_head", getattr(model, "lm_head", None)),
        )
        if obj is None
    ]
    if model_type not in SUPPORTED_MODEL_TYPES or missing:
        detail = f"model_type {model_type!r}" + (f", missing {', '.join(missing)}" if missing else "")
        raise FlbenchError(
            f"{where} is not a LLaMA-family causal LM ({detail}); "
            f"accepted model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )


def _load_local(path: Path) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not (path / "config.json").is_file():
        raise FlbenchError(f"model directory {str(path)!r} has no config.json; it is not a LLaMA-family causal LM")
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad model directory
        raise FlbenchError(f"model directory {str(path)!r}: unreadable config.json ({e.__class__.__name__})") from None
    if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        raise FlbenchError(
            f"model directory {str(path)!r} is not a LLaMA-family causal LM (model_type "
            f"{getattr(config, 'model_type', None)!r}); accepted model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001
        raise FlbenchError(f"model directory {str(path)!r} could not be loaded: {str(e).splitlines()[0]}") from None
    model.eval()
    check_llama_family(model, f"model directory {str(path)!r}")
    weights = sorted(path.glob("*.safetensors"))
    digest = hashlib.sha256(b"".join(sha256_file(w).encode() for w in weights)).hexdigest() if weights else state_dict_sha256(model)
    return LoadedModel(path.name, model, tokenizer, str(path), digest)


def _load_hub(model_id: str) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(model_id)
    except Exception as e:  # noqa: BLE001
        raise FlbenchError(
            f"model {model_id!r} is neither a registered model ({', '.join(models.names())}), nor a local "
            f"directory, nor loadable from the Hugging Face hub ({str(e).splitlines()[0][:160]})"
        ) from None
    model.eval()
    check_llama_family(model, f"model {model_id!r}")
    return LoadedModel(model_id, model, tokenizer, f"hf:{model_id}", state_dict_sha256(model))


def load_model(name_or_path: str, progress: bool = True, dtype: str = "fp32", device: str = "cpu") -> LoadedModel:
    """Registry name, then existing local directory, then Hugging Face id (`org/name`); then cast to `dtype`
    and moved to `device` (both checked first: a bad value fails before any loading)."""
    from splits.parts import check_device, check_dtype, place

    check_dtype(dtype)
    device = check_device(device)
    loaded = _load(name_or_path, progress)
    if (dtype, device) != ("fp32", "cpu"):
        place(loaded.model, device, dtype)
        loaded.dtype, loaded.device = dtype, device
    return loaded


def _load(name_or_path: str, progress: bool) -> LoadedModel:
    if name_or_path in models:
        return models.get(name_or_path).load(flbench_home(), progress)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FlbenchError(f"model path {name_or_path!r} is a file; give a model directory or one of: {', '.join(models.names())}")
        return _load_local(path)
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        return _load_hub(name_or_path)
    raise FlbenchError(
        f"unknown model {name_or_path!r}; known: {', '.join(models.names())} (or a local model directory, or a Hugging Face id)"
    )
