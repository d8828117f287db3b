"""Where local copies of public datasets live: `data_dir` argument, then FLBENCH_DATA_DIR, then
`../shared/data` beside the project root (the layout of the machines that build and test flbench)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from flbench.core.errors import FlbenchError

ENV_VAR = "FLBENCH_DATA_DIR"
HOW_TO_SET = f"pass --data-dir DIR or set {ENV_VAR}=DIR"

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The directories that would be searched, in order (an explicit choice is the only candidate)."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(env).expanduser()]
    return [_PROJECT_ROOT.parent / "shared" / "data"]


def resolve_file(relpath: str, data_dir: str | os.PathLike | None = None, what: str = "") -> Path:
    """The first existing `<dir>/<relpath>`; a FlbenchError naming the expected file otherwise."""
    dirs = candidate_dirs(data_dir)
    for d in dirs:
        p = d / relpath
        if p.is_file():
            return p
    tried = ", ".join(str(d / relpath) for d in dirs)
    label = f"{what} needs " if what else "need "
    raise FlbenchError(f"{label}{relpath} in the data directory (tried {tried}); {HOW_TO_SET}")


def read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    """The JSON objects of a JSON Lines file; each must hold the `required` fields, and there must be one."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FlbenchError(f"cannot read {path} as UTF-8 text: {e}") from None
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or any(k not in row for k in required):
            raise FlbenchError(f"{path} line {lineno}: expected a JSON object with fields {', '.join(required)}")
        rows.append(row)
    if not rows:
        raise FlbenchError(f"{path}: no rows; expected JSON Lines with fields {', '.join(required)}")
    return rows


def read_jsonl_field(path: Path, field: str) -> list[str]:
    """The string values of `field` in a JSON Lines file (non-string values are skipped)."""
    return [row[field] for row in read_jsonl(path, (field,)) if isinstance(row[field], str)]
