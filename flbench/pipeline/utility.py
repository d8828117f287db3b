"""`flbench eval`: score a task's eval portion through the split runtime (defense on the wire) or, for
comparison, through the unsplit model under the same budget; optionally with LoRA adapters saved by
`flbench train` (--checkpoint).

Dispatch on the task's kind: "choice" tasks by the log-likelihood of their verbalised answers (one forward per
batch through `rt.forward`); "generate" tasks by greedy generation, KV-cached through the same runtime (the
defense applies to every prefill and decode message) or the unsplit model's `generate(do_sample=False)`, the
text cut at the task's stop string and scored by `task.score_texts`. Output keys: task, model, mode, split,
checkpoint, defense, kind, metrics, primary, ci, baselines, n, seconds, wire (+ for generation: new_tokens, rounds
(generation passes, see flbench.pipeline.textgen) and `examples`: the first three prompt tails, predictions and
references).

`metrics` are the point values; `ci` gives each metric as {"mean", "ci_low", "ci_high", "n"}: a 95% percentile
bootstrap over the eval examples (`utility_ci`); `baselines` what the task says a model must beat on the same
examples (chance, majority label / most frequent answer, lead; flbench.tasks.base).

`limit` N: the first N of the eval portion after a seeded shuffle (SAMPLE_SEED, fixed and independent of the
run's --seed, so every cell of a sweep — split, centralized, any defense — scores the same examples); files
are often ordered (by label, by story), so the first N rows would not be a sample. Without a limit, the
whole portion in file order. `sample` in the output says which."""
from __future__ import annotations

import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from flbench.core.errors import FlbenchError
from flbench.models import LoadedModel
from flbench.tasks import Task, get_task
from flbench.tasks.scoring import predict
from splits.partition import SplitSpec, show_value
from splits.runtime import SplitRuntime

WIRE_KEYS = ("bytes_total", "messages")
SAMPLE_SEED = 0  # the shuffle before a --limit keeps N eval examples (not the run's seed: see the module doc)
CI_SEED = 0  # default seed of the utility bootstrap (a cell passes its own seed)
N_SHOWN = 3  # generated examples echoed in the output
PROMPT_TAIL_CHARS = 160


def _bad_checkpoint(where: Path, what: str) -> FlbenchError:
    return FlbenchError(f"--checkpoint {where}: {what}; expected a directory written by flbench train --out "
                        "(run.json + adapter .safetensors files)")


def _field(meta: dict, key: str, kinds: tuple, run_json: Path, what: str):
    v = meta.get(key)
    if not isinstance(v, kinds) or isinstance(v, bool) and bool not in kinds:
        raise _bad_checkpoint(run_json, f"{key!r} is {show_value(v)}; expected {what}")
    return v


