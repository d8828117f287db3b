"""One benchmark cell (`flbench run`, and every cell of `flbench sweep`).

A cell is the plain dict built by `flbench.experiments.sweep.make_cell` (the same for `flbench run` and every cell of a
sweep, so both hash alike):

    {"model": "smollm2-135m", "split": "2,2" | None,          # None = centralized reference (no wire)
     "defense": {"name": "gaussian", "params": {"sigma": 1.0, "relative": True}},
     "task": {"name": "sst2", "limit": 100} | None,
     "finetune": {"steps": 50, "batch_size": 8, "lr": 1e-3, "max_length": 256, "lora_rank": 8} | None,
     "attacks": ["embedding-nn", "learned-inversion"], "attack_params": {"learned-inversion": {"steps": 200}},
     "victims": {"data": "private-records", "limit": 50, "aux_data": ["xsum", "sst2"]} | None,
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

from flbench.core.errors import FlbenchError

FINETUNE_KEYS = ("steps", "batch_size", "lr", "max_length", "lora_rank", "lora_alpha")
VICTIM_DEFAULTS = {"data": "private-records", "limit": 50, "max_length": 64, "aux_data": ["xsum", "sst2"],
                   "aux_limit": 2000}


def check_cell(cell: dict) -> dict:
    """Refuse what cannot run (one-line errors naming the key and what is accepted); the cell is not changed,
    since its hash is its identity."""
    for k in ("model", "split", "defense", "seed"):
        if k not in cell:
            raise FlbenchError(f"cell: missing key {k!r}")
    attacks = cell.get("attacks") or []
    if cell["split"] is None and (attacks or cell["defense"].get("name", "none") != "none"):
        raise FlbenchError("a centralized cell (split null) has no wire: no defense and no attacks")
    ft = cell.get("finetune")
    if ft is not None:
        bad = sorted(set(ft) - set(FINETUNE_KEYS))
        if bad:
            raise FlbenchError(f"finetune key {bad[0]!r}: accepted keys are {', '.join(FINETUNE_KEYS)}")
        if cell.get("task") is None:
            raise FlbenchError("finetune needs a task (its training portion is the training data)")
    return cell


def _victims_of(cell: dict) -> dict:
    return {**VICTIM_DEFAULTS, **(cell.get("victims") or {})}


_MODELS: dict[str, Any] = {}


def _model(name: str):
    """Models are loaded once per process (a sweep runs many cells on the same weights; parts are copies)."""
    from flbench.models import load_model

    if name not in _MODELS:
        _MODELS[name] = load_model(name)
    return _MODELS[name]


def make_cell_defense(d: dict, seed: int):
    from defenses import make_defense, make_generator

    return make_defense(d.get("name", "none"), **dict(d.get("params") or {})), make_generator(seed)


def _finetune(cell: dict, loaded, spec, workdir: Path, progress: bool) -> tuple[Path, dict]:
    from flbench.pipeline.finetune import TrainConfig, model_meta, task_samples, train
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
    from flbench.pipeline.utility import evaluate
    from flbench.tasks import get_task

    if cell.get("task") is None:
        return None, {}
    t = cell["task"]
    task = get_task(t["name"])
    defense, gen = make_cell_defense(cell["defense"], cell["seed"])
    res = evaluate(task, loaded, spec, None if spec is None else defense, gen, limit=t.get("limit"),
                   batch_size=int(t.get("batch_size", 8)), checkpoint=checkpoint, progress=progress, summary=False)
    metrics = res["metrics"]
    primary = task.primary if task.primary in metrics else next(iter(metrics))
    return ({"name": task.name, "family": getattr(task, "family", None), "metrics": metrics, "primary": primary,
             "n": res["n"], "checkpoint_trained": checkpoint is not None},
            {"utility_wire_bytes": res["wire"]["bytes_total"], "eval_s": res["seconds"],
             "utility_snr": defense.stats().get("snr_rms") if spec is not None else None})


_ATTACKS: dict[str, dict] = {}


def _attack_key(cell: dict, name: str) -> str | None:
    """What an attack's result depends on. Without fine-tuning the client runs the pretrained weights, so the
    result does not depend on the cell's task: cells of a sweep that differ only in the task share it
    (in-process memo; every record still carries the full result)."""
    import json

    if cell.get("finetune") is not None:
        return None
    keep = {k: cell.get(k) for k in ("model", "split", "defense", "victims", "seed")}
    keep["attack"], keep["params"] = name, (cell.get("attack_params") or {}).get(name, {})
    return json.dumps(keep, sort_keys=True)


def seed_attack_memo(records: list[dict]) -> int:
    """Reuse attack results already on disk (records of earlier cells of a resumed sweep) for cells whose
    attack key is the same (`_attack_key`: everything the result depends on; all draws are seeded, so a rerun
    would reproduce them). Returns how many results were taken."""
    n = 0
    for r in records:
        a = r.get("attack")
        if not a or not isinstance(r.get("config"), dict):
            continue
        key = _attack_key(r["config"], a["name"])
        if key is None or key in _ATTACKS:
            continue
        d = r.get("defense") or {}
        _ATTACKS[key] = {"attack_params": a.get("params"), "data": a.get("data"), "n": a.get("n"),
                         "metrics": a.get("metrics"), "seconds": {"fit": a.get("fit_s")},
                         "examples": a.get("examples", []), "snr": {"rms": d.get("snr")},
                         "epsilon": d.get("epsilon"), "delta": d.get("delta"), "reused_from": r.get("record_id")}
        n += 1
    return n


def _attack_config(cell: dict, name: str):
    from flbench.pipeline.attack import AttackConfig

    v = _victims_of(cell)
    params = tuple(sorted((cell.get("attack_params") or {}).get(name, {}).items()))
    return AttackConfig(model=cell["model"], split=cell["split"], attack=name, attack_params=params,
                        data=v["data"], data_file=v.get("data_file"), aux_data=tuple(v["aux_data"]),
                        aux_limit=int(v["aux_limit"]), limit=int(v["limit"]), max_length=int(v["max_length"]),
                        seed=cell["seed"])


def _attacks(cell: dict, loaded, checkpoint, progress: bool) -> list[tuple[str, dict, float]]:
    """Every attack of the cell on ONE capture of the victim traffic through one client runtime (the server
    saw that traffic once; all attacks read the same messages). Results are memoised (see `_attack_key`)."""
    from flbench.pipeline.attack import _aux, _victims, capture_victims, evaluate_attack, fit_attack, victim_runtime

    names = list(cell.get("attacks") or [])
    out: dict[str, tuple[dict, float]] = {}
    for name in names:
        key = _attack_key(cell, name)
        if key is not None and key in _ATTACKS:
            out[name] = (copy.deepcopy(_ATTACKS[key]), 0.0)
    todo = [n for n in names if n not in out]
    if todo:
        t0 = time.perf_counter()
        cfg0 = _attack_config(cell, todo[0])
        records, notes = _victims(cfg0)
        defense, gen = make_cell_defense(cell["defense"], cell["seed"])
        rt = victim_runtime(cfg0, loaded, defense, gen, checkpoint)
        captured = capture_victims(rt, defense, records, cfg0.max_length)
        aux = _aux(cfg0, None if cfg0.data_file else cfg0.data)
        shared_s = (time.perf_counter() - t0) / len(todo)
        for name in todo:
            t1 = time.perf_counter()
            cfg = _attack_config(cell, name)
            fa = fit_attack(cfg, defense, gen, progress=progress, rt=rt, aux=aux)
            res = evaluate_attack(fa, records, notes, captured=captured)
            out[name] = (res, round(shared_s + time.perf_counter() - t1, 3))
            key = _attack_key(cell, name)
            if key is not None:
                _ATTACKS[key] = copy.deepcopy(res)
    return [(n, *out[n]) for n in names]


def run_cell(cell: dict, progress: bool = True, workdir: str | Path | None = None) -> list[dict]:
    """Execute one cell; returns its records (see flbench.experiments.records for the schema), not yet written."""
    from flbench.core.canonical import config_hash
    from flbench.core.provenance import provenance
    from splits.partition import parse_split

    check_cell(cell)
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
        if cell.get("finetune") is not None:
            t0 = time.perf_counter()
            checkpoint, summary = _finetune(cell, loaded, spec, Path(tmp), progress)
            timings["train_s"] = round(time.perf_counter() - t0, 3)
            finetune = {**cell["finetune"], "first_loss": summary["first_loss"],
                        "final_loss": summary["final_loss_mean_last10pct"], "wire_bytes": summary["wire"]["bytes_total"]}
        t0 = time.perf_counter()
        task, uinfo = _utility(cell, loaded, spec, checkpoint, progress)
        timings["eval_s"] = round(time.perf_counter() - t0, 3)
        attack_results = _attacks(cell, loaded, checkpoint, progress)
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
            if res.get("reused_from"):
                attack["reused_from"] = res["reused_from"]
        records.append({
            **base,
            "record_id": f"{h}__{name or 'none'}",
            "defense": defense_block(res),
            "attack": attack,
            "wire": {"bytes_total": uinfo.get("utility_wire_bytes", 0)},
            "timings": {**timings, "attack_s": secs, "total_s": total},
        })
    from flbench.pipeline.attack import _finite

    return [_finite(r) for r in records]
