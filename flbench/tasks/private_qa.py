"""`private-qa`: questions about the built-in synthetic private records (family "qa"), so that utility and
privacy are measured on the same private data with no download.

Data: the first `N_RECORDS` = 200 records of `load_corpus("private-records", seed=0)` (faker, fixed seed; the
records `flbench attack --data private-records` sees by default are the first ones of the same sequence).
Fixed carve by record: train = records 0-99 (so the default victims of an attack on the training traffic, the
first 50, are training records), eval = records 100-199; no record on both sides.

One example per PII field of a record other than the person's name (two or three per record): the record as
context and a question naming the person, e.g. "Record: <text>\\nQuestion: What is the e-mail address of
Jane Doe?\\nAnswer:"; the gold is the exact field value as it appears in the record. Metrics: exact match of
the prediction and the value after stripping whitespace ("em"), and F1 of their whitespace tokens taken as
they are, case and punctuation kept ("f1").
"""
from __future__ import annotations

from typing import ClassVar

from flbench.tasks.base import Example, tasks
from flbench.tasks.generative import GenerativeTask
from flbench.tasks.metrics import token_f1_exact

N_RECORDS = 200
N_TRAIN = 100
RECORDS_SEED = 0

QUESTIONS = {
    "email": "What is the e-mail address of {name}?",
    "phone": "What is the phone number of {name}?",
    "address": "What is the address of {name}?",
    "id_number": "What is the ID number of {name}?",
    "dob": "What is the date of birth of {name}?",
    "diagnosis": "What condition does {name} have?",
}


@tasks.register("private-qa")
class PrivateQA(GenerativeTask):
    """Questions about the synthetic private records (e-mail, phone, address, ID, birth date, diagnosis of a
    named person); exact match and token F1 (train: records 0-99, eval: records 100-199, seed 0)."""

    name = "private-qa"
    family = "qa"
    metrics = ("em", "f1")
    max_new_tokens = 32
    max_prompt_tokens = 256
    context_field = "record"
    n_records: ClassVar[int] = N_RECORDS
    n_train: ClassVar[int] = N_TRAIN

    def read_rows(self, split, data_dir=None):
        from flbench.data import load_corpus

        records = load_corpus("private-records", limit=self.n_records, seed=RECORDS_SEED)
        rows = [{"index": i, "text": r.text, "pii": [(s.kind, s.value) for s in r.pii]} for i, r in enumerate(records)]
        return rows[: self.n_train] if split == "train" else rows[self.n_train:]

    def to_examples(self, rows):
        out = []
        for r in rows:
            names = [v for k, v in r["pii"] if k == "name"]
            if not names:
                continue
            seen = set()
            for kind, value in r["pii"]:
                if kind not in QUESTIONS or kind in seen:
                    continue
                seen.add(kind)
                out.append(Example(id=f"{r['index']}-{kind}", group=str(r["index"]), references=(value,),
                                   fields={"record": r["text"], "kind": kind,
                                           "question": QUESTIONS[kind].format(name=names[0])}))
        return out

    def render(self, ex, context):
        return f"Record: {context}\nQuestion: {ex.fields['question']}\nAnswer:"

    def score_texts(self, examples, predictions):
        per = self.example_scores(examples, predictions)
        return {k: sum(v) / len(v) if v else float("nan") for k, v in per.items()}

    def example_scores(self, examples, predictions):
        golds = [self.references(e)[0].strip() for e in examples]
        return {"em": [float(p.strip() == g) for g, p in zip(golds, predictions)],
                "f1": [token_f1_exact(g, p) for g, p in zip(golds, predictions)]}
