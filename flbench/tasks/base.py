"""Task base: a fixed, documented train/eval split of a local dataset, a prompt template and verbalised choices.

Multiple-choice tasks are scored by log-likelihood (flbench.tasks.scoring): each verbalised choice is a
continuation of the prompt; the prediction is the choice with the highest summed log-probability.

Fixed split. SuperGLUE is here only as its validation set, so the validation rows are carved once into
train/eval halves by a seeded permutation (`CARVE_SEED`, never the run's seed): row `i` of the permutation
goes to eval for the first ceil(n/2) rows and to train for the rest. The carve unit is one JSONL line (for
MultiRC one passage, so that no passage's answers leak from train into eval). A dataset with its own train
and eval files (SST-2) uses them as they are. Data are read with plain json/csv; the layout is that of
../shared/data.

Where data come from (`Task.read_file`, the one place): the local file under the data directory
(`--data-dir`, FLBENCH_DATA_DIR, ../shared/data); when it is missing and the task names a `hub` source
(flbench.tasks.hub), the same rows from the Hugging Face hub via `datasets`, converted to the local layout.
Otherwise one FlbenchError line naming the file, the fields its rows need, and the hub id tried.

Kinds. `kind = "choice"` tasks (here) are scored by the log-likelihood of verbalised answers;
`kind = "generate"` tasks (flbench.tasks.generative) by text generated greedily through the split.
Every task gives `train_pair(ex) -> (context, continuation)`: the training text, with the loss taken only on
the continuation.

Uncertainty and baselines (flbench.pipeline.utility asks these; a task never computes a CI itself):

- `example_scores(examples, preds)`: the per-example values of the metrics that are means over examples
  (accuracy: 1/0 per example; ROUGE, CoQA F1/EM: per example); their 95% CI is a bootstrap of that mean.
  Every other metric of `score` (CB macro-F1, MultiRC F1a and EM0) is corpus-level: its CI recomputes
  `score` on resampled units, where the unit is `ci_unit` ("example", or "group": `Example.group`, e.g. one
  MultiRC question with all its answer options).
- `baselines(examples)`: what a model must beat, scored with the task's own metrics on the same examples,
  as {name: {"metrics": {metric: value} or None, "how": one line}}. Choice tasks: "chance" (uniform random
  choice; the exact expectation for per-example metrics, the mean of CHANCE_DRAWS seeded draws for corpus
  metrics) and "majority" (always the eval portion's most frequent label). Generative tasks: "chance" has no
  metrics (no finite answer set) and one cheap trivial prediction is scored instead (flbench.tasks.generative).
- `static_chance()`: the chance level that needs no data (accuracy = 1/`n_choices` when every example has
  the same number of choices), for records written before tasks reported their baselines.
"""
from __future__ import annotations

import csv
import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, ClassVar

from flbench.data.paths import read_jsonl, resolve_file
from flbench.core.errors import FlbenchError
from flbench.core.registry import Registry
from flbench.tasks.hub import Hub, load_hub_rows

SPLITS = ("train", "eval")
CARVE_SEED = 20250521  # fixed: the train/eval carve never depends on a run's --seed
CARVE_EVAL_FRACTION = 0.5
CHANCE_SEED = 0  # the seeded uniform-random predictions behind a corpus metric's chance level
CHANCE_DRAWS = 200


@dataclass(frozen=True)
class Example:
    id: str  # stable id within the task (source row / question / answer indices)
    fields: dict[str, Any]  # the raw fields the template uses
    label: int = -1  # index into the task's choices (-1: none, generative tasks)
    group: str | None = None  # examples scored together (MultiRC: one question; CoQA: one story)
    references: tuple[str, ...] = ()  # gold texts of a generative task (the first one is the training target)


