"""Utility uncertainty and baselines: per-example scores that average to the reported metrics, bootstrap CIs
over examples (corpus metrics recomputed on resamples; MultiRC by question), and chance / majority / lead
baselines beside every task, checked by hand."""
from __future__ import annotations

import random

import pytest

from flbench.core.errors import FlbenchError
from flbench.metrics import bootstrap_ci
from flbench.pipeline.utility import baselines_text, summary_line, utility_ci, with_ci
from flbench.tasks import get_task, tasks
from flbench.tasks.base import Example

CHOICE = [n for n, t in tasks.items() if t.kind == "choice"]
GENERATIVE = [n for n, t in tasks.items() if t.kind == "generate" and n != "quac"]  # quac: fetched from PyPI


def _load(name: str, limit: int):
    try:
        return get_task(name).load("eval", limit=limit)
    except FlbenchError as e:  # no local data on this machine
        pytest.skip(str(e))


@pytest.mark.parametrize("name", CHOICE + GENERATIVE)
def test_example_scores_average_to_the_metrics(name):
    task = get_task(name)
    examples = _load(name, 40)
    rng = random.Random(0)
    if task.kind == "choice":
        preds = [rng.randrange(len(task.choices(e))) for e in examples]
    else:  # some right answers, some wrong
        preds = [task.references(e)[0] if rng.random() < 0.5 else "no idea" for e in examples]
    point = task.score(examples, preds)
    per = task.example_scores(examples, preds)
    assert set(per) <= set(point) and set(point) == set(task.metrics)
    for m, values in per.items():
        assert len(values) == len(examples)
        assert sum(values) / len(values) == pytest.approx(point[m])
    ci = utility_ci(task, examples, preds, seed=3)
    assert list(ci) == list(point)
    for m, c in ci.items():
        assert c["mean"] == pytest.approx(point[m]) and c["ci_low"] <= c["ci_high"]
        if m in per:  # a mean over examples: the plain bootstrap of the per-example values
            ref = bootstrap_ci(per[m], seed=3)
            assert (c["ci_low"], c["ci_high"], c["n"]) == (ref["ci_low"], ref["ci_high"], len(examples))
    assert utility_ci(task, examples, preds, seed=3) == ci  # seeded


def test_corpus_metrics_are_recomputed_on_resamples():
    cb = get_task("cb")
    examples = _load("cb", None)
    preds = [random.Random(1).randrange(3) for _ in examples]
    ci = utility_ci(cb, examples, preds)
    assert "macro_f1" not in cb.example_scores(examples, preds)
    assert ci["macro_f1"]["mean"] == pytest.approx(cb.score(examples, preds)["macro_f1"])
    assert ci["macro_f1"]["n"] == len(examples) and ci["macro_f1"]["ci_low"] < ci["macro_f1"]["ci_high"]


def test_multirc_resamples_whole_questions():
    mrc = get_task("multirc")
    examples = _load("multirc", 300)
    preds = [e.label if i % 3 else 1 - e.label for i, e in enumerate(examples)]
    ci = utility_ci(mrc, examples, preds, seed=0)
    n_questions = len({e.group for e in examples})
    assert ci["f1a"]["n"] == ci["em0"]["n"] == n_questions < len(examples)
    point = mrc.score(examples, preds)
    assert ci["em0"]["mean"] == pytest.approx(point["em0"]) and ci["f1a"]["mean"] == pytest.approx(point["f1a"])
    assert 0 <= ci["em0"]["ci_low"] < ci["em0"]["ci_high"] <= 1


# ------------------------------------------------------------------------------------ baselines by hand

def _binary(labels: list[int]) -> list[Example]:
    return [Example(id=str(i), fields={"sentence": f"s{i}"}, label=y) for i, y in enumerate(labels)]


def test_choice_baselines_by_hand():
    sst2 = get_task("sst2")
    b = sst2.baselines(_binary([1, 1, 1, 0]))
    assert b["chance"]["metrics"] == {"accuracy": 0.5}
    assert b["majority"]["metrics"] == {"accuracy": 0.75} and "'positive'" in b["majority"]["how"]
    assert sst2.baselines(_binary([0, 1]))["majority"]["metrics"] == {"accuracy": 0.5}  # tie: the first choice
    assert sst2.static_chance() == {"accuracy": 0.5} and get_task("cb").static_chance() == {"accuracy": 1 / 3}
    assert get_task("multirc").static_chance() == {} and get_task("coqa").static_chance() == {}
    cb = get_task("cb")
    ex = [Example(id=str(i), fields={"premise": "p", "hypothesis": "h"}, label=y) for i, y in enumerate([0, 0, 1, 2])]
    b = cb.baselines(ex)
    assert b["chance"]["metrics"]["accuracy"] == pytest.approx(1 / 3)  # exact expectation
    # majority "True" (entailment) for all: accuracy 2/4; F1 of class 0 = 2·2/(2·2 + 2 + 0) = 2/3, others 0
    assert b["majority"]["metrics"]["accuracy"] == 0.5
    assert b["majority"]["metrics"]["macro_f1"] == pytest.approx((2 / 3) / 3)
    assert 0 < b["chance"]["metrics"]["macro_f1"] < 1 and "200 seeded draws" in b["chance"]["how"]


def test_generative_baselines_by_hand():
    samsum = get_task("samsum")
    ex = [Example(id="1", fields={"text": "Ann: hi\nBob: hello there\nAnn: lunch?\nBob: sure"},
                  references=("Ann and Bob will have lunch.",))]
    b = samsum.baselines(ex)
    assert b["chance"]["metrics"] is None and "no finite answer set" in b["chance"]["how"]
    assert samsum.lead(ex[0].fields["text"]) == "Ann: hi Bob: hello there Ann: lunch?"
    assert b["lead"]["metrics"] == samsum.score_texts(ex, ["Ann: hi Bob: hello there Ann: lunch?"])
    xsum = get_task("xsum")
    assert xsum.lead("First sentence here. Second one!  Third?") == "First sentence here."
    coqa = get_task("coqa")
    turns = [Example(id=str(i), fields={}, references=(r,)) for i, r in enumerate(["Yes.", "yes", "the dog", "no"])]
    b = coqa.baselines(turns)
    assert "'yes'" in b["majority"]["how"] and "2 of 4" in b["majority"]["how"]
    assert b["majority"]["metrics"] == {"f1": 0.5, "em": 0.5}


def test_eval_output_helpers():
    assert with_ci(0.5, {"ci_low": 0.4, "ci_high": 0.6}) == "0.5000 [0.4000, 0.6000]"
    assert with_ci(0.5, None) == "0.5000" and with_ci(None, None) == "–"
    base = {"chance": {"metrics": {"accuracy": 0.5}, "how": ""}, "gen": {"metrics": None, "how": ""}}
    assert baselines_text(base, "accuracy") == "chance 0.500"
    o = {"task": "sst2", "mode": "split", "split": "1,1", "n": 4, "metrics": {"accuracy": 0.75}, "primary": "accuracy",
         "ci": {"accuracy": {"mean": 0.75, "ci_low": 0.25, "ci_high": 1.0, "n": 4}}, "baselines": base,
         "seconds": 0.1, "wire": {"bytes_total": 10, "messages": 2}}
    line = summary_line(o)
    assert "n=4): accuracy 0.7500 [0.2500, 1.0000] (95% CI; accuracy baselines: chance 0.500)" in line
