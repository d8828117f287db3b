"""The adaptive attacker (`attacker: {head: surrogate}`): it fine-tunes its own copy of the client with the cell's
public recipe and its own seed, and every attack that runs the head runs that copy. Only a surrogate is part of
a cell's identity; the leaderboard merges it into its cell's worst case under its own name."""
from __future__ import annotations

import json

import pytest

from flbench.core.errors import FlbenchError
from flbench.pipeline.cell import run_cell
from flbench.pipeline.config import RunConfig, validate

BASE = {"model": "tiny-llama", "split": "1,1", "task": {"name": "sst2", "limit": 2},
        "finetune": {"steps": 1, "batch_size": 2, "max_length": 48}, "attacks": ["map-inversion"],
        "attack_params": {"map-inversion": {"top_k": 4, "expand": 1}}, "victims": {"limit": 2, "max_length": 8},
        "defense": {"name": "gaussian", "params": {"sigma": 0.5, "relative": True}}, "seed": 0}


def test_public_head_is_the_default_and_not_in_the_identity():
    plain = validate(RunConfig, BASE)
    public = validate(RunConfig, {**BASE, "attacker": {"head": "public"}})
    assert plain.hash == public.hash and "attacker" not in plain.resolved()
    surrogate = validate(RunConfig, {**BASE, "attacker": {"head": "surrogate"}})
    assert surrogate.hash != plain.hash
    assert surrogate.resolved()["attacker"] == {"head": "surrogate", "seed": 1, "task": None}


@pytest.mark.parametrize("change,needle", [
    ({"attacker": {"head": "surrogate", "seed": 0}}, "seed 0 is the client's"),
    ({"attacker": {"head": "public", "seed": 3}}, "give head: surrogate"),
    ({"attacker": {"head": "surrogate"}, "finetune": None}, "copy of a fine-tuned client"),
    ({"attacker": {"head": "surrogate", "task": "nope"}}, "nope"),
    ({"attacker": {"head": "oracle"}}, "oracle"),
])
def test_bad_attacker_configs_are_one_line_errors(change, needle):
    with pytest.raises(FlbenchError, match=needle) as e:
        validate(RunConfig, {**BASE, **change})
    assert "\n" not in str(e.value)


def test_surrogate_config_is_the_recipe_with_the_attackers_seed_and_task():
    cfg = validate(RunConfig, {**BASE, "attacker": {"head": "surrogate", "seed": 7, "task": "rte"}})
    s = cfg.surrogate_config()
    assert s.seed == 7 and s.task.name == "rte" and s.attacks == () and s.attacker.head == "public"
    assert s.finetune == cfg.finetune and s.defense == cfg.defense and s.split == cfg.split


def test_a_surrogate_cell_trains_the_attackers_copy_and_attacks_with_it(monkeypatch):
    import flbench.pipeline.attack as attack_mod

    seen = []
    real = attack_mod.fit_attack

    def spy(*a, **kw):
        seen.append(kw.get("attacker_checkpoint"))
        return real(*a, **kw)

    monkeypatch.setattr(attack_mod, "fit_attack", spy)
    seen_runs = []  # the surrogate's training summary, read while its checkpoint exists (a temp dir of the cell)
    real_victim_runtime = attack_mod.victim_runtime

    def spy_rt(cfg, loaded, defense, generator, checkpoint=None, devices=None):
        if defense is None and checkpoint is not None:  # fit_attack building the attacker's own head
            seen_runs.append(json.loads((checkpoint / "run.json").read_text()))
        return real_victim_runtime(cfg, loaded, defense, generator, checkpoint, devices)

    monkeypatch.setattr(attack_mod, "victim_runtime", spy_rt)
    cfg = validate(RunConfig, {**BASE, "attacker": {"head": "surrogate", "seed": 5}})
    (r,) = run_cell(cfg, progress=False)
    assert len(seen) == 1 and seen[0] is not None
    assert "surrogate_train_s" in r["timings"] and r["config"]["attacker"]["seed"] == 5
    assert seen_runs and seen_runs[0]["train"]["seed"] == 5  # the attacker's copy, with its own seed
    assert seen_runs[0]["train"]["steps"] == 1 and seen_runs[0]["defense"]["name"] == "gaussian"  # the recipe
    assert 0.0 <= r["attack"]["metrics"]["token_accuracy"]["mean"] <= 1.0

