"""Victim corpora: the clients' private text whose leakage the attacks are scored on."""
from __future__ import annotations

import os
import re

from flbench.data.corpus import corpus, shuffled
from flbench.data.paths import read_jsonl_field, resolve_file
from flbench.data.records import Record, find_pii
from flbench.data.synthetic import private_records
from flbench.core.errors import FlbenchError

DEFAULT_SYNTHETIC_RECORDS = 100


@corpus("private-records", "victim",
        "seeded synthetic records (faker): names, e-mails, phones, addresses, ID numbers, DOBs, diagnoses; "
        "PII spans exact; no download")
def _private_records(*, limit: int | None, seed: int, data_dir=None, locale: str = "en_US") -> list[Record]:
    return private_records(DEFAULT_SYNTHETIC_RECORDS if limit is None else limit, seed=seed, locale=locale)


ENRON_SPLITS = {"dev": "enron_aeslc/dev.jsonl", "test": "enron_aeslc/test.jsonl",
                "train": "enron_aeslc/train_first3000.jsonl"}
ENRON_MAX_CHARS = 300


def truncate(text: str, max_chars: int | None) -> str:
    """Cut `text` to at most `max_chars`, at a whitespace boundary when one is in the second half."""
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = max(text.rfind(" ", 0, max_chars + 1), text.rfind("\n", 0, max_chars + 1))
    if cut < max_chars // 2:
        cut = max_chars
    return text[:cut].rstrip()


@corpus("enron", "victim",
        "real Enron e-mails (AESLC), truncated; e-mail addresses and phone numbers found by regex",
        files=tuple(ENRON_SPLITS.values()), hub_id="Yale-LILY/aeslc")
def _enron(*, limit: int | None, seed: int, data_dir: str | os.PathLike | None = None, split: str = "dev",
           max_chars: int | None = ENRON_MAX_CHARS, require_pii: bool = False) -> list[Record]:
    """Enron e-mail bodies; runs of spaces/tabs collapsed, then each cut to `max_chars` (None: whole).
    `require_pii` keeps only e-mails in which the (truncated) text still holds a detected PII span."""
    if split not in ENRON_SPLITS:
        raise FlbenchError(f"unknown enron split {split!r}; accepted: {', '.join(ENRON_SPLITS)}")
    if max_chars is not None and max_chars < 1:
        raise FlbenchError(f"max_chars must be a positive integer or None, got {max_chars!r}")
    path = resolve_file(ENRON_SPLITS[split], data_dir, what="dataset 'enron'")
    texts = [truncate(re.sub(r"[ \t]+", " ", t).strip(), max_chars) for t in read_jsonl_field(path, "email")]
    # shuffle: the file is sorted by mailbox owner, and the first N would all be one person's mail
    records = [Record(t, find_pii(t)) for t in texts if t]
    if require_pii:
        records = [r for r in records if r.pii]
    return shuffled(records, seed)
