"""What every registered attack says about itself (what it observes, its primary metric), validation without
a model, and the one form of "no defense" in the attacker's knowledge."""
from __future__ import annotations

import json

import pytest

from attacks import Knowledge, attacks, make_attack
from attacks.base import OBSERVABLES
from defenses import NoDefense, make_defense
from flbench.metrics.score import ATTACK_METRICS
from splits import SplitRuntime, SplitSpec


@pytest.mark.parametrize("name", attacks.names())
def test_attack_describes_itself(name):
    cls = attacks.get(name)
    assert cls.requires and cls.requires <= set(OBSERVABLES)
    assert cls.primary_metric in ATTACK_METRICS
    assert cls.summary() and "\n" not in cls.summary()
    a = make_attack(name, None)  # defaults are valid, and no model is needed to validate
    d = json.loads(json.dumps(a.describe()))
    assert d["requires"] == sorted(cls.requires) and d["primary_metric"] == cls.primary_metric
    assert d["params"] == a.params() and d["summary"] == cls.summary()


def test_knowledge_holds_no_defense_not_none(tiny):
    rt = SplitRuntime(tiny, SplitSpec(1, 1))  # nothing on the edge
    k = Knowledge.from_runtime(rt)
    assert isinstance(k.defense, NoDefense) and k.describe()["defense"]["family"] == "none"
    assert isinstance(Knowledge(tiny, SplitSpec(1, 1), None).defense, NoDefense)
    assert isinstance(k.fresh_defense(), NoDefense) and k.fresh_defense() is not k.defense
    g = make_defense("gaussian", sigma=0.5, relative=True)
    k = Knowledge.from_runtime(SplitRuntime(tiny, SplitSpec(1, 1), defense=g))
    fresh = k.fresh_defense()
    assert k.defense is g and fresh == g and fresh is not g
