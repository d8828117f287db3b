"""Task loaders read the real files (../shared/data), with a fixed, disjoint, deterministic train/eval carve."""
from __future__ import annotations

import json

import pytest

from flbench.data.paths import candidate_dirs
from flbench.core.errors import FlbenchError
from flbench.tasks import get_task, tasks
from flbench.tasks.metrics import macro_f1, multirc_em0_f1a

DATA = candidate_dirs()[0]
needs_data = pytest.mark.skipif(not (DATA / "superglue").is_dir(), reason=f"no real data at {DATA}")
SUPERGLUE_ROWS = {"boolq": 3270, "cb": 56, "copa": 100, "rte": 277, "wic": 638, "wsc": 104, "multirc": 83}


def test_registered_tasks():
    assert set(tasks.names()) >= {"boolq", "rte", "cb", "copa", "wic", "wsc", "multirc", "sst2"}
    for name, cls in tasks.items():
        assert (cls.__doc__ or "").strip(), name


@needs_data
@pytest.mark.parametrize("name", sorted(SUPERGLUE_ROWS))
def test_superglue_carve_is_fixed_disjoint_and_complete(name):
    t = get_task(name)
    tr, ev = t.load("train"), t.load("eval")
    assert [e.id for e in ev] == [e.id for e in t.load("eval")]  # deterministic
    assert not {e.id for e in tr} & {e.id for e in ev}  # disjoint
    for ex in ev[:20] + tr[:20]:
        assert 0 <= ex.label < len(t.choices(ex))
        assert t.prompt(ex).strip() and all(c.strip() for c in t.continuations(ex))
    if name == "multirc":  # carved by passage: no passage on both sides
        assert not {e.id.split("-")[0] for e in tr} & {e.id.split("-")[0] for e in ev}
        assert len(tr) + len(ev) == 4848
    else:
        assert len(tr) + len(ev) == SUPERGLUE_ROWS[name]
        assert len(ev) == -(-SUPERGLUE_ROWS[name] // 2)  # 50/50, eval gets the odd row


@needs_data
def test_sst2_uses_its_own_files():
    t = get_task("sst2")
    ev = t.load("eval")
    assert len(ev) == 872 and ev[0].fields["sentence"].startswith("it 's a charming")
    assert len(t.load("train", limit=5)) == 5


@needs_data
def test_limit_and_seed():
    t = get_task("rte")
    full = t.load("eval")
    assert [e.id for e in t.load("eval", limit=7)] == [e.id for e in full[:7]]
    shuffled = t.load("eval", seed=3)
    assert sorted(e.id for e in shuffled) == sorted(e.id for e in full) and shuffled != full
    with pytest.raises(FlbenchError, match="--limit 0"):
        t.load("eval", limit=0)


def test_missing_and_malformed_data(tmp_path):
    with pytest.raises(FlbenchError, match=r"superglue/boolq.val.jsonl.*passage, question, label"):
        get_task("boolq").load("eval", data_dir=tmp_path)
    (tmp_path / "superglue").mkdir()
    (tmp_path / "superglue" / "rte.val.jsonl").write_text(json.dumps({"premise": "x", "label": "entailment"}) + "\n")
    with pytest.raises(FlbenchError, match="line 1: expected a JSON object with fields premise, hypothesis, label"):
        get_task("rte").load("eval", data_dir=tmp_path)
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "dev.tsv").write_text("text\tlabel\nfine\t1\n")
    with pytest.raises(FlbenchError, match="sentence, label"):
        get_task("sst2").load("eval", data_dir=tmp_path)


def test_cb_macro_f1_by_hand():
    golds, preds = [0, 0, 1, 2], [0, 1, 1, 1]
    # class 0: tp1 fp0 fn1 → 2/3; class 1: tp1 fp2 fn0 → 2/4; class 2: tp0 → 0
    assert macro_f1(golds, preds, 3) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)


def test_multirc_official_metrics_by_hand():
    groups = ["q1", "q1", "q1", "q2", "q2"]
    golds = [1, 0, 1, 0, 1]
    preds = [1, 0, 1, 1, 1]
    m = multirc_em0_f1a(groups, golds, preds)
    assert m["em0"] == 0.5  # q1 all right, q2 one wrong
    assert m["f1a"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 0))  # tp 3, fp 1, fn 0
