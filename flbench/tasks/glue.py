"""GLUE SST-2 (Socher et al., 2013) from `sst2/train_part.tsv` (train) and `sst2/dev.tsv` (eval, the GLUE dev
set), both `sentence<TAB>label` with a header. Hub fallback: stanfordnlp/sst2 (train: the whole GLUE train set,
67,349 rows, of which train_part.tsv is a part; validation: the same 872 dev rows)."""
from __future__ import annotations

from typing import ClassVar

from flbench.core.errors import FlbenchError
from flbench.tasks.base import Example, Task, read_tsv, tasks
from flbench.tasks.hub import Hub, per_row


@tasks.register("sst2")
class SST2(Task):
    """GLUE SST-2: binary sentiment of a movie-review sentence; accuracy on the GLUE dev set."""

    name = "sst2"
    files: ClassVar[dict[str, str]] = {"train": "sst2/train_part.tsv", "eval": "sst2/dev.tsv"}
    required = ("sentence", "label")
    hub = Hub("stanfordnlp/sst2", None, {"sst2/train_part.tsv": "train", "sst2/dev.tsv": "validation"},
              per_row(lambda r: {"sentence": r["sentence"], "label": str(r["label"])}))

    def read_rows(self, split, data_dir=None):
        return self.read_file(self.files[split], data_dir, lambda p: read_tsv(p, self.required))

    def to_examples(self, rows):
        out = []
        for i, r in enumerate(rows):
            if r["label"] not in ("0", "1"):
                raise FlbenchError(f"sst2 row {i + 1}: label {r['label']!r}: expected 0 or 1")
            out.append(Example(id=str(i), fields={"sentence": r["sentence"].strip()}, label=int(r["label"])))
        return out

    def prompt(self, ex):
        return f"{ex.fields['sentence']}\nQuestion: Is this sentence positive or negative?\nAnswer:"

    def choices(self, ex):
        return ["negative", "positive"]
