"""Model registry, loaders and the default model's cache (hash-checked, re-fetched when corrupted)."""
from __future__ import annotations

import json
import subprocess

import pytest
import torch

from flbench.core.errors import FlbenchError
from flbench.models import load_model, models
from flbench.models import smollm2


def test_registry_lists_default_and_tiny():
    assert {"smollm2-135m", "tiny-llama"} <= set(models.names())


def test_tiny_is_deterministic(tiny):
    again = load_model("tiny-llama")
    assert again.weights_sha256 == tiny.weights_sha256
    assert len(tiny.model.model.layers) == 4
    assert tiny.tokenizer.decode(tiny.tokenizer("héllo, wörld")["input_ids"]) == "héllo, wörld"


def test_unknown_model_names_the_known_ones():
    with pytest.raises(FlbenchError, match="unknown model 'nope'.*smollm2-135m.*tiny-llama"):
        load_model("nope")


def test_local_directory_roundtrip(tiny, tmp_path, capfd):
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    capfd.readouterr()
    loaded = load_model(str(tmp_path))
    out, err = capfd.readouterr()
    assert out == "" and "Loading weights" not in err and err == ""  # no transformers progress bars or logs
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(loaded.model(ids).logits, tiny.model(ids).logits, atol=1e-6)


def test_non_llama_directory_is_rejected(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(FlbenchError, match="not a LLaMA-family causal LM.*gpt2"):
        load_model(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FlbenchError, match="no config.json"):
        load_model(str(empty))


def _fake_cache(cache_dir, payload: bytes = b"weights"):
    cache_dir.mkdir(parents=True)
    (cache_dir / smollm2.WEIGHTS).write_bytes(payload)
    import hashlib

    (cache_dir / smollm2.MANIFEST).write_text(json.dumps({"weights_sha256": hashlib.sha256(payload).hexdigest()}))


def test_cache_hash_detects_corruption(tmp_path):
    cache = tmp_path / "models" / smollm2.NAME
    _fake_cache(cache)
    assert smollm2._cache_ok(cache)[0]
    (cache / smollm2.WEIGHTS).write_bytes(b"weightz")
    ok, why = smollm2._cache_ok(cache)
    assert not ok and "corrupted" in why


def test_corrupted_cache_is_fetched_again(tmp_path, monkeypatch):
    cache = tmp_path / "models" / smollm2.NAME
    _fake_cache(cache)
    (cache / smollm2.WEIGHTS).write_bytes(b"garbage")
    calls = []

    def fake_convert(cache_dir, progress):
        calls.append(cache_dir)
        raise FlbenchError("offline in this test")

    monkeypatch.setattr(smollm2, "convert", fake_convert)
    with pytest.raises(FlbenchError, match="offline in this test"):
        smollm2.load(tmp_path, progress=False)
    assert calls == [cache]


@pytest.mark.real_model
def test_default_model_loads_offline_after_first_fetch(smol, monkeypatch):
    """Second load: no pip, no hub (HF_HUB_OFFLINE), hash-checked cache only."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*a, **k):
        raise AssertionError("a cached load must not call pip")

    monkeypatch.setattr(subprocess, "run", no_network)
    again = load_model("smollm2-135m", progress=False)
    assert again.weights_sha256 == smol.weights_sha256
    cfg = again.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == (30, 576, 49152)
    assert sum(p.numel() for p in again.model.parameters()) == 134_515_008
