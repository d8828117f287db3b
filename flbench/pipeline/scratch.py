"""A cell's scratch directory, named so that one left behind by a killed run can be recognised and removed.

A cell writes its fine-tuned client (and the attacker's surrogate) to a temporary directory that is deleted when
the cell ends. SIGKILL (or a machine that loses power, or a session that ends) gives Python no chance to delete
it, and each stale directory holds tens of MB. The name records who owns it:
`flbench-cell-<config hash>-<host>-<pid>-<random>`. Before a cell makes its own, `remove_stale` deletes the
directories of the same host whose process no longer exists. It never touches a directory it cannot prove dead:
another host's (a shared work directory on a cluster), a live or unreadable process's (the pid may have been
reused: the directory then waits for a later run), or the old unnamed layout.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

PREFIX = "flbench-cell-"
_NAME = re.compile(r"^flbench-cell-[0-9a-f]+-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-[^-]+$")


def _host() -> str:
    """This machine's name in a form safe inside a file name (no '-' so the fields stay separable)."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    """True unless the process certainly does not exist (a permission error means it exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def remove_stale(workdir: str | Path | None = None) -> list[Path]:
    """Delete this host's cell scratch directories under `workdir` (default: the system temp dir) whose owning
    process is gone; returns what was removed."""
    root = Path(workdir) if workdir is not None else Path(tempfile.gettempdir())
    removed = []
    host = _host()
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for path in entries:
        m = _NAME.match(path.name)
        if m is None or m["host"] != host or not path.is_dir() or _alive(int(m["pid"])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


def cell_scratch(config_hash: str, workdir: str | Path | None = None) -> tempfile.TemporaryDirectory:
    """The cell's scratch directory (a context manager, deleted on exit), after clearing dead runs' leftovers."""
    remove_stale(workdir)
    return tempfile.TemporaryDirectory(prefix=f"{PREFIX}{config_hash}-{_host()}-{os.getpid()}-", dir=workdir)
