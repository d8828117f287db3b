"""`--data-file`: plain text and JSONL, with clear errors for empty or malformed files."""
from __future__ import annotations

import json

import pytest

from flbench.data import PiiSpan, load_data_file
from flbench.core.errors import FlbenchError


def test_text_file_one_record_per_line(tmp_path):
    p = tmp_path / "victim.txt"
    p.write_text("first line, call 713-345-6687\n\n  second line  \nthird\n")
    recs = load_data_file(p)
    assert [r.text for r in recs] == ["first line, call 713-345-6687", "  second line  ", "third"]
    assert recs[0].pii == [PiiSpan("phone", "713-345-6687", 17, 29)]
    assert [r.text for r in load_data_file(p, limit=2)] == ["first line, call 713-345-6687", "  second line  "]


def test_jsonl_with_and_without_pii(tmp_path):
    p = tmp_path / "victim.jsonl"
    rows = [{"text": "Ann Lee has asthma", "pii": [{"kind": "name", "value": "Ann Lee", "start": 0, "end": 7}]},
            {"text": "mail ann@example.org", "other": 1}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recs = load_data_file(p)
    assert recs[0].pii == [PiiSpan("name", "Ann Lee", 0, 7)]
    assert [s.value for s in recs[1].pii] == ["ann@example.org"]  # detected when not given
    # detected as JSONL by content too
    q = tmp_path / "victim.data"
    q.write_text(json.dumps({"text": "hello"}) + "\n")
    assert load_data_file(q)[0].text == "hello"


@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_empty_file_is_an_error_naming_the_path(tmp_path, content):
    p = tmp_path / "empty.txt"
    p.write_text(content)
    with pytest.raises(FlbenchError, match="empty.txt.*empty"):
        load_data_file(p)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(FlbenchError, match="missing.txt.*does not exist"):
        load_data_file(tmp_path / "missing.txt")
    with pytest.raises(FlbenchError, match="is a directory"):
        load_data_file(tmp_path)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(FlbenchError, match="bin.txt.*UTF-8"):
        load_data_file(binary)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(FlbenchError, match="bad.jsonl' line 2 is not valid JSON"):
        load_data_file(bad)
    notext = tmp_path / "notext.jsonl"
    notext.write_text('{"body": "x"}\n')
    with pytest.raises(FlbenchError, match="no string 'text' field"):
        load_data_file(notext)
    badspan = tmp_path / "badspan.jsonl"
    badspan.write_text(json.dumps({"text": "Ann", "pii": [{"kind": "name", "value": "Bob", "start": 0, "end": 3}]}))
    with pytest.raises(FlbenchError, match="bad 'pii' list"):
        load_data_file(badspan)
