"""Run records: one JSON file per (cell, attack), written atomically, plus a `.done` marker per cell.

Layout of a records directory (e.g. `results/runs/`):

    <config_hash>__<attack>.json     one record per attack of a cell (`<config_hash>__none.json` when the
                                     cell runs no attack, e.g. the centralized reference)
    <config_hash>.done               written last, after all of the cell's records: the cell is finished
    .<name>.<host>.<pid>.<rand>.tmp  a write in progress (or abandoned by a killed process); never read

Every file is written to a temporary file in the same directory, flushed and fsync'ed, renamed over the
final name with `os.replace` (atomic on POSIX), and the directory is fsync'ed. A killed writer leaves at
worst a temp file, never a partial record. A cell killed between two of its records has no marker, so a
resumed sweep runs it again and overwrites the same file names (no duplicates).

Record schema (version 1), filled by the cell runner:
    {"schema": 1, "record_id": "<config_hash>__<attack>", "config_hash", "config", "seeds", "versions",
     "commit", "dirty", "date", "model", "split", "defense", "finetune", "task", "attack", "wire", "timings"}
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from flbench.errors import FlbenchError

SCHEMA = 1
RECORD_SUFFIX = ".json"
MARKER_SUFFIX = ".done"
TMP_SUFFIX = ".tmp"
NO_ATTACK = "none"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HASH_RE = re.compile(r"^[0-9a-f]{16}$")


# --------------------------------------------------------------------------------------------- hashing

def canonical_json(obj: Any) -> str:
    """One canonical text for a JSON-able object: sorted keys, no whitespace, UTF-8 kept, floats as repr.

    NaN and ±inf are refused (they have no JSON spelling and would make hashes ambiguous).
    """
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as e:
        raise FlbenchError(f"cannot hash a config holding NaN or infinity ({e}); use null instead") from None
    except TypeError as e:
        raise FlbenchError(f"config is not plain JSON data: {e}") from None


def normalize_numbers(obj: Any) -> Any:
    """Recursively turn integral floats into ints (1.0 -> 1) so that 1 and 1.0 hash the same.

    Booleans stay booleans; tuples become lists; other values are returned unchanged.
    """
    if isinstance(obj, bool):
        return obj
    if isinstance(obj, float) and math.isfinite(obj) and obj.is_integer() and abs(obj) < 2**53:
        return int(obj)
    if isinstance(obj, dict):
        return {str(k): normalize_numbers(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [normalize_numbers(v) for v in obj]
    return obj


def config_hash(config: dict) -> str:
    """sha256 of the canonical JSON of the (number-normalised) config, first 16 hex characters."""
    return hashlib.sha256(canonical_json(normalize_numbers(config)).encode("utf-8")).hexdigest()[:16]


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


# -------------------------------------------------------------------------------------------- records

def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise FlbenchError(f"{kind} {value!r} cannot be part of a file name; accepted: letters, digits, '.', '_', '-'")
    return value


def _check_hash(value: Any) -> str:
    if not isinstance(value, str) or not _HASH_RE.match(value):
        raise FlbenchError(f"config_hash {value!r} is not accepted; expected 16 lowercase hex characters")
    return value


def record_attack(record: dict) -> str:
    """The attack name of a record, or 'none' when the record has no attack."""
    attack = record.get("attack")
    if attack is None:
        return NO_ATTACK
    name = attack.get("name") if isinstance(attack, dict) else attack
    return _check_name("attack name", name)


def record_filename(cfg_hash: str, attack: str | None) -> str:
    return f"{_check_hash(cfg_hash)}__{_check_name('attack name', attack or NO_ATTACK)}{RECORD_SUFFIX}"


def write_record(record: dict, out_dir: str | os.PathLike) -> Path:
    """Write one record atomically as `<out_dir>/<config_hash>__<attack or 'none'>.json`; return the path.

    Checks that `config_hash` is the hash of `config` (when the config is present) and fills `record_id`.
    The JSON is pretty-printed with sorted keys; NaN/inf metric values are written as Python's json does
    (NaN, Infinity), which `read_records` reads back.
    """
    if not isinstance(record, dict):
        raise FlbenchError(f"a record must be a JSON object, got {type(record).__name__}")
    cfg = record.get("config")
    h = record.get("config_hash") or (config_hash(cfg) if isinstance(cfg, dict) else None)
    _check_hash(h)
    if isinstance(cfg, dict) and config_hash(cfg) != h:
        raise FlbenchError(f"record config_hash {h} does not match the hash of its config ({config_hash(cfg)})")
    attack = record_attack(record)
    record = {**record, "schema": record.get("schema", SCHEMA), "config_hash": h, "record_id": f"{h}__{attack}"}
    text = json.dumps(record, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    return atomic_write_text(Path(out_dir) / record_filename(h, attack), text)


def _record_files(directory: Path) -> list[Path]:
    if not directory.exists():
        return []
    if not directory.is_dir():
        raise FlbenchError(f"records directory {directory} is not a directory")
    return sorted((p for p in directory.iterdir()
                   if p.name.endswith(RECORD_SUFFIX) and not is_temp(p.name) and p.is_file()),
                  key=lambda p: p.name)


def read_record(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FlbenchError(f"corrupt record {path}: {e}") from None
    if not isinstance(rec, dict):
        raise FlbenchError(f"corrupt record {path}: not a JSON object")
    if rec.get("schema") != SCHEMA:
        raise FlbenchError(f"record {path}: schema {rec.get('schema')!r} is not accepted; accepted: {SCHEMA}")
    return rec


def read_records(directory: str | os.PathLike) -> list[dict]:
    """All records under `directory` (not recursive), sorted by file name; temp files are skipped.

    A file that is not valid JSON (or not a schema-1 record) is a FlbenchError naming it: records are never
    silently dropped. A missing directory gives [].
    """
    return [read_record(p) for p in _record_files(Path(directory))]


# ------------------------------------------------------------------------------------------- markers

def marker_path(cfg_hash: str, out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / f"{_check_hash(cfg_hash)}{MARKER_SUFFIX}"


def mark_done(cfg_hash: str, attacks: Iterable[str], out_dir: str | os.PathLike) -> Path:
    """Write the cell's `.done` marker (atomically) listing its record files; call after all records."""
    names = sorted({record_filename(cfg_hash, a) for a in attacks} or {record_filename(cfg_hash, NO_ATTACK)})
    text = json.dumps({"config_hash": cfg_hash, "records": names}, indent=1) + "\n"
    return atomic_write_text(marker_path(cfg_hash, out_dir), text)


