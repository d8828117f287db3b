"""Predictions of a generative task: fitted prompts, left-padded batches, greedy generation through
`flbench.pipeline.generation.run_generation` — KV-cached through the split runtime (the defense on the wire) or the
unsplit model's `generate(do_sample=False)` — then decode, cut at the stop string, strip.

The task's stop string ends generation early: every token containing it is added to the model's EOS ids for
the run (`stop_token_ids`; the model and its generation config are not modified); see generate_predictions for
a stop string in leading whitespace. Batches are formed longest-prompt first (less padding); the split and the
centralized path see the same batches.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import torch
from tqdm.auto import tqdm

from flbench.core.errors import FlbenchError
from flbench.models import LoadedModel
from flbench.pipeline.generation import eos_ids, left_pad, run_generation
from flbench.tasks.base import Example
from flbench.tasks.generative import GenerativeTask, stop_token_ids

WIRE_SUM_KEYS = ("bytes_total", "messages", "bytes_prefill", "decode_steps")


class _StopView:
    """The model with a generation config of its own whose EOS ids include the task's stop tokens; every
    other attribute (generate, config, ...) is the model's."""

    def __init__(self, model, generation_config) -> None:
        self._model = model
        self.generation_config = generation_config

    def __getattr__(self, name):
        return getattr(self._model, name)


def with_stop_tokens(loaded: LoadedModel, extra: list[int], model=None) -> LoadedModel:
    """A LoadedModel view whose generation config also stops at `extra` (the original EOS ids first, so the
    pad fallback stays the model's EOS)."""
    model = loaded.model if model is None else model
    cfg = copy.deepcopy(model.generation_config)
    eos = eos_ids(model)
    if cfg.pad_token_id is None:  # keep run_generation's pad choice (the model's first EOS), not a stop token
        cfg.pad_token_id = eos[0] if eos else 0
    cfg.eos_token_id = eos + [i for i in extra if i not in eos]
    return replace(loaded, model=_StopView(model, cfg))


def prompt_budget(task: GenerativeTask, model) -> int:
    """Prompt tokens allowed: the task's max_prompt_tokens, within the model's positions minus the answer."""
    max_pos = getattr(model.config, "max_position_embeddings", None)
    budget = task.max_prompt_tokens
    if max_pos is not None:
        budget = min(budget, int(max_pos) - task.max_new_tokens)
    if budget < 1:
        raise FlbenchError(f"task {task.name}: no room for a prompt within the model's {max_pos} positions")
    return budget


@dataclass
class TextPredictions:
    predictions: list[str]  # cut and stripped
    raw: list[str]  # decoded generated text before the cut
    prompts: list[str]  # the fitted prompt texts
    wire: dict = field(default_factory=dict)
    new_tokens: int = 0
    rounds: int = 0  # generation passes (> 1 when some answer started with a stop string in leading whitespace)


@torch.no_grad()
def generate_predictions(task: GenerativeTask, examples: list[Example], loaded: LoadedModel, runtime=None,
                         model=None, batch_size: int = 8, progress: bool = False) -> TextPredictions:
    """Greedy predictions for `examples`: through `runtime` (split, KV-cached) when given, else through
    `model` (default loaded.model) unsplit.

    The prediction is the generated text with leading whitespace removed, cut at the first stop string
    (`task.postprocess`), from at most `task.max_new_tokens` tokens. Generation stops at the model's EOS and
    at any token containing the stop string; a sample whose stop string fell in leading whitespace (an
    instruct model's newline right after "Summary:") is not finished: it is continued in a further pass from
    its prompt + the tokens generated so far, with the rest of its token budget, until it holds a stop string
    after text, emits EOS or spends the budget. Greedy decoding is deterministic, so this gives the text that
    one uninterrupted generation would give, while every other sample still ends at its first stop token."""
    if batch_size < 1:
        raise FlbenchError(f"--batch-size {batch_size}: must be a positive integer")
    tok = loaded.tokenizer
    base_model = loaded.model if model is None else model
    budget = prompt_budget(task, base_model)
    prompts = [task.fit_prompt(ex, tok, budget) for ex in examples]
    rows = [tok(p)["input_ids"][-budget:] for p in prompts]
    stops = set(stop_token_ids(tok, task.stop))
    model_eos = set(eos_ids(base_model))
    view = with_stop_tokens(loaded, sorted(stops), base_model)
    pad = view.model.generation_config.pad_token_id
    mode = "kv-cache" if runtime is not None else "centralized"
    max_new = task.max_new_tokens
    gen: list[list[int]] = [[] for _ in rows]
    wire = dict.fromkeys(WIRE_SUM_KEYS, 0)
    pending, rounds = list(range(len(rows))), 0
    bar = tqdm(total=len(rows), desc=task.name, unit="ex", disable=not progress)
    while pending:
        rounds += 1
        order = sorted(pending, key=lambda i: -(len(rows[i]) + len(gen[i])))  # longest first: less padding
        pending = []
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = left_pad([rows[i] + gen[i] for i in idx], pad)
            res = run_generation(view, ids, mask, max(max_new - len(gen[i]) for i in idx), mode=mode, runtime=runtime)
            if runtime is not None:  # run_generation resets the wire counters per call: sum them here
                for k in WIRE_SUM_KEYS:
                    wire[k] += int(res.wire.get(k, 0))
            for row, i in enumerate(idx):
                new = res.token_ids[row][: max_new - len(gen[i])]
                gen[i] += new
                unfinished = (len(gen[i]) < max_new and new and new[-1] in stops and new[-1] not in model_eos
                              and task.stop not in tok.decode(gen[i], skip_special_tokens=True).lstrip())
                if unfinished:
                    pending.append(i)
                else:
                    bar.update(1)
    bar.close()
    raw = [tok.decode(g, skip_special_tokens=True) for g in gen]
    return TextPredictions([task.postprocess(t) for t in raw], raw, prompts, wire, sum(len(g) for g in gen), rounds)
