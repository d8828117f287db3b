"""Registry, auxiliary corpora, enron, data-dir resolution, and the limit/warning/error behaviour.

Most tests build a tiny data directory in tmp_path; the ones on the real copies in ../shared/data are
skipped when that directory is absent.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from flbench.data import (
    DATA_DIR_ENV_VAR,
    SmallCorpusWarning,
    aux_names,
    check_spans,
    datasets,
    find_pii,
    load_corpus,
    victim_names,
)
from flbench.data.public import chunk
from flbench.data.victims import truncate
from flbench.core.errors import FlbenchError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "enron_aeslc" / "dev.jsonl").is_file(),
                                  reason="no ../shared/data copy of the datasets")


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    (tmp_path / "enron_aeslc").mkdir()
    emails = [
        "Call me at 713-345-6687 or (713) 853-5620.  Thanks,",
        "Please e-mail joy.wagman@enron.com about the deal.",
        "No contact details here.",
    ]
    (tmp_path / "enron_aeslc" / "dev.jsonl").write_text("\n".join(json.dumps({"id": i, "email": e})
                                                                  for i, e in enumerate(emails)) + "\n")
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "train_part.tsv").write_text(
        "sentence\tlabel\na gripping , funny film \t1\nbad\t0\nthe plot never quite comes together \t0\n")
    (tmp_path / "xsum").mkdir()
    doc = "First sentence here.\nSecond sentence is a bit longer than the first one.\n" + "word " * 50
    (tmp_path / "xsum" / "test.jsonl").write_text(json.dumps({"document": doc, "summary": "s", "id": "1"}) + "\n")
    return tmp_path


def test_registry_roles():
    assert set(victim_names()) == {"private-records", "enron"}
    assert {"xsum", "sst2", "samsum", "dialogsum"} <= set(aux_names())
    assert not set(victim_names()) & set(aux_names())
    with pytest.raises(FlbenchError, match="unknown dataset 'nope'.*private-records"):
        load_corpus("nope")
    with pytest.raises(FlbenchError, match="no option colour.*max_chars"):
        load_corpus("enron", colour="red")
    for bad in (0, -3, 2.5):
        with pytest.raises(FlbenchError, match="limit"):
            load_corpus("private-records", limit=bad)


def test_find_pii_formats():
    text = ("Reach Joy at joy.wagman@enron.com, 713-345-6687, (713) 853-5620, (713)853-6895, 713/646-3490, "
            "713.961.2700, 1-800-535-7289 or 877 525 1607. Not phones: 10/30/2001, 12345678901234, 3-5678.")
    got = [(s.kind, s.value) for s in find_pii(text)]
    assert got == [("email", "joy.wagman@enron.com"), ("phone", "713-345-6687"), ("phone", "(713) 853-5620"),
                   ("phone", "(713)853-6895"), ("phone", "713/646-3490"), ("phone", "713.961.2700"),
                   ("phone", "1-800-535-7289"), ("phone", "877 525 1607")]
    assert find_pii("no pii at all.") == []


def test_enron_from_a_data_dir(tiny_dir):
    recs = load_corpus("enron", data_dir=tiny_dir, seed=0)
    assert len(recs) == 3
    by_text = {r.text: r for r in recs}
    r = by_text["Call me at 713-345-6687 or (713) 853-5620. Thanks,"]  # space runs collapsed
    assert [s.value for s in r.pii] == ["713-345-6687", "(713) 853-5620"]
    assert len(load_corpus("enron", data_dir=tiny_dir, require_pii=True)) == 2
    short = load_corpus("enron", data_dir=tiny_dir, max_chars=20)
    assert all(len(r.text) <= 20 for r in short)
    for r in short:
        check_spans(r)  # spans found after truncation, never half a phone number


def test_data_dir_from_env_and_missing_dir_error(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV_VAR, str(tiny_dir))
    assert len(load_corpus("enron")) == 3
    monkeypatch.setenv(DATA_DIR_ENV_VAR, str(tmp_path / "absent"))
    with pytest.raises(FlbenchError) as e:
        load_corpus("enron")
    msg = str(e.value)
    assert "enron_aeslc/dev.jsonl" in msg and DATA_DIR_ENV_VAR in msg and "--data-dir" in msg
    with pytest.raises(FlbenchError, match="xsum/test.jsonl"):
        load_corpus("xsum", data_dir=tmp_path / "absent")


def test_limit_beyond_corpus_warns_and_returns_all(tiny_dir):
    with pytest.warns(SmallCorpusWarning, match="2 records, fewer than the 10"):
        recs = load_corpus("sst2", limit=10, data_dir=tiny_dir)
    assert sorted(r.text for r in recs) == ["a gripping , funny film", "the plot never quite comes together"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_corpus("sst2", limit=1, data_dir=tiny_dir)) == 1


def test_aux_passages_are_short_and_pii_free(tiny_dir):
    recs = load_corpus("xsum", data_dir=tiny_dir, max_words=12)
    assert all(r.pii == [] and 0 < len(r.text.split()) <= 12 for r in recs)
    assert sum(len(r.text.split()) for r in recs) == 3 + 10 + 50


def test_chunk_keeps_every_word_in_order():
    units = ["a b c", "d e", "f g h i j k l", "m"]
    out = chunk(units, max_words=4)
    assert all(len(p.split()) <= 4 for p in out)
    assert " ".join(out).split() == ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m"]
    assert chunk(["x y", "", "z"], max_words=5, sep="\n") == ["x y\nz"]


def test_truncate_at_word_boundary():
    assert truncate("hello world again", 13) == "hello world"
    assert truncate("short", 50) == "short"
    assert truncate("abcdefghij", 4) == "abcd"
    assert truncate("anything", None) == "anything"


@needs_shared
def test_enron_real_data_has_emails_and_phones():
    recs = load_corpus("enron", limit=1000, seed=0, data_dir=SHARED, max_chars=None)
    assert len(recs) == 1000
    kinds = [s.kind for r in recs for s in r.pii]
    assert kinds.count("email") >= 10 and kinds.count("phone") >= 10
    for r in recs:
        check_spans(r)
    assert load_corpus("enron", limit=50, seed=0, data_dir=SHARED) != load_corpus("enron", limit=50, seed=1,
                                                                                  data_dir=SHARED)
    assert all(len(r.text) <= 300 for r in load_corpus("enron", limit=200, data_dir=SHARED))


@needs_shared
@pytest.mark.parametrize("name", ["xsum", "sst2", "samsum", "dialogsum"])
def test_real_aux_corpora(name):
    entry = datasets.get(name)
    assert not entry.is_victim
    recs = load_corpus(name, limit=200, seed=0, data_dir=SHARED)
    assert len(recs) == 200 and all(r.pii == [] and r.text.strip() for r in recs)
    assert max(len(r.text.split()) for r in recs) <= 32
    assert recs == load_corpus(name, limit=200, seed=0, data_dir=SHARED)
