"""Generative tasks: the model writes an answer (greedy, KV-cached through the split or by the unsplit model),
which is cut at the task's stop string and scored against reference texts (ROUGE, CoQA F1/EM, ...).

A generative task gives:

- `prompt(ex)`: the prompt text, ending in a cue ("Summary:", "A:", "Answer:"); the answer follows after a
  space;
- `references(ex)`: the gold texts (one or several), on one line each;
- `max_new_tokens`, `max_prompt_tokens`: the generation budget; a prompt longer than `max_prompt_tokens`
  tokens is shortened by cutting the end of its long context field (`context_field`: the document, dialogue
  or story), so that the question and the answer cue survive (`fit_prompt`); if that is not enough, only its
  last `max_prompt_tokens` tokens are kept;
- `stop`: the generated text, leading whitespace removed, is cut at its first occurrence (for "\\n": the first
  non-empty line; instruct models often open with a newline after "Summary:"); every vocabulary token whose
  text contains it is passed to generation as an extra stop token (`stop_token_ids`), which ends a sample
  where the cut is made, so stopping early never changes a prediction (a stop in leading whitespace is
  continued: flbench.pipeline.textgen);
- `score_texts(examples, predictions)`: the task's metrics over the cut predictions;
- `train_pair(ex) = (prompt, " " + references[0] + stop)`: fine-tuning teaches the model to stop;
- `example_scores(examples, predictions)`: the per-example metric values whose means `score_texts` reports
  (for the bootstrap CI of flbench.pipeline.utility);
- `trivial_baseline(examples)`: one cheap prediction per example that needs no model, scored like the model
  (default: the most frequent gold answer of the eval portion, the generative analogue of the majority
  label; summarization: the lead of the document). There is no "chance" level: no finite answer set.
"""
from __future__ import annotations

from collections import Counter
from typing import ClassVar

from flbench.core.errors import FlbenchError
from flbench.tasks.base import Example, Task


class GenerativeTask(Task):
    """Base of the generative tasks (kind "generate")."""

    kind: ClassVar[str] = "generate"
    family: ClassVar[str] = "generation"
    n_choices: ClassVar[int | None] = None
    max_new_tokens: ClassVar[int] = 32
    max_prompt_tokens: ClassVar[int] = 1024
    stop: ClassVar[str] = "\n"
    context_field: ClassVar[str | None] = None  # the field shortened first when the prompt is too long

    # ---- prompting ----
    def render(self, ex: Example, context: str) -> str:
        """The prompt with `context` in place of ex.fields[context_field]."""
        raise NotImplementedError

    def prompt(self, ex: Example) -> str:
        return self.render(ex, ex.fields[self.context_field] if self.context_field else "")

    def references(self, ex: Example) -> list[str]:
        return list(ex.references)

    def train_pair(self, ex: Example) -> tuple[str, str]:
        """(prompt, " " + first reference + stop string): the loss on the answer and on stopping after it."""
        return self.prompt(ex), " " + self.references(ex)[0] + self.stop

    def choices(self, ex: Example) -> list[str]:
        raise FlbenchError(f"task {self.name} is generative: it has references, not choices")

    def fit_prompt(self, ex: Example, tokenizer, max_tokens: int | None = None) -> str:
        """The prompt, with the end of its context field cut so that it tokenizes to at most `max_tokens`
        (default `max_prompt_tokens`) tokens when possible; the question and answer cue are kept."""
        budget = self.max_prompt_tokens if max_tokens is None else max_tokens
        text = self.prompt(ex)
        n = len(tokenizer(text)["input_ids"])
        if n <= budget or not self.context_field:
            return text
        ctx_ids = tokenizer(ex.fields[self.context_field], add_special_tokens=False)["input_ids"]
        keep = len(ctx_ids) - (n - budget)
        for _ in range(4):  # re-tokenizing at the cut can differ by a token or two
            if keep <= 0:
                break
            text = self.render(ex, tokenizer.decode(ctx_ids[:keep], skip_special_tokens=True).rstrip() + " ...")
            n = len(tokenizer(text)["input_ids"])
            if n <= budget:
                return text
            keep -= n - budget
        return text  # still too long (a long question or history): prompt_ids keeps the last tokens

    def prompt_ids(self, ex: Example, tokenizer, max_tokens: int | None = None) -> list[int]:
        """Token ids of the fitted prompt, at most `max_tokens` (the last ones if the cut was not enough)."""
        budget = self.max_prompt_tokens if max_tokens is None else max_tokens
        ids = tokenizer(self.fit_prompt(ex, tokenizer, budget))["input_ids"]
        return ids[-budget:]

    # ---- output ----
    def postprocess(self, text: str) -> str:
        """Generated text → prediction: drop leading whitespace, cut at the first stop string, strip (the first
        non-empty line when the stop string is a newline)."""
        text = text.lstrip()
        if self.stop:
            text = text.split(self.stop, 1)[0]
        return text.strip()

    def score_texts(self, examples: list[Example], predictions: list[str]) -> dict[str, float]:
        raise NotImplementedError

    def score(self, examples: list[Example], preds) -> dict[str, float]:
        return self.score_texts(examples, list(preds))

    def example_scores(self, examples: list[Example], preds) -> dict[str, list[float]]:
        raise NotImplementedError

    # ---- baselines ----
    def answer_key(self, text: str) -> str:
        """When two gold answers count as the same answer (for the most frequent one)."""
        return " ".join(text.split())

    def trivial_baseline(self, examples: list[Example]) -> tuple[str, list[str], str] | None:
        """(name, predictions, how): the eval portion's most frequent first gold answer, for every example."""
        counts = Counter(self.answer_key(self.references(e)[0]) for e in examples)
        key = min(counts, key=lambda k: (-counts[k], k))
        return ("majority", [key] * len(examples),
                f"always {key!r}, the most frequent gold answer ({counts[key]} of {len(examples)} eval examples)")

    def baselines(self, examples: list[Example]) -> dict[str, dict]:
        if not examples:
            return {}
        out: dict[str, dict] = {"chance": {"metrics": None, "how": "none: a generative task has no finite answer set"}}
        trivial = self.trivial_baseline(examples)
        if trivial is not None:
            name, preds, how = trivial
            out[name] = {"metrics": self.score_texts(examples, preds), "how": how}
        return out


def stop_token_ids(tokenizer, stop: str) -> list[int]:
    """Every token id whose decoded text contains `stop` (for "\\n": "\\n", "\\n\\n", ".\\n", ...). Generating one
    of them means the cut at `stop` falls inside it, so generation can end there."""
    if not stop:
        return []
    n = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    return [i for i, t in enumerate(texts) if stop in t and i not in special]
