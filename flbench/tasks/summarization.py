"""Abstractive summarization (family "summarization"), scored by ROUGE-1/2/L F1 (rouge-score, stemmed; the best
reference per example when there are several), averaged over examples.

Data and fixed carve:

- `xsum` (Narayan et al., 2018): `xsum/test.jsonl` (`document`, `summary`, `id`; 1000 BBC articles), the only
  split here, carved once into train/eval halves with `base.carve` (CARVE_SEED): 500 eval, 500 train.
  Hub fallback: EdinburghNLP/xsum, split test.
- `samsum` (Gliwa et al., 2019): `samsum/test.jsonl` (`id`, `dialogue`, `summary`; 819 chats), carved the same
  way: 410 eval, 409 train. Hub fallback: knkarthick/samsum, split test.
- `dialogsum` (Chen et al., 2021): train = `dialogsum/dev.jsonl` (500, one `summary`), eval =
  `dialogsum/test.jsonl` (500, three references `summary1..3`). Hub fallback: knkarthick/dialogsum, splits
  validation and test (test rows of one dialogue are grouped into summary1..3).

References are put on one line (whitespace runs collapsed), since generation stops at the first newline.
The prompt states the document, an instruction and a "Summary:" cue; a document longer than the prompt budget
is cut at its end (the lead of a news article carries most of its summary).

Trivial baseline (beside every utility): LEAD, the document's first sentence (XSum), or LEAD-3, a dialogue's
first three utterances (SAMSum, DialogSum), scored with the same ROUGE.
"""
from __future__ import annotations

import re
from typing import ClassVar

from flbench.tasks.base import Example, tasks
from flbench.tasks.generative import GenerativeTask
from flbench.tasks.hub import Hub, per_row
from flbench.tasks.metrics import ROUGE_TYPES, rouge_f1, rouge_f1_per_example

LEAD_UTTERANCES = 3


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def lead_utterances(text: str, k: int = LEAD_UTTERANCES) -> str:
    """The first `k` non-empty lines (utterances) of a dialogue, on one line."""
    lines = [one_line(t) for t in str(text).splitlines() if t.strip()]
    return " ".join(lines[:k])


class _Summarization(GenerativeTask):
    family = "summarization"
    metrics = ROUGE_TYPES
    primary_metric = "rougeL"
    max_new_tokens = 64
    max_prompt_tokens = 768
    source_field: ClassVar[str] = "document"  # field of the row holding the text to summarize
    summary_fields: ClassVar[tuple[str, ...]] = ("summary",)
    context_field = "text"
    instruction: ClassVar[str] = ""
    label: ClassVar[str] = "Document"
    lead_how: ClassVar[str] = "LEAD: the document's first sentence (the XSum paper's baseline)"

    def to_examples(self, rows: list[dict]) -> list[Example]:
        out = []
        for i, r in enumerate(rows):
            refs = tuple(one_line(r[k]) for k in self.summary_fields if k in r and str(r[k]).strip())
            rid = str(r.get("id", r.get("fname", i)))
            out.append(Example(id=rid, fields={"text": str(r[self.source_field]).strip()}, references=refs))
        return out

    def render(self, ex, context):
        sep = "\n" if "\n" in context else " "
        return f"{self.label}:{sep}{context}\n{self.instruction}\nSummary:"

    def score_texts(self, examples, predictions):
        return rouge_f1([self.references(e) for e in examples], predictions)

    def example_scores(self, examples, predictions):
        return rouge_f1_per_example([self.references(e) for e in examples], list(predictions))

    def lead(self, text: str) -> str:
        """The trivial summary: the first sentence of a document (XSum's LEAD baseline)."""
        return re.split(r"(?<=[.!?])\s+", one_line(text), maxsplit=1)[0]

    def trivial_baseline(self, examples):
        return ("lead", [self.lead(e.fields["text"]) for e in examples], self.lead_how)


@tasks.register("xsum")
class XSum(_Summarization):
    """XSum: one-sentence summary of a BBC article; ROUGE-1/2/L F1 (500/500 carve of the 1000-row test file)."""

    name = "xsum"
    relpath = "xsum/test.jsonl"
    required = ("document", "summary")
    max_new_tokens = 48
    instruction = "Summarize the document in one sentence."
    hub = Hub("EdinburghNLP/xsum", None, {"xsum/test.jsonl": "test"}, per_row(dict))


class _DialogueSummarization(_Summarization):
    source_field = "dialogue"
    label = "Dialogue"
    instruction = "Summarize the dialogue in one or two sentences."
    lead_how = f"LEAD-{LEAD_UTTERANCES}: the dialogue's first {LEAD_UTTERANCES} utterances (the SAMSum paper's baseline)"

    def lead(self, text: str) -> str:
        return lead_utterances(text)


@tasks.register("samsum")
class SAMSum(_DialogueSummarization):
    """SAMSum: summary of a messenger chat; ROUGE-1/2/L F1 (410/409 carve of the 819-row test file)."""

    name = "samsum"
    relpath = "samsum/test.jsonl"
    required = ("dialogue", "summary")
    hub = Hub("knkarthick/samsum", None, {"samsum/test.jsonl": "test"}, per_row(dict))


def _group_dialogsum_test(rows: list[dict]) -> list[dict]:
    """Hub DialogSum test rows (one per dialogue, or one per reference summary) → one row per dialogue with
    summary1..3; a dialogue with fewer than three references repeats them, which leaves the best-reference
    ROUGE unchanged."""
    groups: dict[str, dict] = {}
    for i, r in enumerate(rows):
        g = groups.setdefault(r["dialogue"], {"fname": str(r.get("id", i)), "dialogue": r["dialogue"], "refs": []})
        g["refs"].append(r["summary"])
    out = []
    for g in groups.values():
        refs = g.pop("refs")
        out.append({**g, **{f"summary{k + 1}": refs[k % len(refs)] for k in range(3)}})
    return out


@tasks.register("dialogsum")
class DialogSum(_DialogueSummarization):
    """DialogSum: summary of a spoken dialogue; ROUGE-1/2/L F1, best of three references (train: dev file)."""

    name = "dialogsum"
    files: ClassVar[dict[str, str]] = {"train": "dialogsum/dev.jsonl", "eval": "dialogsum/test.jsonl"}
    required_by_split: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": ("dialogue", "summary"), "eval": ("dialogue", "summary1", "summary2", "summary3")}
    required = ("dialogue", "summary")
    summary_fields = ("summary", "summary1", "summary2", "summary3")
    hub = Hub("knkarthick/dialogsum", None, {"dialogsum/dev.jsonl": "validation", "dialogsum/test.jsonl": "test"},
              per_row(dict), {"dialogsum/test.jsonl": _group_dialogsum_test})

    def read_rows(self, split, data_dir=None):
        return self.read_file(self.files[split], data_dir, required=self.required_by_split[split])


__all__ = ["DialogSum", "SAMSum", "XSum", "one_line"]
