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

Record schema (version 2), filled by the cell runner (flbench.pipeline.cell):
    {"schema": 2, "record_id": "<config_hash>__<attack>", "config_hash", "config", "seeds", "versions",
     "commit", "dirty", "date", "model", "split", "defense", "finetune", "task", "attack", "wire", "timings"}
`config` is the resolved RunConfig (every default filled in) and `config_hash` its hash. The `task` block:
    {"name", "family", "primary", "n", "metrics": {metric: point value}, "checkpoint_trained",
     "ci": {metric: {"mean", "ci_low", "ci_high", "n"}},            95% bootstrap over the eval examples
     "baselines": {name: {"metrics": {metric: value} | null, "how"}}}  chance, majority / lead, ...
(`ci` and `baselines` were added within schema 2; records without them read as "no CI, no baseline"). The
`attack` block: {"name", "params", "data", "n", "primary", "metrics": {metric: {"mean", "ci_low", "ci_high",
"n"}}, "fit_s", "examples"}. Schema 1 (the
committed records of results/) has the same envelope; its `config` holds only the keys the run spelled out.
`read_records` reads both and refuses a file of another shape with one line naming it (`RecordEnvelope`).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from flbench.core.canonical import canonical_json, config_hash, normalize_numbers  # noqa: F401 (re-used names)
from flbench.core.errors import FlbenchError
from flbench.core.io import (  # noqa: F401
    TMP_SUFFIX,
    atomic_write_text,
    clean_temp,
    fsync_dir,
    is_temp,
)
from flbench.core.provenance import git_state, provenance  # noqa: F401
from flbench.pipeline.cell import RECORD_SCHEMA

SCHEMA = RECORD_SCHEMA  # what flbench.pipeline.cell writes
READABLE_SCHEMAS = (1, 2)
RECORD_SUFFIX = ".json"
MARKER_SUFFIX = ".done"
NO_ATTACK = "none"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HASH_RE = re.compile(r"^[0-9a-f]{16}$")


class _Block(BaseModel):
    """The attack or task block of a record: at least a name and its metrics."""

    model_config = ConfigDict(extra="allow")
    name: StrictStr
    metrics: dict


class RecordEnvelope(BaseModel):
    """The keys and types every readable record has (schema 1 and 2); other keys are kept as they are."""

    model_config = ConfigDict(extra="allow")
    schema_: Literal[1, 2] = Field(alias="schema")
    record_id: StrictStr
    config_hash: StrictStr = Field(pattern=_HASH_RE.pattern)
    config: dict
    seeds: dict
    versions: dict | None
    commit: StrictStr | None
    date: StrictStr | None
    model: dict
    split: StrictStr | None
    defense: dict
    finetune: dict | None
    task: _Block | None
    attack: _Block | None
    wire: dict
    timings: dict
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
    except OSError as e:
        raise FlbenchError(f"record {path} cannot be read: {e.strerror or e}") from None
    if not isinstance(rec, dict):
        raise FlbenchError(f"corrupt record {path}: a {type(rec).__name__}, not a JSON object; expected a run record")
    if rec.get("schema") not in READABLE_SCHEMAS or isinstance(rec.get("schema"), bool):
        raise FlbenchError(f"record {path}: schema {rec.get('schema')!r} is not accepted; accepted: "
                           f"{', '.join(map(str, READABLE_SCHEMAS))}")
    try:
        RecordEnvelope.model_validate(rec)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        key = ".".join(str(x) for x in err["loc"])
        what = "missing" if err["type"] == "missing" else f"{err.get('input')!r} is not accepted ({err['msg']})"
        raise FlbenchError(f"corrupt record {path}: {key}: {what}"[:500]) from None
    try:
        same = config_hash(rec["config"]) == rec["config_hash"]
    except FlbenchError:
        same = False
    if rec["record_id"] != path.name[: -len(RECORD_SUFFIX)] or not same:
        raise FlbenchError(f"corrupt record {path}: its record_id or config_hash does not match its file name or "
                           "config; records are written by flbench run/sweep, never edited")
    return rec


def read_records(directory: str | os.PathLike) -> list[dict]:
    """All records under `directory` (not recursive), sorted by file name; temp files are skipped.

    A file that is not valid JSON, or not a record of a readable schema and shape (`RecordEnvelope`), is a
    FlbenchError naming it: records are never silently dropped. A missing directory gives [].
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
    fsync_dir(m.parent)


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
