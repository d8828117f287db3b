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

def fsync_dir(directory: Path) -> None:
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


def host_tag() -> str:
    """This machine's name as a file-name field ([A-Za-z0-9-] only): who owns a temp file or scratch dir."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname() or "host")[:40] or "host"


def _tmp_name(final: str) -> str:
    return f".{final}.{host_tag()}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically: temp file in the same directory, fsync, `os.replace`, fsync of the dir.

    If the write fails after the caller's work is done (disk full, permissions changed, path replaced by a
    directory), the result is not lost: it is saved to a file in the system temp directory and the
    `FlbenchError` names it (one line, so the CLI prints it with exit status 2).
    """
    path = Path(path)
    tmp = path.parent / _tmp_name(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        kept = _keep_elsewhere(path, data)
        where = f"; the result is kept in {kept}" if kept else "; the result could not be saved anywhere else either"
        raise FlbenchError(f"could not write {path}: {e.strerror or e}{where}") from None
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write_bytes` for UTF-8 text with LF line ends."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _keep_elsewhere(path: Path, data: bytes) -> Path | None:
    """Save a result whose real destination failed; None if that fails too."""
    import tempfile

    try:
        fd, name = tempfile.mkstemp(prefix=f"flbench-{path.name}-", dir=tempfile.gettempdir())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return Path(name)
    except OSError:
        return None


def atomic_write_dir(path: str | os.PathLike, files: dict[str, bytes], *, overwrite: bool = False) -> Path:
    """Write a directory of files as one unit: all files into a fresh temp directory next to `path`, fsync,
    then swap it in (`path` renamed aside and deleted, so no file of an earlier run is left behind).

    An existing `path` must be empty unless `overwrite`. If the write fails (disk full, permissions), the
    files are kept in a directory in the system temp directory and the FlbenchError names it."""
    path = Path(path)
    staging = path.parent / _tmp_name(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_files(staging, files)
    except OSError as e:
        import shutil
        import tempfile

        shutil.rmtree(staging, ignore_errors=True)
        kept: Path | None = None
        try:
            kept = Path(tempfile.mkdtemp(prefix=f"flbench-{path.name}-"))
            _write_files(kept, files)
        except OSError:
            if kept is not None:
                shutil.rmtree(kept, ignore_errors=True)
            kept = None
        where = f"; the result is kept in {kept}" if kept else "; the result could not be saved anywhere else either"
        raise FlbenchError(f"could not write {path}: {e.strerror or e}{where}") from None
    aside = None
    try:
        if path.exists():
            if path.is_dir() and not overwrite and any(path.iterdir()):
                raise FlbenchError(f"{path}: exists and is not empty; the result is kept in {staging}")
            aside = path.parent / _tmp_name(path.name + ".old")
            os.replace(path, aside)
        os.replace(staging, path)
    except OSError as e:
        if aside is not None and not path.exists():
            try:
                os.replace(aside, path)
                aside = None
            except OSError:
                pass
        raise FlbenchError(f"could not write {path}: {e.strerror or e}; the result is kept in {staging}") from None
    fsync_dir(path.parent)
    if aside is not None and aside.is_dir():
        import shutil

        shutil.rmtree(aside, ignore_errors=True)
    elif aside is not None:
        aside.unlink(missing_ok=True)
    return path


def _write_files(directory: Path, files: dict[str, bytes]) -> None:
    directory.mkdir(exist_ok=True)
    for name, data in files.items():
        with open(directory / name, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    fsync_dir(directory)


def _probe_writable(directory: Path) -> str | None:
    """None if a file can be created in `directory` (created and removed again), else the reason."""
    probe = directory / _tmp_name("probe")
    try:
        with open(probe, "wb"):
            pass
        probe.unlink()
    except OSError as e:
        return e.strerror or str(e)
    return None


def check_output(path: str | os.PathLike, *, kind: str = "file", overwrite: bool = False,
                 option: str = "--out", existing_dir_ok: bool = False) -> Path:
    """Refuse an output that cannot be written, before any expensive work starts.

    kind="file": `path` must not be a directory; an existing file needs `overwrite`.
    kind="dir": `path` must not be a file; an existing non-empty directory needs `overwrite`, unless
    `existing_dir_ok` (a records directory that runs add to). In both cases the nearest existing ancestor must
    be a directory where a file can really be created (probed, so read-only mounts and root-owned paths are
    caught even when `os.access` would say yes). Raises FlbenchError naming the option and the value.
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"check_output: kind {kind!r}")
    path = Path(path)
    if str(path) in ("", "."):
        if kind == "file":
            raise FlbenchError(f"{option} {str(path)!r}: expected a file path")
    if path.exists():
        if kind == "file" and path.is_dir():
            raise FlbenchError(f"{option} {path}: is a directory; expected a file path")
        if kind == "dir" and not path.is_dir():
            raise FlbenchError(f"{option} {path}: exists and is not a directory; expected a directory")
        if kind == "file" and not overwrite:
            raise FlbenchError(f"{option} {path}: exists; pass --overwrite to replace it")
        if kind == "dir" and not existing_dir_ok and any(path.iterdir()) and not overwrite:
            raise FlbenchError(f"{option} {path}: exists and is not empty; pass --overwrite to replace its contents")
    ancestor = path if kind == "dir" and path.is_dir() else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise FlbenchError(f"{option} {path}: {ancestor} is not a directory")
    reason = _probe_writable(ancestor)
    if reason:
        raise FlbenchError(f"{option} {path}: cannot write in {ancestor} ({reason})")
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
    host, now = host_tag(), time.time()
    for p in directory.iterdir():
        if not (p.name.startswith(".") and p.name.endswith(TMP_SUFFIX)):
            continue
        parts = p.name[: -len(TMP_SUFFIX)].rsplit(".", 3)
        dead = False
        if len(parts) == 4 and parts[1] == host and parts[2].isdigit():
            dead = not pid_alive(int(parts[2]))
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


def pid_alive(pid: int) -> bool:
    """False only when no process `pid` exists on this host (a permission error means one does)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
