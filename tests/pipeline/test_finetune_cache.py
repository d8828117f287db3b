"""Cells whose fine-tuning is the same share the fine-tuned client through the cache beside `--fit-cache`
(flbench.pipeline.finetune_cache): an adaptive-attacker cell loads its public-head twin's adapters instead of
training again and gets the same records; a cell whose attacks read the training traffic always trains; the key
follows what fine-tuning reads; a tampered entry is refused in one line."""
from __future__ import annotations

import json

import pytest

from attacks.fit_cache import FitCache
from flbench.core.errors import FlbenchError
from flbench.pipeline import finetune_cache as ftc
from flbench.pipeline.cell import run_cell
from flbench.pipeline.config import RunConfig, validate

BASE = {"model": "tiny-llama", "split": "1,1", "task": {"name": "sst2", "limit": 4},
        "finetune": {"steps": 2, "batch_size": 2, "max_length": 48}, "attacks": ["map-inversion"],
        "attack_params": {"map-inversion": {"top_k": 4, "expand": 1}}, "victims": {"limit": 2, "max_length": 8},
        "defense": {"name": "gaussian", "params": {"sigma": 0.5, "relative": True}}, "seed": 0}


def _strip(r: dict) -> dict:
    """A record without what legitimately differs between runs (times, dates, the cache's own block)."""
    out = json.loads(json.dumps(r))
    for k in ("timings", "date", "record_id", "config_hash", "config", "attack"):
        out.pop(k, None)
    out["finetune"].pop("cache", None)
    out["task"].pop("cache", None)
    return out


def test_twin_cells_share_one_fine_tuning_and_get_the_same_records(tmp_path):
    cache = FitCache(tmp_path / "fits")
    (plain,) = run_cell(validate(RunConfig, BASE), progress=False)  # no cache: no block
    assert "cache" not in plain["finetune"] and "cache" not in plain["task"]
    (first,) = run_cell(validate(RunConfig, BASE), progress=False, fit_cache=cache)
    assert first["finetune"]["cache"]["hit"] is False
    other_attacks = {**BASE, "attacks": ["embedding-nn"], "attack_params": {}}
    (twin,) = run_cell(validate(RunConfig, other_attacks), progress=False, fit_cache=cache)
    assert twin["finetune"]["cache"] == {"key": first["finetune"]["cache"]["key"], "hit": True}
    assert first["task"]["cache"]["hit"] is False  # the utility evaluation is shared too
    assert twin["task"]["cache"] == {"key": first["task"]["cache"]["key"], "hit": True}
    assert twin["defense"]["snr_utility_traffic"] == plain["defense"]["snr_utility_traffic"] is not None
    assert _strip(twin) == _strip(first) == _strip(plain)  # same utility, losses, defense block
    # the adaptive attacker's cell: the victim's fine-tuning is its twin's; its own surrogate is stored under its seed
    (adaptive,) = run_cell(validate(RunConfig, {**BASE, "attacker": {"head": "surrogate", "seed": 5}}),
                           progress=False, fit_cache=cache)
    assert adaptive["finetune"]["cache"]["hit"] is True and _strip(adaptive)["task"] == _strip(plain)["task"]
    assert len([p for p in (tmp_path / "fits" / "finetune").iterdir() if not p.name.startswith(".")]) == 2
    (again,) = run_cell(validate(RunConfig, {**BASE, "attacker": {"head": "surrogate", "seed": 5}}),
                        progress=False, fit_cache=cache)
    assert again["attack"]["metrics"] == adaptive["attack"]["metrics"]  # the cached surrogate attacks alike


def test_a_cell_that_reads_the_training_traffic_trains_and_stores(tmp_path):
    cache = FitCache(tmp_path / "fits")
    grad = {**BASE, "attacks": ["gradient-label"], "attack_params": {}}
    (a,) = run_cell(validate(RunConfig, grad), progress=False, fit_cache=cache)
    (b,) = run_cell(validate(RunConfig, grad), progress=False, fit_cache=cache)
    assert a["finetune"]["cache"]["hit"] is False and b["finetune"]["cache"]["hit"] is False  # traffic needed
    (c,) = run_cell(validate(RunConfig, BASE), progress=False, fit_cache=cache)
    assert c["finetune"]["cache"] == {"key": a["finetune"]["cache"]["key"], "hit": True}


def test_the_key_follows_what_fine_tuning_reads_and_only_that(tiny):
    def key(**change):
        return ftc.key_of(ftc.key_inputs(validate(RunConfig, {**BASE, **change}), tiny, {}))

    k = key()
    assert k == key(attacks=["embedding-nn"], attack_params={}) == key(victims={"limit": 5})
    assert k == key(task={"name": "sst2", "limit": 100}) == key(attacker={"head": "surrogate", "seed": 3})
    assert len({k, key(seed=1), key(split="2,2"), key(task={"name": "rte", "limit": 4}),
                key(defense={"name": "gaussian", "params": {"sigma": 0.6, "relative": True}}),
                key(finetune={"steps": 3, "batch_size": 2, "max_length": 48}), key(wire_dtype="bf16"),
                key(grad_defense={"name": "grad-dp", "params": {"clip": 0.01, "noise_multiplier": 1.0}})}) == 8
    assert k != ftc.key_of(ftc.key_inputs(validate(RunConfig, BASE), tiny, {"client_device": "cuda"}))


