"""Victim and auxiliary text corpora as lists of `Record(text, pii)`.

    load_corpus("private-records", limit=50, seed=1)   # built in, no download
    load_corpus("enron", limit=50, data_dir="../shared/data")
    load_corpus("xsum", limit=1000)                      # auxiliary (attacker) text, pii == []
    load_data_file("my.jsonl")                           # --data-file
"""
# public and victims are imported for their registrations
from flbench.data import public as _public  # noqa: F401
from flbench.data import victims as _victims  # noqa: F401
from flbench.data.corpus import CorpusEntry, SmallCorpusWarning, aux_names, datasets, load_corpus, victim_names
from flbench.data.files import load_data_file
from flbench.data.paths import ENV_VAR as DATA_DIR_ENV_VAR
from flbench.data.records import PiiSpan, Record, check_spans, find_pii

__all__ = [
    "DATA_DIR_ENV_VAR",
    "CorpusEntry",
    "PiiSpan",
    "Record",
    "SmallCorpusWarning",
    "aux_names",
    "check_spans",
    "datasets",
    "find_pii",
    "load_corpus",
    "load_data_file",
    "victim_names",
]
