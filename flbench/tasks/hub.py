"""The Hugging Face hub fallback of a task's data: used only when the local file is missing.

The project rule: a task resolves its data from a local directory (`--data-dir`, FLBENCH_DATA_DIR, the
../shared/data layout); when the file is not there it loads the same dataset from the hub with
`datasets.load_dataset(id, config, split=...)` and converts the hub rows into the rows of the local file
(`to_local`), so that everything after reading (carve, examples, prompts) is the same code for both.

The machines that build and test flbench are offline: the conversions are tested with hub-shaped rows
(`datasets.Dataset.from_list`), and the offline failure is one line naming the local file, its fields and the
hub id tried. The hub ids are datasets stored as plain files (parquet/JSON; `datasets` >= 4 runs no loading
scripts).
"""
from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from flbench.core.errors import FlbenchError

Convert = Callable[[list[dict]], list[dict]]


def per_row(fn: Callable[[dict], dict]) -> Convert:
    """A list conversion that maps each hub row on its own."""
    return lambda rows: [fn(r) for r in rows]


@dataclass(frozen=True)
class Hub:
    """Where a task's local files live on the hub.

    `splits` maps each local file (relative path under the data directory) to the hub split that holds the
    same rows; `to_local` turns the list of hub rows of one split into the list of local rows (one JSONL line,
    TSV row or story of a JSON file each); `to_local_by_file` overrides it for some local files."""

    id: str
    config: str | None = None
    splits: Mapping[str, str] = field(default_factory=dict)
    to_local: Convert = field(default=lambda rows: rows)
    to_local_by_file: Mapping[str, Convert] = field(default_factory=dict)

    def convert(self, relpath: str, rows: list[dict]) -> list[dict]:
        return self.to_local_by_file.get(relpath, self.to_local)(rows)

    def describe(self, relpath: str) -> str:
        cfg = f", config {self.config}" if self.config else ""
        return f"{self.id}{cfg}, split {self.splits.get(relpath, '?')}"


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {msg[:200]}"


def hub_offline_reason(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be reached (None when it can): HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set, or no TCP
    connection to the endpoint (HF_ENDPOINT, default huggingface.co:443) within `timeout` s. Checked first
    because `datasets` retries for ~25 s and logs every retry when offline."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # behind a proxy a direct connection proves nothing: let `datasets` try
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlsplit(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host} is unreachable ({type(e).__name__}: {e})"
    return None


def load_hub_rows(hub: Hub, relpath: str) -> list[dict]:
    """The local-layout rows of `relpath` from the hub; any failure (offline, unknown id, missing `datasets`,
    an unexpected row layout) raises a FlbenchError whose message says what went wrong in one line."""
    if relpath not in hub.splits:
        raise FlbenchError(f"no hub split for {relpath}")
    try:
        import datasets
    except ImportError as e:
        raise FlbenchError(f"the `datasets` package is not installed ({_one_line(e)})") from None
    reason = hub_offline_reason()
    if reason is not None:
        raise FlbenchError(f"offline: {reason}")
    try:
        ds = datasets.load_dataset(hub.id, hub.config, split=hub.splits[relpath])
        rows = hub.convert(relpath, [dict(r) for r in _iter(ds)])
    except FlbenchError:
        raise
    except Exception as e:  # noqa: BLE001 - offline, missing dataset, changed layout: all one user-facing line
        raise FlbenchError(_one_line(e)) from None
    if not rows:
        raise FlbenchError(f"hub dataset {hub.describe(relpath)} has no rows")
    return rows


def _iter(ds) -> Iterable[dict]:
    return iter(ds)
