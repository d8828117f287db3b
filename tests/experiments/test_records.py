"""Run records: canonical hashing, atomic writes, markers, readers, provenance."""
from __future__ import annotations

import json
import re

import pytest
from fake_runner import fake_records

from flbench.core.errors import FlbenchError
from flbench.experiments import records
from flbench.experiments.sweep import make_cell

CELL = make_cell("m", "1,1", {"name": "gaussian", "params": {"sigma": 1.0, "relative": True}},
                 {"name": "sst2", "limit": 10}, None, ["b-attack", "a-attack"], {}, {"data": "private-records"}, 0)


def test_canonical_json_and_hash():
    assert records.canonical_json({"b": 1, "a": [1.5, "é"]}) == '{"a":[1.5,"é"],"b":1}'
    assert records.canonical_json(0.1) == repr(0.1)
    h = records.config_hash(CELL)
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    with pytest.raises(FlbenchError, match="NaN or infinity"):
        records.config_hash({"x": float("nan")})


def test_write_read_and_markers(tmp_path):
    recs = fake_records(CELL)
    h = records.config_hash(CELL)
    assert not records.is_done(h, tmp_path)
    paths = records.write_cell(recs, tmp_path)
    assert sorted(p.name for p in paths) == [f"{h}__a-attack.json", f"{h}__b-attack.json"]
    assert records.is_done(h, tmp_path) and records.done_hashes(tmp_path) == {h}
    got = records.read_records(tmp_path)
    assert [r["record_id"] for r in got] == [f"{h}__a-attack", f"{h}__b-attack"]
    assert got[0]["config"] == CELL
    # a missing record makes the cell not done, even with its marker
    paths[0].unlink()
    assert not records.is_done(h, tmp_path) and records.done_hashes(tmp_path) == set()
    records.unmark(h, tmp_path)
    assert not records.marker_path(h, tmp_path).exists()


def test_readers_skip_temp_files_and_refuse_corrupt_ones(tmp_path):
    records.write_cell(fake_records(CELL), tmp_path)
    h = records.config_hash(CELL)
    (tmp_path / f".{h}__x.json.host.1.abcd.tmp").write_text('{"partial')
    (tmp_path / f".{h}.done.host.1.abcd.tmp").write_text("")
    assert len(records.read_records(tmp_path)) == 2 and records.done_hashes(tmp_path) == {h}
    (tmp_path / "0123456789abcdef__x.json").write_text('{"schema": 1, "config_ha')
    with pytest.raises(FlbenchError, match=r"corrupt record .*0123456789abcdef__x.json"):
        records.read_records(tmp_path)
    (tmp_path / "0123456789abcdef__x.json").write_text('{"schema": 7}')
    with pytest.raises(FlbenchError, match=r"schema 7 is not accepted; accepted: 1, 2"):
        records.read_records(tmp_path)
    assert records.read_records(tmp_path / "nope") == []


@pytest.mark.parametrize("content, needle", [
    ('{"schema": 1}', "record_id: missing"),
    ('[1, 2]', "a list, not a JSON object"),
    ('"text"', "a str, not a JSON object"),
    ('{"schema": true}', "schema True is not accepted"),
])
def test_a_record_of_the_wrong_shape_is_one_line_naming_the_file(cli, tmp_path, content, needle):
    records.write_cell(fake_records(CELL), tmp_path)
    bad = tmp_path / "0123456789abcdef__x.json"
    bad.write_text(content)
    with pytest.raises(FlbenchError, match=re.escape(str(bad))) as e:
        records.read_records(tmp_path)
    assert needle in str(e.value) and "\n" not in str(e.value)
    code, out, err = cli("leaderboard", "--records", str(tmp_path), "--stdout")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and str(bad) in err and needle in err


def test_a_record_with_bad_blocks_or_a_foreign_name_is_refused(tmp_path):
    r = {**fake_records(CELL)[0], "record_id": None}
    p = records.write_record(r, tmp_path)
    good = json.loads(p.read_text())
    for change, needle in [({"attack": {"name": "a-attack"}}, "attack.metrics: missing"),
                           ({"task": {"metrics": {}}}, "task.name: missing"),
                           ({"config_hash": "xyz"}, "config_hash: 'xyz'"),
                           ({"timings": None}, "timings: None")]:
        p.write_text(json.dumps({**good, **change}))
        with pytest.raises(FlbenchError, match=re.escape(needle)):
            records.read_records(tmp_path)
    (tmp_path / "fedcba9876543210__a-attack.json").write_text(json.dumps(good))  # copied under another name
    p.write_text(json.dumps(good))
    with pytest.raises(FlbenchError, match="does not match its file name"):
        records.read_records(tmp_path)


def test_committed_schema_1_records_are_still_read():
    from pathlib import Path

    runs = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "schema1_utility_runs"
    recs = records.read_records(runs)
    assert recs and {r["schema"] for r in recs} == {1}
    new = records.read_records(Path(__file__).resolve().parents[2] / "results" / "runs")
    assert new and {r["schema"] for r in new} == {2}  # today's committed records


def test_write_record_checks_hash_and_names(tmp_path):
    r = fake_records(CELL)[0]
    with pytest.raises(FlbenchError, match="does not match the hash of its config"):
        records.write_record({**r, "config_hash": "0" * 16}, tmp_path)
    with pytest.raises(FlbenchError, match="cannot be part of a file name"):
        records.write_record({**r, "attack": {**r["attack"], "name": "../evil"}}, tmp_path)
    with pytest.raises(FlbenchError, match="two records for attack"):
        records.write_cell([r, r], tmp_path)
    assert list(tmp_path.iterdir()) == []
    # an attack-less record is `<hash>__none.json`
    p = records.write_record({**r, "attack": None}, tmp_path)
    assert p.name.endswith("__none.json") and json.loads(p.read_text())["record_id"].endswith("__none")
