"""run_sweep in-process: skip done cells, rerun unfinished ones, keep going after a failing cell, shards."""
from __future__ import annotations

import pytest
from fake_runner import fake_records
from pydantic import ValidationError

from flbench.experiments import records
from flbench.experiments.sweep import expand, parse_spec, run_sweep

SPEC = {"model": "m", "splits": ["1,1", "2,2"], "defenses": ["none", {"name": "gaussian", "sigma": [1, 2]}],
        "attacks": ["x", "y"], "tasks": ["t"], "centralized_reference": True}


def _cells():
    return expand(parse_spec(SPEC, check_names=False))


def test_failures_are_reported_and_do_not_stop_the_sweep(tmp_path, capsys):
    cells = _cells()
    bad = cells[2].hash
    calls = []

    def run_cell(cell):
        calls.append(cell.hash)
        with pytest.raises(ValidationError):  # the runner cannot change the sweep's cell
            cell.model = "mutated"
        if cell.hash == bad:
            raise RuntimeError("out of memory\nsecond line")
        return fake_records(cell)

    s = run_sweep(cells, tmp_path, run_cell, progress=False)
    assert not s.ok and s.ran == len(cells) - 1 and s.total == len(cells)
    assert [f["config_hash"] for f in s.failed] == [bad]
    assert s.failed[0]["error"] == "RuntimeError: out of memory second line"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cell {bad}" in err and "failed: RuntimeError" in err
    assert s.to_dict()["failed"][0]["config_hash"] == bad

    # resume: only the failed cell runs again
    calls.clear()
    s2 = run_sweep(cells, tmp_path, lambda c: fake_records(c), progress=False)
    assert s2.ok and s2.skipped == len(cells) - 1 and s2.ran == 1
    assert records.done_hashes(tmp_path) == {c.hash for c in cells}


def test_unfinished_cell_is_rerun_and_overwritten(tmp_path):
    cells = _cells()
    c = cells[1]
    h = c.hash
    first = fake_records(c)[0]
    records.write_record({**first, "wire": {"bytes_total": -1}}, tmp_path)  # killed before the 2nd record
    s = run_sweep(cells, tmp_path, fake_records, progress=False)
    assert s.ok and s.ran == len(cells)
    files = sorted(p.name for p in tmp_path.glob(f"{h}__*.json"))
    assert files == [f"{h}__x.json", f"{h}__y.json"]
    assert all(r["wire"]["bytes_total"] != -1 for r in records.read_records(tmp_path))


def test_records_that_do_not_match_the_cell_fail_the_cell(tmp_path):
    cells = _cells()[:2]
    s = run_sweep(cells, tmp_path, lambda c: fake_records(c)[:1] if c.attacks else fake_records(c),
                  progress=False)
    assert [f["config_hash"] for f in s.failed] == [cells[1].hash]
    assert "expected one each for ['x', 'y']" in s.failed[0]["error"]
    assert records.done_hashes(tmp_path) == {cells[0].hash}
    s = run_sweep(cells, tmp_path, lambda c: [{**r, "config": {**c.resolved(), "seed": 9}} for r in fake_records(c)],
                  progress=False, resume=False)
    assert len(s.failed) == 2 and "carries another config" in s.failed[0]["error"]


def test_no_resume_reruns_and_shards_cover_the_grid(tmp_path, capsys):
    cells = _cells()
    n = 0

    def run_cell(cell):
        nonlocal n
        n += 1
        return fake_records(cell)

    a = run_sweep(cells, tmp_path, run_cell, shard="1/2", progress=True)
    b = run_sweep(cells, tmp_path, run_cell, shard="2/2", progress=True)
    assert a.ran + b.ran == len(cells) == n and a.ok and b.ok
    assert "sweep" in capsys.readouterr().err  # tqdm progress on stderr
    again = run_sweep(cells, tmp_path, run_cell, resume=False, progress=False)
    assert again.ran == len(cells) and again.skipped == 0 and n == 2 * len(cells)


def test_committed_schema_1_cells_count_as_done_for_todays_resolved_cells():
    """Records written before configs were resolved (schema 1: the run records of sweeps/utility_finetuned.yaml
    committed at the time, kept under tests/fixtures) are the cells today's spec resolves to: a resumed sweep
    skips them instead of running them again beside the old records."""
    from pathlib import Path

    from flbench.experiments.sweep import finished, load_spec

    root = Path(__file__).resolve().parents[2]
    runs = root / "tests" / "fixtures" / "schema1_utility_runs"
    cells = expand(load_spec(root / "sweeps" / "utility_finetuned.yaml"))
    done = finished(runs)
    assert cells and {c.hash for c in cells} <= done
    assert not {c.hash for c in cells} & records.done_hashes(runs)  # new hashes
