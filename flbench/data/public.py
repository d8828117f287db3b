"""Auxiliary public corpora for attackers, different from the victim data: news (XSum), film-review phrases
(SST-2) and chat dialogues (SAMSum, DialogSum), cut into short passages like the victim records."""
from __future__ import annotations

import csv
import os

from flbench.data.corpus import corpus, shuffled
from flbench.data.paths import read_jsonl_field, resolve_file
from flbench.data.records import Record
from flbench.core.errors import FlbenchError

AUX_MAX_WORDS = 32


def chunk(units: list[str], max_words: int = AUX_MAX_WORDS, sep: str = " ") -> list[str]:
    """Greedily join consecutive units (sentences, dialogue turns) into passages of at most `max_words`
    whitespace words; a unit longer than that is cut into windows of `max_words` words."""
    out: list[str] = []
    cur: list[str] = []
    n = 0
    for unit in (u.strip() for u in units):
        words = unit.split()
        if not words:
            continue
        if len(words) > max_words:
            if cur:
                out.append(sep.join(cur))
                cur, n = [], 0
            out += [" ".join(words[i : i + max_words]) for i in range(0, len(words), max_words)]
            continue
        if n + len(words) > max_words and cur:
            out.append(sep.join(cur))
            cur, n = [], 0
        cur.append(unit)
        n += len(words)
    if cur:
        out.append(sep.join(cur))
    return out


def _check_words(max_words: int) -> None:
    if not isinstance(max_words, int) or max_words < 1:
        raise FlbenchError(f"max_words must be a positive integer, got {max_words!r}")


def _jsonl_passages(relpath: str, field: str, name: str, data_dir, seed: int, max_words: int, sep: str) -> list[Record]:
    _check_words(max_words)
    path = resolve_file(relpath, data_dir, what=f"dataset {name!r}")
    passages = [p for doc in read_jsonl_field(path, field) for p in chunk(doc.splitlines(), max_words, sep)]
    return shuffled([Record(p) for p in passages], seed)


@corpus("xsum", "aux", "BBC news articles (XSum test), cut into passages of <= 32 words",
        files=("xsum/test.jsonl",), hub_id="EdinburghNLP/xsum")
def _xsum(*, limit: int | None, seed: int, data_dir: str | os.PathLike | None = None,
          max_words: int = AUX_MAX_WORDS) -> list[Record]:
    return _jsonl_passages("xsum/test.jsonl", "document", "xsum", data_dir, seed, max_words, " ")


@corpus("samsum", "aux", "messenger-style dialogues (SAMSum test), cut into passages of <= 32 words",
        files=("samsum/test.jsonl",), hub_id="Samsung/samsum")
def _samsum(*, limit: int | None, seed: int, data_dir: str | os.PathLike | None = None,
            max_words: int = AUX_MAX_WORDS) -> list[Record]:
    return _jsonl_passages("samsum/test.jsonl", "dialogue", "samsum", data_dir, seed, max_words, "\n")


@corpus("dialogsum", "aux", "spoken-style dialogues (DialogSum dev), cut into passages of <= 32 words",
        files=("dialogsum/dev.jsonl",), hub_id="knkarthick/dialogsum")
def _dialogsum(*, limit: int | None, seed: int, data_dir: str | os.PathLike | None = None,
               max_words: int = AUX_MAX_WORDS) -> list[Record]:
    return _jsonl_passages("dialogsum/dev.jsonl", "dialogue", "dialogsum", data_dir, seed, max_words, "\n")


@corpus("sst2", "aux", "film-review sentences and phrases (GLUE SST-2 train part) of 4-32 words",
        files=("sst2/train_part.tsv",), hub_id="stanfordnlp/sst2")
def _sst2(*, limit: int | None, seed: int, data_dir: str | os.PathLike | None = None,
          min_words: int = 4, max_words: int = AUX_MAX_WORDS) -> list[Record]:
    _check_words(max_words)
    path = resolve_file("sst2/train_part.tsv", data_dir, what="dataset 'sst2'")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    texts = dict.fromkeys(s for r in rows
                          if min_words <= len((s := (r.get("sentence") or "").strip()).split()) <= max_words)
    return shuffled([Record(t) for t in texts], seed)
