"""A killed cell's scratch directory is removed by the next cell; a live, foreign or unnamed one never is."""

import os
import subprocess
import sys

from flbench.core.io import host_tag
from flbench.pipeline import scratch


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _make(root, name):
    d = root / name
    d.mkdir()
    (d / "client.safetensors").write_bytes(b"x" * 16)
    return d


def test_only_this_hosts_dead_cells_are_removed(tmp_path):
    host = host_tag()
    dead = _make(tmp_path, f"flbench-cell-abc123.{host}.{_dead_pid()}.q1w2e3")
    live = _make(tmp_path, f"flbench-cell-abc123.{host}.{os.getpid()}.r4t5y6")
    foreign = _make(tmp_path, f"flbench-cell-abc123.otherhost.{_dead_pid()}.u7i8o9")
    legacy = _make(tmp_path, "flbench-cell-abc123-p0a9s8")  # the unnamed layout: owner unknown
    other = _make(tmp_path, "not-flbench-1")

    removed = scratch.remove_stale(tmp_path)

    assert removed == [dead]
    assert not dead.exists()
    assert live.exists() and foreign.exists() and legacy.exists() and other.exists()


def test_cell_scratch_names_its_owner_and_clears_leftovers(tmp_path):
    stale = _make(tmp_path, f"flbench-cell-ff00.{host_tag()}.{_dead_pid()}.zzzzzz")
    with scratch.cell_scratch("deadbeef", tmp_path) as tmp:
        name = os.path.basename(tmp)
        m = scratch.NAME.match(name)
        assert m is not None, name
        assert (m["host"], int(m["pid"])) == (host_tag(), os.getpid())
        assert m["hash"] == "deadbeef"
        assert not stale.exists()
        # a second cell of this (live) process, e.g. a sweep's next cell, leaves the running one alone
        assert scratch.remove_stale(tmp_path) == []
        assert os.path.isdir(tmp)
    assert not os.path.exists(tmp)


def test_missing_workdir_is_not_an_error(tmp_path):
    assert scratch.remove_stale(tmp_path / "absent") == []
