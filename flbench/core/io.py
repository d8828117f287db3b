"""Atomic file output: every file flbench writes goes through here (temp file in the same directory, flush,
fsync, `os.replace`, fsync of the directory), so an interrupted or failed write never leaves half a file."""
from __future__ import annotations

import os
import re
import secrets
import socket
import time
from pathlib import Path

from flbench.core.errors import FlbenchError

TMP_SUFFIX = ".tmp"

# ----------------------------------------------------------------------------------------- atomic I/O

def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname() or "host")[:40] or "host"


def _tmp_name(final: str) -> str:
    return f".{final}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8, LF) to `path` atomically: temp file in the same dir, fsync, os.replace, fsync dir."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / _tmp_name(path.name)
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def is_temp(name: str) -> bool:
    return name.startswith(".") or name.endswith(TMP_SUFFIX)


def clean_temp(directory: str | os.PathLike, older_than_s: float = 3600.0) -> list[Path]:
    """Remove abandoned temp files: those of a dead process on this host, or any older than `older_than_s`.

    Temp files of live writers (other shards sharing the directory) are left alone.
    """
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    host, now = _host(), time.time()
    for p in directory.iterdir():
        if not (p.name.startswith(".") and p.name.endswith(TMP_SUFFIX)):
            continue
        parts = p.name[: -len(TMP_SUFFIX)].rsplit(".", 3)
        dead = False
        if len(parts) == 4 and parts[1] == host and parts[2].isdigit():
            dead = not _pid_alive(int(parts[2]))
        try:
            old = now - p.stat().st_mtime > older_than_s
        except OSError:
            continue
        if dead or old:
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
