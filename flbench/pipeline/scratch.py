"""A cell's scratch directory, named so that one left behind by a killed run can be recognised and removed.

A cell writes its fine-tuned client (and the attacker's surrogate) to a temporary directory that is deleted when
the cell ends. SIGKILL (or a machine that loses power, or a session that ends) gives Python no chance to delete
it, and each stale directory holds tens of MB. The name records who owns it, with the same host and pid fields
as the records' atomic-write temp files (flbench.core.io): `flbench-cell-<config hash>.<host>.<pid>.<random>`.
Before a cell makes its own, `remove_stale` deletes the directories of this host whose process no longer exists.
It never touches one it cannot prove dead: another host's (a shared work directory on a cluster), a live or
unreadable process's (a reused pid keeps it until a later run), or one in the old unnamed layout.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from flbench.core.io import host_tag, pid_alive

PREFIX = "flbench-cell-"
NAME = re.compile(r"^flbench-cell-(?P<hash>[0-9a-f]+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[^.]+$")


def remove_stale(workdir: str | Path | None = None) -> list[Path]:
    """Delete this host's cell scratch directories under `workdir` (default: the system temp dir) whose owning
    process is gone; returns what was removed."""
    root = Path(workdir) if workdir is not None else Path(tempfile.gettempdir())
    host = host_tag()
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    removed = []
    for path in entries:
        m = NAME.match(path.name)
        if m is None or m["host"] != host or not path.is_dir() or pid_alive(int(m["pid"])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


def cell_scratch(config_hash: str, workdir: str | Path | None = None) -> tempfile.TemporaryDirectory:
    """The cell's scratch directory (a context manager, deleted on exit), after clearing dead runs' leftovers."""
    remove_stale(workdir)
    return tempfile.TemporaryDirectory(prefix=f"{PREFIX}{config_hash}.{host_tag()}.{os.getpid()}.", dir=workdir)
