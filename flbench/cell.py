"""One benchmark cell (`flbench run`, and every cell of `flbench sweep`).

A cell is a plain dict (JSON-able, hashed into its identity):

    {"model": "smollm2-135m", "split": "2,2" | None,          # None = centralized reference (no wire)
     "defense": {"name": "gaussian", "sigma": 1.0, "relative": True},
     "task": {"name": "sst2", "limit": 100} | None,
     "finetune": {"steps": 50, "batch_size": 8, "lr": 1e-3, "max_length": 256, "lora_rank": 8} | None,
     "attacks": ["embedding-nn", "learned-inversion"], "attack_params": {"learned-inversion": {"steps": 200}},
     "victims": {"data": "private-records", "limit": 50, "max_length": 64},
     "aux": {"data": ["xsum", "sst2"], "limit": 2000},
     "seed": 0}

Flow, all on one split runtime per stage: (optional) LoRA fine-tuning on the task's training portion with the
defense on the wire → utility on the task's eval portion through the split (defense on) → for each attack:
capture of the victim traffic the server saw through the same (fine-tuned) client, the attack fitted on
public text against the known defense, recovery metrics with CIs. One record per (cell, attack); a cell
without attacks gives one record with `attack: null`.

Attacks on a fine-tuned client: the attacker knows the public pretrained weights, not the client's private
adapters (threat model in DESIGN.md), so `Knowledge` is the pretrained model while the capture runs through
the fine-tuned parts.
"""
from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

from flbench.errors import FlbenchError

CELL_KEYS = ("model", "split", "defense", "task", "finetune", "attacks", "attack_params", "victims", "aux", "seed")
DEFAULTS: dict[str, Any] = {
    "model": "smollm2-135m", "split": "2,2", "defense": {"name": "none"}, "task": None, "finetune": None,
    "attacks": [], "attack_params": {}, "victims": {"data": "private-records", "limit": 50, "max_length": 64},
    "aux": {"data": ["xsum", "sst2"], "limit": 2000}, "seed": 0,
}
FINETUNE_KEYS = ("steps", "batch_size", "lr", "max_length", "lora_rank", "lora_alpha")


def normalize_cell(cell: dict) -> dict:
    """Defaults filled in, unknown keys refused (one-line errors naming the key and the accepted ones)."""
    unknown = sorted(set(cell) - set(CELL_KEYS))
    if unknown:
        raise FlbenchError(f"cell key {unknown[0]!r}: accepted keys are {', '.join(CELL_KEYS)}")
    out = copy.deepcopy(DEFAULTS)
    out.update(copy.deepcopy(cell))
    if isinstance(out["defense"], str):
        out["defense"] = {"name": out["defense"]}
    if isinstance(out["task"], str):
        out["task"] = {"name": out["task"]}
    if out["split"] is None and (out["attacks"] or out["defense"].get("name", "none") != "none"):
        raise FlbenchError("a centralized cell (split null) has no wire: no defense and no attacks")
    if out["finetune"] is not None:
        bad = sorted(set(out["finetune"]) - set(FINETUNE_KEYS))
        if bad:
            raise FlbenchError(f"finetune key {bad[0]!r}: accepted keys are {', '.join(FINETUNE_KEYS)}")
        if out["task"] is None:
            raise FlbenchError("finetune needs a task (its training portion is the training data)")
    return out


_MODELS: dict[str, Any] = {}


def _model(name: str):
    """Models are loaded once per process (a sweep runs many cells on the same weights; parts are copies)."""
    from flbench.models import load_model

    if name not in _MODELS:
        _MODELS[name] = load_model(name)
    return _MODELS[name]


def make_cell_defense(d: dict, seed: int):
    from defenses import make_defense, make_generator

    params = {k: v for k, v in d.items() if k != "name"}
    return make_defense(d.get("name", "none"), **params), make_generator(seed)


def _finetune(cell: dict, loaded, spec, workdir: Path, progress: bool) -> tuple[Path, dict]:
    from flbench.finetune import TrainConfig, model_meta, task_samples, train
    from flbench.tasks import get_task
    from splits.runtime import SplitRuntime
    from splits.training import LoraSpec

    ft = cell["finetune"]
    task = get_task(cell["task"]["name"])
    cfg = TrainConfig(steps=int(ft.get("steps", 50)), batch_size=int(ft.get("batch_size", 8)),
                      max_length=int(ft.get("max_length", 256)), lr=float(ft.get("lr", 1e-3)), seed=cell["seed"])
    lora = LoraSpec(rank=int(ft.get("lora_rank", 8)), alpha=float(ft.get("lora_alpha", 16.0)))
    defense, gen = make_cell_defense(cell["defense"], cell["seed"])
    centralized = spec is None
    if centralized:
        from splits.partition import parse_split

        spec = parse_split("2,2")  # layout of the saved adapters only; the unsplit model trains
    rt = SplitRuntime(loaded, spec, defense=defense, generator=gen)
    samples = task_samples(loaded.tokenizer, task, task.load("train"), cfg.max_length)
    summary = train(rt, samples, cfg, lora, workdir, model_meta(loaded, rt, defense), progress=progress,
                    centralized=centralized)
    return workdir, summary


