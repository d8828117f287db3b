"""`--data-file PATH`: the victim's texts from a user file.

Plain text: one record per non-empty line. JSON Lines (a `.jsonl`/`.json` suffix, or a first non-empty line
starting with `{`): one object per line with a string `text` field and, optionally, `pii`: a list of
`{"kind", "value", "start", "end"}` spans that must index exactly into the text. Records without a `pii`
field get the regex detector's e-mail addresses and phone numbers.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from flbench.data.records import PiiSpan, Record, check_spans, find_pii
from flbench.core.errors import FlbenchError


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FlbenchError(f"data file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise FlbenchError(f"data file {str(path)!r} is a directory; expected a text or JSONL file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FlbenchError(f"cannot read data file {str(path)!r} as UTF-8 text: {e}") from None
    return text.splitlines()


def _parse_json_line(path: Path, lineno: int, line: str) -> Record:
    where = f"data file {str(path)!r} line {lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise FlbenchError(f"{where} is not valid JSON ({e.msg}); expected one object with a 'text' field per line") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise FlbenchError(f"{where} has no string 'text' field; expected {{\"text\": ...}} per line")
    text = obj["text"]
    if "pii" not in obj:
        return Record(text, find_pii(text))
    try:
        rec = Record(text, [PiiSpan(str(s["kind"]), str(s["value"]), int(s["start"]), int(s["end"])) for s in obj["pii"]])
        check_spans(rec)
    except (KeyError, TypeError, ValueError) as e:
        raise FlbenchError(f"{where} has a bad 'pii' list ({e}); expected spans "
                           "{\"kind\", \"value\", \"start\", \"end\"} with text[start:end] == value") from None
    return rec


def load_data_file(path: str | os.PathLike, limit: int | None = None) -> list[Record]:
    """Records from `path` in file order (the first `limit` if given). Empty or unreadable → FlbenchError."""
    path = Path(path).expanduser()
    lines = _read_lines(path)
    numbered = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip()]
    if not numbered:
        raise FlbenchError(f"data file {str(path)!r} is empty; expected one text per line or JSONL with a 'text' field")
    is_jsonl = path.suffix.lower() in (".jsonl", ".json") or numbered[0][1].lstrip().startswith("{")
    records: list[Record] = []
    for lineno, line in numbered:
        if limit is not None and len(records) >= limit:
            break
        if is_jsonl:
            rec = _parse_json_line(path, lineno, line)
            if rec.text.strip():
                records.append(rec)
        else:
            text = line.rstrip("\r\n")
            records.append(Record(text, find_pii(text)))
    if not records:
        raise FlbenchError(f"data file {str(path)!r} has no non-empty 'text' values")
    return records
