"""The on-disk cache of attacker fits (attacks.fit_cache): a cached fit inverts exactly as the fresh one did;
the key changes with everything the fit reads (parameters, aux texts, the h_A defense's law, the split, the
attacker's head) and not with what it does not read (the gradient-edge defense); entries are safetensors
and a tampered or mismatched entry is refused in one line; sweep cells reuse one fit."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from attacks import Knowledge, capture, make_attack
from attacks.fit_cache import FIT_CACHE_VERSION, FitCache, fit_with_cache
from defenses import make_defense, make_generator
from flbench.core.errors import FlbenchError
from flbench.data import load_corpus
from flbench.pipeline.cell import run_cell
from flbench.pipeline.config import RunConfig, validate
from splits import SplitRuntime, SplitSpec

FAST = {"batch_size": 8, "max_aux": 32, "max_length": 24, "lr": 3e-3, "steps": 12, "patience": 0}


@pytest.fixture(scope="module")
def aux():
    return [r.text for r in load_corpus("xsum", limit=32, seed=0)]


def _knowledge(tiny, sigma=0.5, split=(1, 1), grad=None):
    rt = SplitRuntime(tiny, SplitSpec(*split), defense=make_defense("gaussian", sigma=sigma, relative=True),
                      generator=make_generator(seed=3))
    k = Knowledge.from_runtime(rt)
    if grad is not None:
        k = replace(k, grad_defense=grad)
    return rt, k


@pytest.mark.parametrize("name,params", [("learned-inversion", {}), ("learned-inversion", {"decoder": "mlp"}),
                                         ("output-inversion", {"decoder": "mlp"})])
def test_a_cached_fit_inverts_exactly_like_the_fresh_fit(tiny, aux, tmp_path, name, params):
    rt, k = _knowledge(tiny)
    obs, _ = capture(rt, [r.text for r in load_corpus("private-records", limit=4, seed=1)])
    cache = FitCache(tmp_path / "fits")
    fresh = make_attack(name, k, **FAST, **params)
    first = fit_with_cache(fresh, aux, k, cache)
    assert first["hit"] is False and first["stored"] is True
    assert len(list((tmp_path / "fits").glob("*.safetensors"))) == 1
    again = make_attack(name, k, **FAST, **params)
    second = fit_with_cache(again, aux, k, cache)
    assert second == {"key": first["key"], "hit": True, "fit_seconds": first["fit_seconds"]}
    assert again.fit_log == json.loads(json.dumps(fresh.fit_log))
    assert again.invert(obs) == fresh.invert(obs)
    x = torch.randn(1, 5, tiny.model.config.hidden_size)
    logits = [d(x, torch.ones(1, 5)) for d in (fresh._decoder, again._decoder)]
    assert torch.equal(logits[0], logits[1])


def test_the_key_follows_what_the_fit_reads_and_only_that(tiny, aux, tmp_path):
    cache = FitCache(tmp_path)
    _, k = _knowledge(tiny)
    a = make_attack("learned-inversion", k, **FAST)
    base = cache.key(a, aux, k)
    assert cache.key_inputs(a, aux, k)["version"] == FIT_CACHE_VERSION
    # the gradient-edge defense is not read by the fit: same key
    _, kg = _knowledge(tiny, grad=make_defense("grad-dp", clip=0.01, noise_multiplier=1.0))
    assert cache.key(a, aux, kg) == base
    # everything the fit reads changes it
    changed = [
        cache.key(make_attack("learned-inversion", k, **{**FAST, "steps": 13}), aux, k),
        cache.key(make_attack("learned-inversion", k, **{**FAST, "seed": 1}), aux, k),
        cache.key(a, aux[:-1], k),
        cache.key(a, aux[:-1] + [aux[-1] + " "], k),
        cache.key(a, aux, _knowledge(tiny, sigma=0.6)[1]),
        cache.key(a, aux, replace(k, defense=make_defense("dx-privacy", eta=8.0))),
        cache.key(a, aux, _knowledge(tiny, split=(2, 1))[1]),
        cache.key(a, aux, replace(k, wire_dtype="bf16")),
    ]
    rt2, _ = _knowledge(tiny)
    head = rt2.clients[0].head
    assert cache.key(a, aux, replace(k, head=head)) != base  # a surrogate head: its weights enter the key
    with torch.no_grad():
        next(p for p in head.parameters()).add_(1e-3)
    changed.append(cache.key(a, aux, replace(k, head=head)))
    assert len({base, *changed}) == len(changed) + 1


def test_attacks_without_a_trained_fit_are_not_cached(tiny, aux, tmp_path):
    _, k = _knowledge(tiny)
    lens = make_attack("output-inversion", k)  # logit lens: nothing trained
    assert fit_with_cache(lens, aux, k, FitCache(tmp_path))["stored"] is False
    nn = make_attack("embedding-nn", k)
    assert fit_with_cache(nn, aux, k, FitCache(tmp_path)) is None  # not a cacheable attack: a plain fit
    assert not list(tmp_path.iterdir())


def test_a_tampered_or_mismatched_entry_is_refused(tiny, aux, tmp_path):
    _, k = _knowledge(tiny)
    cache = FitCache(tmp_path)
    res = fit_with_cache(make_attack("learned-inversion", k, **FAST), aux, k, cache)
    meta_f = tmp_path / f"{res['key']}.json"
    meta = json.loads(meta_f.read_text())
    meta["inputs"]["params"]["steps"] = 999
    meta_f.write_text(json.dumps(meta))
    with pytest.raises(FlbenchError, match="does not match its key"):
        fit_with_cache(make_attack("learned-inversion", k, **FAST), aux, k, cache)
    (tmp_path / f"{res['key']}.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(FlbenchError, match="unreadable"):
        fit_with_cache(make_attack("learned-inversion", k, **FAST), aux, k, cache)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FlbenchError, match="not a directory"):
        FitCache(tmp_path / "file")


def test_sweep_cells_differing_in_the_gradient_defense_share_one_fit(tmp_path):
    def cell(grad):
        return validate(RunConfig, {
            "model": "tiny-llama", "split": "1,1", "task": {"name": "sst2", "limit": 2},
            "defense": {"name": "gaussian", "params": {"sigma": 0.3}},
            "grad_defense": grad, "finetune": {"steps": 1, "batch_size": 2, "max_length": 48},
            "attacks": ["learned-inversion"], "attack_params": {"learned-inversion": FAST},
            "victims": {"limit": 2, "aux_limit": 16}, "seed": 0})

    cache = FitCache(tmp_path / "fits")
    (a,) = run_cell(cell({"name": "none", "params": {}}), progress=False, fit_cache=cache)
    (b,) = run_cell(cell({"name": "grad-dp", "params": {"clip": 0.01, "noise_multiplier": 1.0}}),
                    progress=False, fit_cache=cache)
    assert a["config_hash"] != b["config_hash"]
    assert a["attack"]["fit_cache"]["hit"] is False and b["attack"]["fit_cache"]["hit"] is True
    assert a["attack"]["fit_cache"]["key"] == b["attack"]["fit_cache"]["key"]
    (c,) = run_cell(cell({"name": "none", "params": {}}), progress=False)  # no cache: no block, same result
    assert "fit_cache" not in c["attack"] and c["attack"]["metrics"] == a["attack"]["metrics"]


def test_cli_fit_cache_must_be_a_directory(cli, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    code, _, err = cli("run", "--model", "tiny-llama", "--split", "1,1", "--attack", "learned-inversion",
                       "--fit-cache", str(f), "--out", str(tmp_path / "runs"))
    assert code == 2 and "--fit-cache" in err and "is a file" in err and "Traceback" not in err


def test_a_fit_killed_mid_run_resumes_from_its_partial_checkpoint(tiny, aux, tmp_path, monkeypatch):
    """A cell killed during a long fit loses at most `eval_every` steps: rerun on the same key, the fit continues
    from `<key>.partial.pt` and the entry it stores inverts exactly as an uninterrupted fit's."""
    import attacks.decoders as decoders

    params = {**FAST, "steps": 20, "eval_every": 5}
    rt, k = _knowledge(tiny)
    obs, _ = capture(rt, [r.text for r in load_corpus("private-records", limit=4, seed=1)])
    whole = make_attack("learned-inversion", k, **params)
    fit_with_cache(whole, aux, k, FitCache(tmp_path / "whole"))
    assert whole.fit_log["resumed_from"] == 0

    cache = FitCache(tmp_path / "fits")
    real, calls = decoders.sample_batch, [0]

    def dies_at_step_13(*a, **kw):
        calls[0] += 1
        if calls[0] == 13:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(decoders, "sample_batch", dies_at_step_13)
    killed = make_attack("learned-inversion", k, **params)
    with pytest.raises(KeyboardInterrupt):
        fit_with_cache(killed, aux, k, cache)
    key = cache.key(killed, aux, k)
    assert cache.partial_path(key).is_file() and not list(cache.dir.glob("*.safetensors"))
    assert killed.fit_checkpoint is None  # the path is set only while fitting
    monkeypatch.setattr(decoders, "sample_batch", real)
    again = make_attack("learned-inversion", k, **params)
    report = fit_with_cache(again, aux, k, cache)
    assert report["hit"] is False and report["stored"] is True and report["resumed_from"] == 10
    assert again.fit_log["resumed_from"] == 10 and again.fit_log["steps"] == 20
    assert report["fit_seconds"] >= again.fit_log["resumed_seconds"] > 0  # earlier processes' time counts
    assert not cache.partial_path(key).exists()
    assert again.invert(obs) == whole.invert(obs)
    for (n, p), (_, q) in zip(again._decoder.named_parameters(), whole._decoder.named_parameters()):
        assert torch.equal(p, q), n