def read_checkpoint(ckpt_dir: str | Path) -> dict:
    """run.json of a `flbench train --out DIR` directory, checked for shape (a malformed or hand-edited file
    fails here with one line naming it, before any model loads), plus a header check of every adapter file."""
    from safetensors import SafetensorError, safe_open

    from splits.partition import parse_split
    from splits.training import PART_NAMES

    d = Path(ckpt_dir)
    p = d / "run.json"
    if not d.is_dir():
        raise _bad_checkpoint(d, "no such directory" if not d.exists() else "not a directory")
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise _bad_checkpoint(p, f"cannot read run.json written by flbench train ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad_checkpoint(p, f"not valid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(meta, dict):
        raise _bad_checkpoint(p, f"holds a JSON {type(meta).__name__}; expected an object with model, split, lora")
    for k in ("model", "split", "lora"):
        if k not in meta:
            raise _bad_checkpoint(p, f"lacks the {k!r} field")
    model = _field(meta, "model", (dict,), p, "an object with name and weights_sha256")
    for k in ("name", "weights_sha256"):
        _field(model, k, (str,), p, "a string")
    parse_split(_field(meta, "split", (str,), p, 'a "P,Q" string'), option=f"--checkpoint {p}: split")
    lora = _field(meta, "lora", (dict,), p, "an object with rank, alpha, target_modules, parts")
    if _field(lora, "rank", (int,), p, "a positive integer") < 1:
        raise _bad_checkpoint(p, f"lora rank {lora['rank']}; expected a positive integer")
    alpha = _field(lora, "alpha", (int, float), p, "a number")
    if not (math.isfinite(alpha) and alpha > 0):
        raise _bad_checkpoint(p, f"lora alpha {alpha}; expected a finite number > 0")
    if "dropout" in lora:
        _field(lora, "dropout", (int, float), p, "a number")
    for k in ("target_modules", "parts"):
        v = _field(lora, k, (list,), p, "a non-empty list of strings")
        if not v or not all(isinstance(x, str) for x in v):
            raise _bad_checkpoint(p, f"lora {k} {show_value(v)}; expected a non-empty list of strings")
    if not set(lora["parts"]) <= set(PART_NAMES):
        raise _bad_checkpoint(p, f"lora parts {lora['parts']}; accepted parts are {', '.join(PART_NAMES)}")
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise _bad_checkpoint(d, "no client0.head/client0.tail/trunk .safetensors adapter files")
    for f in files:  # header check only (cheap); values are read and checked in apply_checkpoint
        try:
            with safe_open(str(f), framework="pt") as h:
                h.keys()
        except (SafetensorError, OSError) as e:
            raise _bad_checkpoint(f, f"not a readable safetensors file ({e})") from None
    return meta


def check_checkpoint(meta: dict, loaded: LoadedModel, spec: SplitSpec, ckpt_dir, any_split: bool = False) -> None:
    """The checkpoint's model must be `loaded`; its split must be `spec` unless `any_split` (then
    `apply_checkpoint` moves the adapters to `spec`, see flbench.pipeline.repartition)."""
    want, have = meta["model"], loaded.identity
    if want.get("weights_sha256") != have["weights_sha256"]:
        raise FlbenchError(f"--checkpoint {str(ckpt_dir)!r} was trained on model {want.get('name')!r} "
                           f"(weights {str(want.get('weights_sha256'))[:12]}), not {have['name']!r} "
                           f"(weights {have['weights_sha256'][:12]})")
    if meta["split"] != str(spec) and not any_split:
        raise FlbenchError(f"--checkpoint {str(ckpt_dir)!r} was trained at --split {meta['split']}, not {spec}")


def apply_checkpoint(rt: SplitRuntime, meta: dict, ckpt_dir):
    """Inject the run's LoRA adapters into rt's parts and load their saved values. Returns the LoraSpec.
    A checkpoint at another split than rt's, or one rewritten by `flbench repartition` (`lora.blocks`), is
    loaded by moving the adapters with their blocks (flbench.pipeline.repartition.load_into)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from splits.training import LoraSpec, apply_lora

    lo = meta["lora"]
    if meta["split"] != str(rt.spec) or "blocks" in lo:
        from flbench.pipeline.repartition import load_into

        return load_into(rt, meta, ckpt_dir)
    lora = LoraSpec(rank=int(lo["rank"]), alpha=float(lo["alpha"]), dropout=float(lo.get("dropout", 0.0)),
                    target_modules=tuple(lo["target_modules"]), parts=tuple(lo["parts"]))
    apply_lora(rt, lora)
    loaded_any = False
    for name, part in rt.modules().items():
        f = Path(ckpt_dir) / f"{name}.safetensors"
        if not f.is_file():
            continue
        try:  # safetensors only: no pickle is ever loaded from a checkpoint
            state = load_file(str(f))
        except (SafetensorError, OSError) as e:
            raise _bad_checkpoint(f, f"not a readable safetensors file ({e})") from None
        nonfinite = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
        if nonfinite is not None:
            raise _bad_checkpoint(f, f"adapter weight {nonfinite} holds NaN/Inf values")
        try:
            missing, unexpected = part.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatch
            raise _bad_checkpoint(f, f"adapter shapes do not match the {name} part ({str(e).splitlines()[-1].strip()})") from None
        bad = unexpected or [k for k in missing if "lora_" in k]
        if bad:
            raise _bad_checkpoint(f, f"adapter keys do not match the {name} part (e.g. {bad[0]})")
        loaded_any = True
        part.eval()
    if not loaded_any:
        raise _bad_checkpoint(Path(ckpt_dir), "no client0.head/client0.tail/trunk .safetensors adapter files")
    return lora


def utility_ci(task: Task, examples: list, preds: list, seed: int = CI_SEED) -> dict[str, dict]:
    """95% CI of every metric of `task.score(examples, preds)`, as {metric: {"mean", "ci_low", "ci_high", "n"}}
    ("mean" is the metric's point value, "n" the number of resampled units).

    Metrics that are means over examples (`task.example_scores`: accuracy, ROUGE, CoQA F1/EM, ...) are a
    percentile bootstrap of that mean (`bootstrap_ci`). Corpus-level metrics (CB macro-F1, MultiRC F1a/EM0)
    are recomputed by `task.score` on each resample of the task's `ci_unit`: examples, or groups (a MultiRC
    question with all its answer options; a question drawn twice counts twice: its j-th draw is renamed
    "<group>#j"). Seeded, so the same predictions always give the same interval."""
    from collections import Counter
    from dataclasses import replace

    from flbench.metrics.stats import bootstrap_ci, bootstrap_statistic

    point = task.score(examples, preds)
    per = task.example_scores(examples, preds)
    out = {m: {**bootstrap_ci(per[m], seed=seed), "mean": float(point[m])} for m in point if m in per}
    corpus = [m for m in point if m not in per]
    if corpus:
        if task.ci_unit == "group":
            units: dict[str, list[int]] = {}
            for i, e in enumerate(examples):
                units.setdefault(e.group or e.id, []).append(i)
            members = list(units.values())
        else:
            members = [[i] for i in range(len(examples))]
        copies: dict[tuple[int, int], list] = {}  # (unit, j): the unit's examples as its j-th draw in a resample

        def draw(u: int, j: int) -> list:
            if (u, j) not in copies:
                copies[u, j] = [replace(examples[i], group=f"{examples[i].group or examples[i].id}#{j}")
                                if task.ci_unit == "group" and j else examples[i] for i in members[u]]
            return copies[u, j]

        def statistic(idx) -> list[float]:
            exs, ps, seen = [], [], Counter()
            for u in idx.tolist():
                exs += draw(u, seen[u])
                ps += [preds[i] for i in members[u]]
                seen[u] += 1
            s = task.score(exs, ps)
            return [s[m] for m in corpus]

        for m, ci in zip(corpus, bootstrap_statistic(len(members), statistic, seed=seed)):
            out[m] = ci
    return {m: out[m] for m in point}


def evaluate(task: str | Task, loaded: LoadedModel, spec: SplitSpec | None, defense=None,
             generator: torch.Generator | None = None, limit: int | None = None, batch_size: int = 8,
             data_dir=None, wire_dtype: str = "fp32", checkpoint: str | Path | None = None,
             progress: bool = True, summary: bool | None = None, ci_seed: int = CI_SEED,
             dtype: str | None = None, client_device: str | None = None, server_device: str | None = None) -> dict:
    """Score `task` on its fixed eval portion. `spec=None` runs the unsplit model (centralized).

    `progress`: a tqdm bar on stderr; `summary` (default: same as progress): a summary line on stderr;
    `ci_seed`: seed of the bootstrap behind `ci`. `dtype` / `client_device` / `server_device`: the split's compute
    dtype and party devices (default: the loaded model's); the unsplit model runs as loaded (`load_model`'s
    dtype and device), or, with `dtype`, as a cast copy."""
    task = get_task(task) if isinstance(task, str) else task
    examples = task.load("eval", data_dir, limit, seed=None if limit is None else SAMPLE_SEED)
    sample = "all, file order" if limit is None else f"seeded shuffle (seed {SAMPLE_SEED}), first {len(examples)}"
    centralized = spec is None
    if centralized and defense is not None and getattr(defense, "name", "none") != "none":
        raise FlbenchError(f"centralized scoring has no wire for defense {defense.name!r}")
    meta = read_checkpoint(checkpoint) if checkpoint is not None else None
    rt = None
    if centralized:
        model = loaded.model
        if meta is not None:  # the adapters live on split parts; rebuild the unsplit twin from them
            from splits.partition import parse_split
            from splits.training import centralized_twin

            ck_spec = parse_split(meta["split"])
            check_checkpoint(meta, loaded, ck_spec, checkpoint)
            tmp = SplitRuntime(loaded, ck_spec, dtype=dtype, client_device=client_device, server_device=server_device)
            model = centralized_twin(tmp, apply_checkpoint(tmp, meta, checkpoint))
        if meta is None and dtype not in (None, loaded.dtype):
            from splits.parts import place

            model = place(copy.deepcopy(model), loaded.device, dtype)
        model.eval()

        def forward(ids, mask):
            return model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.cpu()
    else:
        spec.validate(len(loaded.model.model.layers))
        rt = SplitRuntime(loaded, spec, wire_dtype=wire_dtype, defense=defense, generator=generator, dtype=dtype,
                          client_device=client_device, server_device=server_device)
        if meta is not None:  # at another split than the checkpoint's, the adapters move with their blocks
            check_checkpoint(meta, loaded, spec, checkpoint, any_split=True)
            apply_checkpoint(rt, meta, checkpoint)
        forward = rt.forward
    extra: dict = {}
    t0 = time.perf_counter()
    if getattr(task, "kind", "choice") == "generate":
        from flbench.pipeline.textgen import generate_predictions

        gen = generate_predictions(task, examples, loaded, runtime=rt, model=None if rt is not None else model,
                                   batch_size=batch_size, progress=progress)
        seconds = time.perf_counter() - t0
        preds = gen.predictions
        metrics = task.score_texts(examples, preds)
        wire = gen.wire if rt is not None else {k: 0 for k in gen.wire}
        extra = {"new_tokens": gen.new_tokens, "rounds": gen.rounds,
                 "examples": [{"prompt_tail": p[-PROMPT_TAIL_CHARS:], "prediction": pred, "references": task.references(e)}
                              for p, pred, e in list(zip(gen.prompts, gen.predictions, examples))[:N_SHOWN]]}
    else:
        preds, _ = predict(task, examples, loaded.tokenizer, forward, batch_size, loaded.context_length, progress)
        seconds = time.perf_counter() - t0
        metrics = task.score(examples, preds)
        wire = {k: rt.wire.stats()[k] for k in WIRE_KEYS} if rt is not None else {k: 0 for k in WIRE_KEYS}
    out = {
        "task": task.name,
        "kind": getattr(task, "kind", "choice"),
        "model": loaded.identity,
        "mode": "centralized" if centralized else "split",
        "compute": ({"dtype": dtype or loaded.dtype, "device": str(model.device)} if rt is None else rt.placement()),
        "split": None if centralized else str(spec),
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "defense": defense.describe() if defense is not None and rt is not None else None,
        "metrics": {k: round(v, 6) for k, v in metrics.items()},
        "primary": task.primary,
        "ci": _rounded(utility_ci(task, examples, preds, ci_seed)),
        "baselines": {k: {**b, "metrics": _rounded(b["metrics"])} for k, b in task.baselines(examples).items()},
        "n": len(examples),
        "sample": sample,
        "seconds": round(seconds, 3),
        "wire": wire,
        **extra,
    }
    if progress if summary is None else summary:
        tqdm.write(summary_line(out), file=sys.stderr)
    return out


def _rounded(x):
    """Metric values rounded to 6 decimals (as `metrics`), recursively; None stays None."""
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, float):
        return round(x, 6) if math.isfinite(x) else None
    return x


def with_ci(value, ci: dict | None) -> str:
    """"0.8475 [0.8234, 0.8716]" (the point value and its 95% CI; the point alone without a CI)."""
    if value is None:
        return "–"
    if not ci or ci.get("ci_low") is None or ci.get("ci_high") is None:
        return f"{value:.4f}"
    return f"{value:.4f} [{ci['ci_low']:.4f}, {ci['ci_high']:.4f}]"


def baselines_text(baselines: dict | None, metric: str) -> str:
    """"chance 0.500, majority 0.509" for `metric` (the baselines that score it)."""
    parts = [f"{name} {b['metrics'][metric]:.3f}" for name, b in (baselines or {}).items()
             if b.get("metrics") and b["metrics"].get(metric) is not None]
    return ", ".join(parts)


def summary_line(o: dict) -> str:
    where = "centralized" if o["mode"] == "centralized" else f"split {o['split']}"
    ci = o.get("ci") or {}
    ms = ", ".join(f"{k} {with_ci(v, ci.get(k))}" for k, v in o["metrics"].items())
    primary = o.get("primary") or next(iter(o["metrics"]), None)
    base = baselines_text(o.get("baselines"), primary) if primary else ""
    base = f" (95% CI; {primary} baselines: {base})" if base else " (95% CI)" if ci else ""
    wire = "" if o["mode"] == "centralized" else f"; wire {o['wire']['bytes_total']} B in {o['wire']['messages']} messages"
    return f"{o['task']} ({where}, n={o['n']}): {ms}{base} in {o['seconds']:.1f} s{wire}"