class Task:
    """Base class: subclasses set name/family/metrics/file and implement rows→examples, prompt and choices."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "choice"  # "choice": log-likelihood of verbalised answers; "generate": greedy text
    family: ClassVar[str] = "nlu"
    metrics: ClassVar[tuple[str, ...]] = ("accuracy",)
    primary_metric: ClassVar[str | None] = None  # the utility reported in leaderboards (default: metrics[0])
    relpath: ClassVar[str] = ""  # data file under the data dir (single-file tasks)
    required: ClassVar[tuple[str, ...]] = ()  # fields each row must have
    delimiter: ClassVar[str] = " "  # between the prompt and a verbalised answer (as lm-evaluation-harness)
    hub: ClassVar[Hub | None] = None  # the same data on the Hugging Face hub, used only without a local file
    n_choices: ClassVar[int | None] = 2  # choices per example when every example has the same number (else None)
    ci_unit: ClassVar[str] = "example"  # what the utility bootstrap resamples: "example" or "group"

    @property
    def primary(self) -> str:
        return self.primary_metric or self.metrics[0]

    # ---- data ----
    def read_rows(self, split: str, data_dir=None) -> list[dict]:
        """Rows of `split` after the fixed carve (override for datasets with their own train/eval files)."""
        return carve(self.read_file(self.relpath, data_dir), split)

    def read_file(self, relpath: str, data_dir=None, reader: Callable[[Path], list[dict]] | None = None,
                  required: tuple[str, ...] | None = None) -> list[dict]:
        """The rows of one data file: the local file read by `reader` (default: JSON Lines whose rows hold the
        `required` fields, default the task's); without one, the rows of `fallback_rows` (the task's `hub`);
        else a FlbenchError (one line) naming the file, the fields and the hub id tried."""
        required = self.required if required is None else required
        reader = reader or (lambda p: read_jsonl(p, required))
        try:
            path = resolve_file(relpath, data_dir, f"task {self.name}")
        except FlbenchError as e:
            missing = f"{e} (rows with fields: {', '.join(required)})"
            rows = self.fallback_rows(relpath, missing)
            for i, r in enumerate(rows):
                if not isinstance(r, dict) or any(k not in r for k in required):
                    raise FlbenchError(f"{missing}; the fallback for it gave row {i + 1} without all of "
                                       f"{', '.join(required)}") from None
            return rows
        return reader(path)

    def fallback_rows(self, relpath: str, missing: str) -> list[dict]:
        """Rows of `relpath` when no local file exists (default: the task's hub source), or a FlbenchError that
        starts with `missing` (the local file, its fields) and says what else was tried."""
        if self.hub is None or relpath not in self.hub.splits:
            raise FlbenchError(missing)
        try:
            return load_hub_rows(self.hub, relpath)
        except FlbenchError as e:
            raise FlbenchError(f"{missing}; the hub fallback {self.hub.describe(relpath)} failed ({e})") from None

    def resolve(self, relpath: str, data_dir=None) -> Path:
        """The local data file, or a FlbenchError naming it and the fields it must hold (no hub fallback)."""
        try:
            return resolve_file(relpath, data_dir, f"task {self.name}")
        except FlbenchError as e:
            raise FlbenchError(f"{e} (rows with fields: {', '.join(self.required)})") from None

    def to_examples(self, rows: list[dict]) -> list[Example]:
        raise NotImplementedError

    def load(self, split: str = "eval", data_dir=None, limit: int | None = None, seed: int | None = None) -> list[Example]:
        """Examples of the fixed `split`; `seed` (if given) shuffles them; `limit` keeps the first N."""
        if split not in SPLITS:
            raise FlbenchError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
        if limit is not None and limit < 1:
            raise FlbenchError(f"--limit {limit}: must be a positive integer")
        examples = self.to_examples(self.read_rows(split, data_dir))
        if seed is not None:
            random.Random(seed).shuffle(examples)
        return examples[:limit] if limit is not None else examples

    # ---- prompting ----
    def prompt(self, ex: Example) -> str:
        raise NotImplementedError

    def choices(self, ex: Example) -> list[str]:
        """Verbalised answers, without the leading delimiter."""
        raise NotImplementedError

    def continuations(self, ex: Example) -> list[str]:
        return [self.delimiter + c for c in self.choices(ex)]

    def target_text(self, ex: Example) -> str:
        """The gold answer as training text: prompt + delimiter + verbalised label."""
        context, continuation = self.train_pair(ex)
        return context + continuation

    def train_pair(self, ex: Example) -> tuple[str, str]:
        """(context, continuation) for fine-tuning, the loss taken only on the continuation: for a choice task
        (prompt, delimiter + verbalised gold label)."""
        return self.prompt(ex), self.continuations(ex)[ex.label]

    # ---- scoring ----
    def score(self, examples: list[Example], preds: list[int]) -> dict[str, float]:
        from flbench.tasks.metrics import accuracy

        return {"accuracy": accuracy([e.label for e in examples], preds)}

    def example_scores(self, examples: list[Example], preds: list) -> dict[str, list[float]]:
        """Per-example values of the metrics of `score` that are means over examples (see module docstring)."""
        return {"accuracy": [float(e.label == p) for e, p in zip(examples, preds)]}

    # ---- baselines ----
    @classmethod
    def static_chance(cls) -> dict[str, float]:
        """The chance level that needs no data: {"accuracy": 1/n_choices} when every example has the same
        number of choices and accuracy is a metric; else {}."""
        if cls.kind == "choice" and cls.n_choices and "accuracy" in cls.metrics:
            return {"accuracy": 1.0 / cls.n_choices}
        return {}

    def baselines(self, examples: list[Example]) -> dict[str, dict]:
        """{"chance": ..., "majority": ...} on `examples` (see module docstring); {} for no examples."""
        if not examples:
            return {}
        return {"chance": self._chance(examples), "majority": self._majority(examples)}

    def _chance(self, examples: list[Example]) -> dict:
        ks = [len(self.choices(ex)) for ex in examples]
        per = [self.example_scores([ex] * k, list(range(k))) for ex, k in zip(examples, ks)]
        metrics = {m: sum(sum(p[m]) / len(p[m]) for p in per) / len(per) for m in per[0]}
        corpus = [m for m in self.metrics if m not in metrics]
        how = "uniform random choice: expected score"
        if corpus:
            rng = random.Random(CHANCE_SEED)
            draws = [self.score(examples, [rng.randrange(k) for k in ks]) for _ in range(CHANCE_DRAWS)]
            for m in corpus:
                metrics[m] = sum(d[m] for d in draws) / len(draws)
            how += f" ({', '.join(corpus)}: mean of {CHANCE_DRAWS} seeded draws)"
        return {"metrics": metrics, "how": how}

    def _majority(self, examples: list[Example]) -> dict:
        counts = Counter(e.label for e in examples)
        label = min(counts, key=lambda lab: (-counts[lab], lab))  # ties: the first choice
        names = {tuple(self.choices(e)) for e in examples}
        what = repr(next(iter(names))[label]) if len(names) == 1 else f"choice {label}"
        return {"metrics": self.score(examples, [label] * len(examples)),
                "how": f"always {what} ({counts[label]} of {len(examples)} eval examples)"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, metrics={self.metrics})"


tasks: Registry[type[Task]] = Registry("task")


def get_task(name: str) -> Task:
    return tasks.get(name)()


def primary_metric(name: str) -> str | None:
    """The registered task's primary metric, or None for a task this installation does not know."""
    return tasks.get(name)().primary if name in dict(tasks.items()) else None


def carve(rows: list, split: str, seed: int = CARVE_SEED, eval_fraction: float = CARVE_EVAL_FRACTION) -> list:
    """The fixed train/eval carve of a validation-only dataset (see module docstring), in permuted order."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = math.ceil(len(rows) * eval_fraction)
    picked = order[:n_eval] if split == "eval" else order[n_eval:]
    return [rows[i] for i in picked]


def read_tsv(path: Path, required: tuple[str, ...]) -> list[dict]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = reader.fieldnames or []
            if any(k not in header for k in required):
                raise FlbenchError(f"{path}: expected a TSV header with columns {', '.join(required)}, got {header}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError) as e:
        raise FlbenchError(f"cannot read {path} as UTF-8 TSV: {e}") from None
    return rows


def as_bool_label(value: Any, where: str) -> int:
    s = str(value).strip().lower()
    if s in ("true", "1"):
        return 1
    if s in ("false", "0"):
        return 0
    raise FlbenchError(f"{where}: label {value!r}: expected true/false")


def as_choice_label(value: Any, names: tuple, where: str) -> int:
    if value in names:
        return list(names).index(value)
    raise FlbenchError(f"{where}: label {value!r}: expected one of {', '.join(map(str, names))}")
