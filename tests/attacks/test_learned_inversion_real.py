"""The issue's strength check on the real default model (a few minutes of fitting on 2 cores):
learned-inversion at --split 1,1 without noise recovers ≥ 0.9 token accuracy on private records,
through the same path as `flbench attack` (flbench.pipeline.attack). The default training (to a validation
plateau on held-out aux text) with its budget capped at 300 steps, so the test stays short."""
from __future__ import annotations

import pytest

from defenses import make_defense, make_generator
from flbench.data import load_corpus
from flbench.pipeline.attack import AttackConfig, evaluate_attack, fit_attack


@pytest.mark.real_model
def test_learned_inversion_recovers_private_records_at_split_1_1(smol):
    cfg = AttackConfig(model="smollm2-135m", split="1,1", attack="learned-inversion",
                       params={"steps": 300}, victims={"limit": 30, "aux_limit": 1000})
    fa = fit_attack(cfg, make_defense("none"), make_generator(seed=0), progress=False)
    log = fa.attack.fit_log
    assert log["val_texts"] > 0 and log["curve"][-1][0] == log["stopped_at"] <= 300
    res = evaluate_attack(fa, load_corpus("private-records", limit=30, seed=1))
    assert res["metrics"]["token_accuracy"]["mean"] >= 0.9, res["metrics"]["token_accuracy"]
    assert res["metrics"]["pii_recovery"]["mean"] >= 0.5