def _utility(cell: dict, loaded, spec, checkpoint, progress: bool) -> tuple[dict | None, dict]:
    from flbench.evaluate import evaluate
    from flbench.tasks import get_task

    if cell["task"] is None:
        return None, {}
    t = cell["task"]
    task = get_task(t["name"])
    defense, gen = make_cell_defense(cell["defense"], cell["seed"])
    res = evaluate(task, loaded, spec, None if spec is None else defense, gen, limit=t.get("limit"),
                   batch_size=int(t.get("batch_size", 8)), checkpoint=checkpoint, progress=progress, summary=False)
    metrics = res["metrics"]
    primary = getattr(task, "primary", None) or next(iter(metrics))
    return ({"name": task.name, "family": getattr(task, "family", None), "metrics": metrics, "primary": primary,
             "n": res["n"], "checkpoint_trained": checkpoint is not None},
            {"utility_wire_bytes": res["wire"]["bytes_total"], "eval_s": res["seconds"],
             "utility_snr": defense.stats().get("snr_rms") if spec is not None else None})


def _attack(cell: dict, name: str, loaded, spec, checkpoint, progress: bool) -> dict:
    from flbench.attack_run import AttackConfig, _victims, evaluate_attack, fit_attack

    v, aux = cell["victims"], cell["aux"]
    params = tuple(sorted((cell["attack_params"] or {}).get(name, {}).items()))
    cfg = AttackConfig(model=cell["model"], split=cell["split"], attack=name, attack_params=params,
                       data=v.get("data", "private-records"), data_file=v.get("data_file"),
                       aux_data=tuple(aux.get("data", ("xsum", "sst2"))), aux_limit=int(aux.get("limit", 2000)),
                       limit=int(v.get("limit", 50)), max_length=int(v.get("max_length", 64)), seed=cell["seed"])
    defense, gen = make_cell_defense(cell["defense"], cell["seed"])
    records, notes = _victims(cfg)
    fa = fit_attack(cfg, defense, gen, progress=progress, loaded=loaded, checkpoint=checkpoint)
    return evaluate_attack(fa, records, notes)


def run_cell(cell: dict, progress: bool = True, workdir: str | Path | None = None) -> list[dict]:
    """Execute one cell; returns its records (see flbench.records for the schema), not yet written."""
    from flbench.records import config_hash, provenance
    from splits.partition import parse_split

    cell = normalize_cell(cell)
    h = config_hash(cell)
    t_start = time.perf_counter()
    loaded = _model(cell["model"])
    spec = None if cell["split"] is None else parse_split(cell["split"])
    if spec is not None:
        spec.validate(len(loaded.model.model.layers))
    timings: dict[str, float] = {}
    finetune = None
    with tempfile.TemporaryDirectory(prefix=f"flbench-cell-{h}-", dir=workdir) as tmp:
        checkpoint = None
        if cell["finetune"] is not None:
            t0 = time.perf_counter()
            checkpoint, summary = _finetune(cell, loaded, spec, Path(tmp), progress)
            timings["train_s"] = round(time.perf_counter() - t0, 3)
            finetune = {**cell["finetune"], "first_loss": summary["first_loss"],
                        "final_loss": summary["final_loss_mean_last10pct"], "wire_bytes": summary["wire"]["bytes_total"]}
        t0 = time.perf_counter()
        task, uinfo = _utility(cell, loaded, spec, checkpoint, progress)
        timings["eval_s"] = round(time.perf_counter() - t0, 3)
        attack_results = []
        for name in cell["attacks"]:
            t0 = time.perf_counter()
            res = _attack(cell, name, loaded, spec, checkpoint, progress)
            attack_results.append((name, res, round(time.perf_counter() - t0, 3)))
    total = round(time.perf_counter() - t_start, 3)
    prov = provenance()
    d = dict(cell["defense"])
    defense_obj, _ = make_cell_defense(d, cell["seed"])
    base = {
        "schema": 1,
        "config_hash": h,
        "config": cell,
        "seeds": {"seed": cell["seed"]},
        "versions": prov.get("versions"),
        "commit": prov.get("commit"),
        "dirty": prov.get("dirty"),
        "date": prov.get("date"),
        "model": {"name": loaded.name, "weights_sha256": loaded.identity.get("weights_sha256")},
        "split": cell["split"],
        "finetune": finetune,
        "task": task,
    }

    def defense_block(res: dict | None) -> dict:
        params = defense_obj.params() if hasattr(defense_obj, "params") else {}
        snr = (res or {}).get("snr", {}).get("rms") if res else uinfo.get("utility_snr")
        out = {"name": d.get("name", "none"), "params": params, "noise_sigma": params.get("sigma"),
               "relative": bool(params.get("relative", False)), "snr": snr,
               "snr_utility_traffic": uinfo.get("utility_snr"),
               "epsilon": (res or {}).get("epsilon"), "delta": (res or {}).get("delta")}
        if out["epsilon"] is None and hasattr(defense_obj, "epsilon"):
            out["epsilon"], out["delta"] = defense_obj.epsilon(1), defense_obj.delta
        return out

    records = []
    for name, res, secs in attack_results or [(None, None, 0.0)]:
        attack = None
        if res is not None:
            attack = {"name": name, "params": res["attack_params"], "data": res["data"], "n": res["n"],
                      "metrics": res["metrics"], "primary": "token_accuracy",
                      "fit_s": res["seconds"]["fit"], "examples": res["examples"][:2]}
        records.append({
            **base,
            "record_id": f"{h}__{name or 'none'}",
            "defense": defense_block(res),
            "attack": attack,
            "wire": {"bytes_total": uinfo.get("utility_wire_bytes", 0)},
            "timings": {**timings, "attack_s": secs, "total_s": total},
        })
    return records
