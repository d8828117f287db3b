"""The built-in synthetic victim corpus: seeded, short, with several kinds of exactly located PII."""
from __future__ import annotations

import itertools

import pytest

from flbench.data import Record, check_spans, datasets, load_corpus
from flbench.data.synthetic import DIAGNOSES, fill

KINDS = {"name", "email", "phone", "address", "id_number", "dob", "diagnosis"}


@pytest.fixture(scope="module")
def records() -> list[Record]:
    return load_corpus("private-records", limit=200, seed=0)


def test_deterministic_per_seed_and_different_across_seeds(records):
    assert load_corpus("private-records", limit=200, seed=0) == records
    other = load_corpus("private-records", limit=200, seed=1)
    assert sum(a.text != b.text for a, b in zip(records, other)) > 190
    # a smaller limit is a prefix of a larger one: the same seed names the same people
    assert load_corpus("private-records", limit=20, seed=0) == records[:20]


def test_spans_index_exactly_into_the_text(records):
    for r in records:
        check_spans(r)
        assert all(r.text[s.start:s.end] == s.value for s in r.pii)
        starts = sorted((s.start, s.end) for s in r.pii)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(starts)), "spans overlap"


def test_each_record_has_several_pii_kinds_and_all_kinds_occur(records):
    assert all(len({s.kind for s in r.pii}) >= 3 for r in records)
    assert {s.kind for r in records for s in r.pii} == KINDS
    assert len({r.text.split(maxsplit=3)[0] for r in records}) > 10  # varied templates
    diag = {s.value for r in records for s in r.pii if s.kind == "diagnosis"}
    assert diag <= set(DIAGNOSES) and len(diag) > 10


def test_records_are_short(records):
    words = [len(r.text.split()) for r in records]
    assert max(words) <= 30 and min(words) >= 6


def test_values_look_like_their_kind(records):
    import re

    for r in records:
        for s in r.pii:
            if s.kind == "email":
                assert re.fullmatch(r"[a-z._0-9]+@[a-z.]+\.[a-z]{2,}", s.value), s.value
            if s.kind == "phone":
                assert sum(c.isdigit() for c in s.value) == 10 and s.value.lstrip("(")[0] in "23456789"


def test_fill_records_offsets():
    rec = fill("Hi {name}, call {phone}.", {"name": "Ann Lee", "phone": "555-123-4567"})
    assert rec.text == "Hi Ann Lee, call 555-123-4567."
    assert [(s.kind, s.start, s.end) for s in rec.pii] == [("name", 3, 10), ("phone", 17, 29)]


def test_registered_as_victim_with_default_size():
    assert datasets.get("private-records").is_victim
    assert len(load_corpus("private-records")) == 100
    assert Record.from_dict(load_corpus("private-records", limit=1)[0].to_dict()) == load_corpus("private-records", limit=1)[0]