def _tamper_and_expect_refusal(entry, cache, edit, what: str) -> None:
    """Edit a stored entry's inputs (`edit(inputs)`), then corrupt it: the next cell is refused in one line, naming
    `what` cache, both times."""
    data = json.loads(entry.read_text())
    edit(data["inputs"])
    entry.write_text(json.dumps(data))
    for needle in (f"{what} cache entry .* does not match its key", f"{what} cache entry .* is unreadable"):
        with pytest.raises(FlbenchError, match=needle) as e:
            run_cell(validate(RunConfig, BASE), progress=False, fit_cache=cache)
        assert "\n" not in str(e.value)
        entry.write_text("[1, 2")


def test_a_tampered_entry_is_refused_in_one_line(tmp_path):
    cache = FitCache(tmp_path / "fits")
    (r,) = run_cell(validate(RunConfig, BASE), progress=False, fit_cache=cache)
    info = tmp_path / "fits" / "finetune" / r["finetune"]["cache"]["key"] / ftc.INFO
    _tamper_and_expect_refusal(info, cache, lambda inputs: inputs.update(seed=9), "fine-tuning")


def test_entry_names_are_the_shared_content_key_and_stay_stable():
    """Both caches name entries by `content_key` (sha256 of the canonical JSON, 32 hex digits): a value pinned
    here from hashlib by hand, so a change of spelling or length (which would orphan every stored entry) fails."""
    from attacks.fit_cache import FitCache
    from flbench.core.canonical import content_key

    inputs = {"b": ["é", 2.5], "a": 1}
    assert content_key(inputs) == "9122226d62770fa4dbdb320483804c6f"  # sha256(b'{"a":1,"b":["\xc3\xa9",2.5]}')
    assert ftc.key_of(inputs) == FitCache.key_of(inputs) == content_key(inputs)
    assert content_key({"a": 1, "b": ["é", 2.5]}) == content_key(inputs) != content_key({"a": 2, "b": ["é", 2.5]})


def test_the_utility_evaluation_is_shared_only_where_it_reads_the_same(tmp_path):
    """A twin cell takes its utility from the cache; a cell evaluating more examples (same fine-tuning) evaluates
    again and gets what an uncached run gets; a tampered entry is refused in one line."""
    cache = FitCache(tmp_path / "fits")
    (first,) = run_cell(validate(RunConfig, BASE), progress=False, fit_cache=cache)
    more = {**BASE, "task": {"name": "sst2", "limit": 6}}
    (wider,) = run_cell(validate(RunConfig, more), progress=False, fit_cache=cache)
    assert wider["finetune"]["cache"]["hit"] is True  # same fine-tuning ...
    assert wider["task"]["cache"]["hit"] is False and wider["task"]["n"] == 6 != first["task"]["n"]  # ... new eval
    (plain,) = run_cell(validate(RunConfig, more), progress=False)
    assert _strip(wider) == _strip(plain)
    bare = {**BASE, "attacks": [], "attack_params": {}, "victims": None}  # the record's SNR is the eval traffic's
    (a,) = run_cell(validate(RunConfig, bare), progress=False, fit_cache=cache)
    (b,) = run_cell(validate(RunConfig, bare), progress=False)
    assert a["task"]["cache"] == {**first["task"]["cache"], "hit": True}
    assert a["defense"]["snr"] == b["defense"]["snr"] is not None and a["wire"] == b["wire"] and _strip(a) == _strip(b)
    entry = tmp_path / "fits" / "utility" / f"{first['task']['cache']['key']}.json"
    _tamper_and_expect_refusal(entry, cache, lambda inputs: inputs["task"].update(limit=5), "utility")


@pytest.mark.parametrize("payload", ["[1, 2]", '{"inputs": {"seed": 1}}', '{"inputs": {"seed": 0}, "task": 3}'])
def test_entries_that_are_not_the_stored_shape_are_refused_in_one_line(tmp_path, payload):
    """Valid JSON of the wrong shape (not an object, other inputs, a block that is not an object) is refused by
    both loaders in one line, never returned as a hit or raised as a traceback."""
    inputs = {"seed": 0}
    util = tmp_path / "utility" / f"{ftc.key_of(inputs)}.json"
    util.parent.mkdir(parents=True)
    util.write_text(payload)
    ft = tmp_path / "finetune" / ftc.key_of(inputs) / ftc.INFO
    ft.parent.mkdir(parents=True)
    ft.write_text(payload)
    with pytest.raises(FlbenchError, match=r"^utility cache entry .* does not match its key; delete it") as e:
        ftc.load_utility(tmp_path / "utility", inputs)
    assert "\n" not in str(e.value)
    if payload.startswith("{") and '"task"' in payload:  # the fine-tuning entry has no task block to check
        assert ftc.load(tmp_path / "finetune", inputs, tmp_path / "work")["inputs"] == inputs
    else:
        with pytest.raises(FlbenchError, match=r"^fine-tuning cache entry .* does not match its key") as e:
            ftc.load(tmp_path / "finetune", inputs, tmp_path / "work")
        assert "\n" not in str(e.value)
    assert ftc.load_utility(tmp_path / "utility", {"seed": 2}) is None  # a miss stays a miss
