"""flbench.core: atomic writes that never leave half a file (and keep the result when the final write fails),
abandoned temp files, provenance, output checks before work."""
from __future__ import annotations

import os
import re

import pytest

from flbench.core import io, provenance
from flbench.core.errors import FlbenchError


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    target.write_text("old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", boom)
    with pytest.raises(FlbenchError, match="disk full; the result is kept in ") as err:
        io.atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]
    kept = str(err.value).rsplit("kept in ", 1)[1]
    assert open(kept).read() == "new"  # the result survives the failed write
    os.unlink(kept)


def test_clean_temp_removes_only_abandoned_files(tmp_path):
    host = io.host_tag()
    dead = tmp_path / f".a.json.{host}.999999999.abcd.tmp"
    live = tmp_path / f".b.json.{host}.{os.getpid()}.abcd.tmp"
    other_host = tmp_path / ".c.json.otherhost.1.abcd.tmp"
    for p in (dead, live, other_host):
        p.write_text("x")
    removed = io.clean_temp(tmp_path)
    assert removed == [dead] and live.exists() and other_host.exists()
    old = os.path.getmtime(other_host) - 7200
    os.utime(other_host, (old, old))
    assert io.clean_temp(tmp_path) == [other_host]


def test_provenance():
    p = provenance.provenance()
    assert set(p) == {"versions", "commit", "dirty", "date"}
    assert set(p["versions"]) == {"flbench", "torch", "transformers", "python"}
    assert p["date"].endswith("+00:00")
    assert p["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", p["commit"])
    assert isinstance(p["dirty"], bool)


def test_check_output_refuses_before_work(tmp_path):
    f = tmp_path / "f.csv"
    f.write_text("x")
    with pytest.raises(FlbenchError, match="exists; pass --overwrite"):
        io.check_output(f)
    assert io.check_output(f, overwrite=True) == f
    with pytest.raises(FlbenchError, match="is a directory"):
        io.check_output(tmp_path)
    with pytest.raises(FlbenchError, match="is not a directory"):
        io.check_output(f / "sub" / "x.csv")
    with pytest.raises(FlbenchError, match="not empty"):
        io.check_output(tmp_path, kind="dir")
    assert io.check_output(tmp_path, kind="dir", existing_dir_ok=True) == tmp_path
    with pytest.raises(FlbenchError, match="cannot write"):
        io.check_output("/proc/flbench-test/out.csv")
    assert io.check_output(tmp_path / "new" / "deeper" / "x.csv") == tmp_path / "new" / "deeper" / "x.csv"
    assert not (tmp_path / "new").exists()  # checking creates nothing
