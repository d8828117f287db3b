"""A sweep killed with SIGKILL (twice, once between two records of one cell) and resumed loses no finished
record, leaves no duplicate, and ends with the same record files and leaderboard as an uninterrupted run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_runner import make_runner

from flbench.experiments import records, sweep
from flbench.reporting import leaderboard

HERE = Path(__file__).resolve().parent
SPEC = """\
name: killtest
model: fake-model
splits: ["1,1", "2,2"]
defenses:
  - none
  - {name: gaussian, relative: true, sigma: [1, 2]}
attacks: [attack-b, attack-a]
tasks: [{name: task-x, limit: 10}]
centralized_reference: true
seed: 0
"""
CELL_DELAY, WRITE_DELAY = 0.1, 0.2


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if not records.is_temp(p.name)}


def _partial_cells(d: Path) -> set[str]:
    """Hashes with at least one record file but no .done marker."""
    done = records.done_hashes(d)
    return {p.name.split("__")[0] for p in d.glob("*__*.json") if not records.is_temp(p.name)} - done


def _start(spec: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(HERE / "fake_runner.py"), str(spec), str(out), str(CELL_DELAY),
                             str(WRITE_DELAY)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"sweep finished before it could be killed: {proc.communicate()}")
            if cond():
                break
            time.sleep(0.005)
        else:
            pytest.fail("condition for the kill never held")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode in (-signal.SIGKILL, 0)


def test_sigkill_and_resume_matches_uninterrupted_run(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    cells = sweep.expand(sweep.load_spec(spec, check_names=False))
    assert len(cells) == 7  # 2 splits x 3 defenses + 1 centralized reference
    n_records = 6 * 2 + 1

    # Reference: uninterrupted, in-process.
    ref = tmp_path / "ref"
    s = sweep.run_sweep(cells, ref, make_runner(0.0), progress=False)
    assert s.ok and s.ran == 7 and s.records == n_records

    out = tmp_path / "runs"
    # Kill 1: as soon as a cell's first record is on disk but its marker is not (mid-cell), after >= 1 cell.
    # On a loaded machine the writer may pass the window between the check and the kill: then try again.
    for _attempt in range(5):
        proc = _start(spec, out)
        _kill_when(proc, lambda: out.is_dir() and records.done_hashes(out) and _partial_cells(out))
        if _partial_cells(out):
            break
    finished1 = records.done_hashes(out)
    assert finished1 and _partial_cells(out), "the kill did not land between two records of a cell"
    assert len(finished1) < len(cells)
    kept = {n: b for n, b in _files(out).items() if n.split("__")[0].split(".")[0] in finished1}

    # Kill 2: after at least one more cell finished.
    proc = _start(spec, out)
    _kill_when(proc, lambda: len(records.done_hashes(out)) > len(finished1))
    finished2 = records.done_hashes(out)
    assert finished1 < finished2
    now = _files(out)
    for name, data in kept.items():  # finished records are never lost or rewritten
        assert now[name] == data

    # Resume to the end.
    proc = _start(spec, out)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()

    final = _files(out)
    assert final == _files(ref)  # same names (no duplicate, nothing lost) and same bytes
    assert len([n for n in final if n.endswith(".json")]) == n_records
    assert records.done_hashes(out) == {c.hash for c in cells}
    assert not [p.name for p in out.iterdir() if p.name.endswith(records.TMP_SUFFIX)]  # killed writers' temps cleaned
    a = leaderboard.to_csv(leaderboard.build(records.read_records(out)))
    b = leaderboard.to_csv(leaderboard.build(records.read_records(ref)))
    assert a == b and a.count("\n") == n_records + 1

    # A resumed run with nothing left to do runs nothing.
    s = sweep.run_sweep(cells, out, make_runner(0.0), progress=False)
    assert s.skipped == 7 and s.ran == 0