def _marker_ok(marker: Path) -> bool:
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
        names = data["records"]
    except (OSError, ValueError, KeyError, TypeError):
        return False  # an unreadable marker means "not done": the cell is run again
    return all((marker.parent / n).is_file() for n in names)


def is_done(cfg_hash: str, out_dir: str | os.PathLike) -> bool:
    """True when the cell's marker exists and every record it lists is present."""
    m = marker_path(cfg_hash, out_dir)
    return m.is_file() and _marker_ok(m)


def unmark(cfg_hash: str, out_dir: str | os.PathLike) -> None:
    """Remove a cell's marker (before re-running it), so a kill during the rerun leaves it 'not done'."""
    m = marker_path(cfg_hash, out_dir)
    try:
        m.unlink()
    except FileNotFoundError:
        return
    _fsync_dir(m.parent)


def done_hashes(directory: str | os.PathLike) -> set[str]:
    """Config hashes of the finished cells: marker present and all the records it lists present."""
    directory = Path(directory)
    if not directory.is_dir():
        return set()
    out = set()
    for p in directory.iterdir():
        if p.name.endswith(MARKER_SUFFIX) and not is_temp(p.name) and _HASH_RE.match(p.name[: -len(MARKER_SUFFIX)]):
            if _marker_ok(p):
                out.add(p.name[: -len(MARKER_SUFFIX)])
    return out


def write_cell(records: list[dict], out_dir: str | os.PathLike, cfg_hash: str | None = None) -> list[Path]:
    """Write all records of one cell, then its marker. Every record must carry the same config_hash."""
    if not records:
        raise FlbenchError("a cell produced no record")
    hashes = {r.get("config_hash") or (config_hash(r["config"]) if isinstance(r.get("config"), dict) else None)
              for r in records}
    if cfg_hash is not None:
        hashes.add(cfg_hash)
    if len(hashes) != 1:
        raise FlbenchError(f"the records of one cell carry different config hashes: {sorted(map(str, hashes))}")
    h = _check_hash(hashes.pop())
    attacks = [record_attack(r) for r in records]
    dup = sorted({a for a in attacks if attacks.count(a) > 1})
    if dup:
        raise FlbenchError(f"cell {h} produced two records for attack {dup[0]!r}")
    paths = [write_record({**r, "config_hash": h}, out_dir) for r in records]
    mark_done(h, attacks, out_dir)
    return paths


# ---------------------------------------------------------------------------------------- provenance

def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(root: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def git_state() -> tuple[str | None, bool]:
    """(commit, dirty) of the git checkout that holds the imported flbench package; (None, False) otherwise.

    A copy installed into site-packages (even inside some repository's .venv) is not "a checkout": the
    package's own `__init__.py` must be tracked by the repository.
    """
    import flbench

    pkg = Path(flbench.__file__).resolve().parent
    root = pkg.parent
    if _git(root, "ls-files", "--error-unmatch", f"{pkg.name}/__init__.py") is None:
        return None, False
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        return None, False
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return commit, bool(status)


def provenance() -> dict:
    """Versions (flbench, torch, transformers, python), git commit + dirty flag, UTC ISO date."""
    import flbench

    commit, dirty = git_state()
    return {
        "versions": {
            "flbench": flbench.__version__,
            "torch": _version("torch"),
            "transformers": _version("transformers"),
            "python": sys.version.split()[0],
        },
        "commit": commit,
        "dirty": dirty,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
