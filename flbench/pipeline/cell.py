"""One benchmark cell (`flbench run`, and every cell of `flbench sweep`), run from its typed, validated
`RunConfig` (flbench.pipeline.config): the same config for `flbench run` and every sweep cell, so both hash
alike, and the resolved config is what each record stores.

Flow, all on one split runtime per stage: (optional) LoRA fine-tuning on the task's training portion with the
defense on the wire → utility on the task's eval portion through the split (defense on) → for each attack:
capture of the victim traffic the server saw through the same (fine-tuned) client, the attack fitted on
public text against the known defense, recovery metrics with CIs. One record per (cell, attack); a cell
without attacks gives one record with `attack: null`.

The record's task block holds the point `metrics`, their 95% bootstrap CIs over the eval examples (`ci`, seeded
by the cell's seed) and the task's `baselines` on the same examples (flbench.pipeline.utility.evaluate); the
attack block names the attack's `primary` metric as the attack class declares it.

Attacks on a fine-tuned client: the attacker knows the public pretrained weights, not the client's private
adapters (threat model in DESIGN.md), so `Knowledge` is the pretrained model while the capture runs through
the fine-tuned parts.

The backward channel: attacks that read gradients (`requires` holds "grad_b", e.g. gradient-label) attack the
cell's OWN fine-tuning traffic — a tap on the training runtime records h_B and dL/dh_B of the first
`victims.limit` training sequences (flbench.pipeline.gradient) — instead of victim texts; each channel is
scored alone (one record per attack). A gradient defense (`grad_defense`) sits on the client tail's edge during
fine-tuning, with its own noise stream; records of such cells carry a `grad_defense` block.

Two privacy statements for a defense with formal accounting: `defense.accounting` is the VICTIMS' (each victim
text released `victims.releases` times), `finetune.accounting` the TRAINING examples' — each one's h_A crossed
the wire once per epoch, ceil(steps × batch / examples) times, composed by the same accountant (no subsampling
amplification is claimed: batches are not Poisson-sampled).
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

from flbench.core.canonical import canonical_json, finite_or_null, normalize_numbers
from flbench.core.errors import FlbenchError
from flbench.pipeline.config import RunConfig, validate
from flbench.pipeline.scratch import cell_scratch

RECORD_SCHEMA = 2  # version of the records run_cell returns (flbench.experiments.records reads 1 and 2)

_MODELS: dict[str, Any] = {}


def cell_model(name: str):
    """The loaded model `name`, loaded once per process (a sweep runs many cells on the same weights; split
    parts are copies, so cells never change it)."""
    from flbench.models import load_model

    if name not in _MODELS:
        _MODELS[name] = load_model(name)
    return _MODELS[name]


def model_blocks(name: str) -> int:
    """How many blocks model `name` has (for checking splits before any cell runs)."""
    return len(cell_model(name).model.model.layers)


def cell_defense(cfg: RunConfig):
    """A fresh (defense, generator) of the cell: every stage starts from the same seeded noise stream."""
    from defenses import make_defense, make_generator

    return make_defense(cfg.defense.name, **cfg.defense.params), make_generator(cfg.seed)


def cell_grad_defense(cfg: RunConfig):
    """A fresh (defense, generator) for the client's gradient edge, (None, None) without one; its generator
    has its own seeded stream (flbench.pipeline.gradient.grad_seed)."""
    from flbench.pipeline.gradient import grad_defense_and_generator

    return grad_defense_and_generator(cfg.grad_defense.name, cfg.grad_defense.params, cfg.seed)


def _finetune(cfg: RunConfig, loaded, spec, workdir: Path, progress: bool, devices: dict
              ) -> tuple[Path, dict, dict]:
    """Fine-tune the cell's client; returns (checkpoint, summary, info): info["traffic"] holds what gradient
    attacks read (the server's recordings and the client's batches; None without such attacks),
    info["grad_defense"] the gradient defense's record block (None without one)."""
    import math

    from flbench.pipeline.config import gradient_attacks
    from flbench.pipeline.finetune import TrainConfig, model_meta, task_samples, train
    from flbench.pipeline.gradient import (
        TrainingTap,
        TrainingTraffic,
        grad_defense_block,
        task_answers,
        task_chance,
    )
    from flbench.tasks import get_task
    from splits.runtime import SplitRuntime
    from splits.training import LoraSpec

    ft = cfg.finetune
    task = get_task(cfg.task.name)
    tcfg = TrainConfig(steps=ft.steps, batch_size=ft.batch_size, max_length=ft.max_length, lr=ft.lr, seed=cfg.seed)
    lora = LoraSpec(rank=ft.lora_rank, alpha=ft.lora_alpha)
    defense, gen = cell_defense(cfg)
    centralized = spec is None
    if centralized:
        from splits.partition import parse_split

        # layout of the saved adapters only; the unsplit model trains. 2,2 as in every committed record (the LoRA
        # initialisation is seeded per part); 1,1 for models too shallow for it (fewer than 5 blocks)
        spec = parse_split("2,2" if len(loaded.model.model.layers) >= 5 else "1,1")
    grad_defense, grad_gen = (None, None) if centralized else cell_grad_defense(cfg)
    rt = SplitRuntime(loaded, spec, wire_dtype=cfg.wire_dtype, defense=defense, generator=gen, dtype=cfg.dtype,
                      client_device=devices.get("client_device"), server_device=devices.get("server_device"),
                      grad_defense=grad_defense, grad_generator=grad_gen)
    examples = task.load("train")
    samples = task_samples(loaded.tokenizer, task, examples, tcfg.max_length)
    traffic = None
    if gradient_attacks(cfg.attacks):  # the server's recordings of the training traffic, and what was sent
        traffic = TrainingTraffic(TrainingTap(cfg.victims.limit), rt=rt, task=task.name,
                                  answers=task_answers(loaded.tokenizer, task, examples, tcfg.max_length),
                                  chance=task_chance(task), examples_per_epoch=len(samples))
        rt.wire.taps.append(traffic.tap)
    summary = train(rt, samples, tcfg, lora, workdir, model_meta(loaded, rt, defense, grad_defense),
                    progress=progress, centralized=centralized, trace=None if traffic is None else traffic.trace)
    releases = math.ceil(tcfg.steps * tcfg.batch_size / len(samples))  # epochs: each example's gradient releases
    return workdir, summary, {"traffic": traffic, "releases": releases,
                              "grad_defense": None if grad_defense is None else grad_defense_block(grad_defense, releases)}


def _finetune_shared(cfg: RunConfig, loaded, spec, workdir: Path, progress: bool, devices: dict, fit_cache
                     ) -> tuple[Path, dict, dict, dict | None]:
    """`_finetune` through the fine-tuning cache beside `fit_cache` (flbench.pipeline.finetune_cache) when there is
    one: a cell whose fine-tuning an earlier cell already ran loads its adapters, unless its attacks read the
    training traffic (then it trains, and stores). The fourth value is what the record says about the cache
    ({"key", "hit"}), None without one."""
    from flbench.pipeline import finetune_cache as ftc
    from flbench.pipeline.config import gradient_attacks

    if fit_cache is None:
        return (*_finetune(cfg, loaded, spec, workdir, progress, devices), None)
    root = fit_cache.dir / "finetune"
    inputs = ftc.key_inputs(cfg, loaded, devices)
    needs_traffic = bool(gradient_attacks(cfg.attacks))
    info = None if needs_traffic else ftc.load(root, inputs, workdir)
    if info is not None:
        ft_info = {"traffic": None, "releases": info["releases"], "grad_defense": info["grad_defense"]}
        return workdir, info["summary"], ft_info, {"key": ftc.key_of(inputs), "hit": True}
    checkpoint, summary, ft_info = _finetune(cfg, loaded, spec, workdir, progress, devices)
    key = ftc.store(root, inputs, checkpoint, {"summary": summary, "releases": ft_info["releases"],
                                               "grad_defense": ft_info["grad_defense"]})
    return checkpoint, summary, ft_info, {"key": key, "hit": False}


def _utility_shared(cfg: RunConfig, loaded, spec, checkpoint, progress: bool, devices: dict, fit_cache
                    ) -> tuple[dict | None, dict]:
    """`_utility` through the utility cache beside `fit_cache` (flbench.pipeline.finetune_cache) when there is one:
    a cell whose fine-tuning and task block an earlier cell had takes its evaluation. The task block then says
    `cache` ({"key", "hit"}); without a cache it has no such key."""
    from flbench.pipeline import finetune_cache as ftc

    if fit_cache is None or cfg.task is None:
        return _utility(cfg, loaded, spec, checkpoint, progress, devices)
    root = fit_cache.dir / "utility"
    inputs = ftc.utility_key_inputs(cfg, ftc.key_inputs(cfg, loaded, devices))
    hit = ftc.load_utility(root, inputs)
    if hit is not None:
        return {**hit["task"], "cache": {"key": ftc.key_of(inputs), "hit": True}}, hit["info"]
    task, info = _utility(cfg, loaded, spec, checkpoint, progress, devices)
    key = ftc.store_utility(root, inputs, task, info)
    return {**task, "cache": {"key": key, "hit": False}}, info


def _utility(cfg: RunConfig, loaded, spec, checkpoint, progress: bool, devices: dict) -> tuple[dict | None, dict]:
    from flbench.pipeline.utility import evaluate
    from flbench.tasks import get_task

    if cfg.task is None:
        return None, {}
    task = get_task(cfg.task.name)
    defense, gen = cell_defense(cfg)
    res = evaluate(task, loaded, spec, None if spec is None else defense, gen, limit=cfg.task.limit,
                   batch_size=cfg.task.batch_size, wire_dtype=cfg.wire_dtype, checkpoint=checkpoint,
                   progress=progress, summary=False, ci_seed=cfg.seed, dtype=cfg.dtype,
                   client_device=devices.get("client_device"), server_device=devices.get("server_device"))
    metrics = res["metrics"]
    primary = task.primary if task.primary in metrics else next(iter(metrics))
    return ({"name": task.name, "family": getattr(task, "family", None), "metrics": metrics, "primary": primary,
             "n": res["n"], "sample": res.get("sample"), "ci": res["ci"], "baselines": res["baselines"],
             "checkpoint_trained": checkpoint is not None},
            {"utility_wire_bytes": res["wire"]["bytes_total"], "eval_s": res["seconds"],
             "utility_snr": defense.stats().get("snr_rms") if spec is not None else None,
             "utility_snr_token": defense.stats().get("snr_token_median") if spec is not None else None})


# ------------------------------------------------------------------------------------- attack memo

_ATTACKS: dict[str, dict] = {}


def _attack_key(cfg: RunConfig, name: str, params: dict | None = None) -> str | None:
    """What an attack's result depends on. Without fine-tuning the client runs the pretrained weights, so the
    result does not depend on the cell's task: cells of a sweep that differ only in the task share it
    (in-process memo; every record still carries the full result). `params`: the attack's resolved
    parameters (default: the config's)."""
    if cfg.finetune is not None:
        return None
    c = cfg.resolved()
    keep = {k: c[k] for k in ("model", "split", "defense", "victims", "wire_dtype", "seed")}
    if c.get("dtype", "fp32") != "fp32":
        keep["dtype"] = c["dtype"]
    keep["attack"] = name
    keep["params"] = normalize_numbers(params if params is not None else c["attack_params"].get(name, {}))
    return canonical_json(keep)


def seed_attack_memo(records: list[dict]) -> int:
    """Reuse attack results already on disk (records of earlier cells of a resumed sweep) for cells whose
    attack key is the same (`_attack_key`: everything the result depends on, with the parameters the attack
    really ran with; all draws are seeded, so a rerun would reproduce them). Records whose config is not a
    valid RunConfig today (e.g. an attack since removed) are skipped. Returns how many results were taken."""
    n = 0
    for r in records:
        a = r.get("attack")
        if not a or not isinstance(r.get("config"), dict):
            continue
        try:
            cfg = validate(RunConfig, r["config"])
        except FlbenchError:
            continue
        key = _attack_key(cfg, a["name"], a.get("params"))
        if key is None or key in _ATTACKS:
            continue
        d = r.get("defense") or {}
        _ATTACKS[key] = {"attack_params": a.get("params"), "data": a.get("data"), "n": a.get("n"),
                         "metrics": a.get("metrics"), "seconds": {"fit": a.get("fit_s")},
                         "examples": a.get("examples", []), "snr": {"rms": d.get("snr"), "token_median": d.get("snr_token")},
                         "epsilon": d.get("epsilon"), "delta": d.get("delta"), "reused_from": r.get("record_id")}
        n += 1
    return n


def _forward_attacks(cfg: RunConfig) -> list[str]:
    """The cell's attacks on victim traffic (the gradient attacks read the fine-tuning traffic instead)."""
    from flbench.pipeline.config import gradient_attacks

    grad = set(gradient_attacks(cfg.attacks))
    return [n for n in cfg.attacks if n not in grad]


def _pending_attacks(cfg: RunConfig) -> list[str]:
    return [n for n in _forward_attacks(cfg) if (key := _attack_key(cfg, n)) is None or key not in _ATTACKS]


def _attacks(cfg: RunConfig, loaded, checkpoint, victims, progress: bool, devices: dict,
             fit_cache=None, attacker_checkpoint=None) -> list[tuple[str, dict, float]]:
    """Every attack of the cell on ONE capture of the victim traffic through one client runtime (the server
    saw that traffic once; all attacks read the same messages). Results are memoised (see `_attack_key`);
    fits go through `fit_cache` (attacks.fit_cache.FitCache) when one is given (its key holds the head the
    attacker runs). `attacker_checkpoint`: the attacker's surrogate head (`cfg.attacker`), run by every attack
    that runs the head."""
    from flbench.pipeline.attack import (
        capture_victims,
        evaluate_attack,
        fit_attack,
        load_aux,
        victim_runtime,
    )

    out: dict[str, tuple[dict, float]] = {}
    todo = _pending_attacks(cfg)
    for name in _forward_attacks(cfg):
        if name not in todo:
            out[name] = (copy.deepcopy(_ATTACKS[_attack_key(cfg, name)]), 0.0)
    if todo:
        t0 = time.perf_counter()
        records, notes = victims
        defense, gen = cell_defense(cfg)
        first = cfg.attack_config(todo[0])
        rt = victim_runtime(first, loaded, defense, gen, checkpoint, devices)
        v = cfg.victims
        captured = capture_victims(rt, defense, records, v.max_length, v.releases, v.mode, v.new_tokens)
        aux = load_aux(cfg.victims, cfg.seed)
        shared_s = (time.perf_counter() - t0) / len(todo)
        for name in todo:
            t1 = time.perf_counter()
            fa = fit_attack(cfg.attack_config(name), defense, gen, progress=progress, rt=rt, aux=aux,
                            fit_cache=fit_cache, devices=devices, attacker_checkpoint=attacker_checkpoint)
            res = evaluate_attack(fa, records, notes, captured=captured)
            out[name] = (res, round(shared_s + time.perf_counter() - t1, 3))
            key = _attack_key(cfg, name)
            if key is not None:
                _ATTACKS[key] = copy.deepcopy(res)
    return [(n, *out[n]) for n in _forward_attacks(cfg)]


def _gradient_attacks(cfg: RunConfig, traffic) -> list[tuple[str, dict, float]]:
    """Every gradient attack of the cell on the recorded fine-tuning traffic (each channel alone: these records
    report what the backward channel leaks; the forward attacks are records of their own)."""
    from flbench.pipeline.config import gradient_attacks
    from flbench.pipeline.gradient import evaluate_gradient_attack

    out = []
    for name in gradient_attacks(cfg.attacks):
        t0 = time.perf_counter()
        res = evaluate_gradient_attack(name, dict(cfg.attack_params.get(name, {})), traffic, cfg.seed)
        out.append((name, res, round(time.perf_counter() - t0, 3)))
    return out


# ------------------------------------------------------------------------------------------ the cell


def attack_primary(name: str) -> str:
    """The attack's primary metric, as the registered attack class declares it (`primary_metric`)."""
    from attacks import attacks

    return attacks.get(name).primary_metric


def run_cell(cfg: RunConfig, progress: bool = True, workdir: str | Path | None = None,
             devices: dict | None = None, fit_cache=None) -> list[dict]:
    """Execute one cell; returns its records (see flbench.experiments.records for the schema), not yet written.

    The victim data is read before the model is loaded, and the split checked against the model before any
    training, so bad inputs fail before the expensive work. `devices` ({"device", "client_device",
    "server_device"}; default: all on the CPU) is where the parties run; not part of the config: records state it.
    `fit_cache` (attacks.fit_cache.FitCache): attacker fits are stored there and reused by later cells whose fit
    reads the same public inputs; not part of the config (a cached fit is the seeded fit a rerun would compute, up
    to floating-point reduction order), the records say which fits came from it. Beside it, the fine-tuned client
    (and an adaptive attacker's surrogate) is shared with every cell whose fine-tuning is the same
    (flbench.pipeline.finetune_cache; `finetune.cache` in the records)."""
    from flbench.core.provenance import provenance
    from flbench.pipeline.attack import load_victims
    from splits.partition import parse_split

    if not isinstance(cfg, RunConfig):
        raise TypeError(f"run_cell takes a RunConfig, not {type(cfg).__name__}")
    h = cfg.hash
    devices = {k: v for k, v in (devices or {}).items() if v is not None}
    t_start = time.perf_counter()
    victims = load_victims(cfg.victims, cfg.seed) if _pending_attacks(cfg) else ([], [])
    loaded = cell_model(cfg.model)
    spec = None if cfg.split is None else parse_split(cfg.split)
    if spec is not None:
        spec.validate(len(loaded.model.model.layers))
    timings: dict[str, float] = {}
    finetune = None
    with cell_scratch(h, workdir) as tmp:
        checkpoint = None
        ft_info: dict = {}
        if cfg.finetune is not None:
            t0 = time.perf_counter()
            checkpoint, summary, ft_info, shared = _finetune_shared(cfg, loaded, spec, Path(tmp) / "client", progress,
                                                                    devices, fit_cache)
            timings["train_s"] = round(time.perf_counter() - t0, 3)
            finetune = {**cfg.finetune.model_dump(mode="json"), "first_loss": summary["first_loss"],
                        "final_loss": summary["final_loss_mean_last10pct"], "wire_bytes": summary["wire"]["bytes_total"]}
            if shared is not None:  # the adapters came from (or went to) the fine-tuning cache; train_s is then the load
                finetune["cache"] = shared
            if spec is not None:  # the TRAINING examples' privacy: each one's h_A crossed the wire once per epoch
                acc = cell_defense(cfg)[0].accounting(ft_info["releases"])
                if acc:
                    finetune["accounting"] = acc
        surrogate = None
        if cfg.attacker.head == "surrogate":  # the attacker's own copy of the client, trained with the public recipe
            t0 = time.perf_counter()
            surrogate, _, _, _ = _finetune_shared(cfg.surrogate_config(), loaded, spec, Path(tmp) / "attacker",
                                                  progress, devices, fit_cache)
            timings["surrogate_train_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        task, uinfo = _utility_shared(cfg, loaded, spec, checkpoint, progress, devices, fit_cache)
        timings["eval_s"] = round(time.perf_counter() - t0, 3)
        attack_results = _attacks(cfg, loaded, checkpoint, victims, progress, devices, fit_cache, surrogate)
        if ft_info.get("traffic") is not None:
            by_name = {n: (n, r, s) for n, r, s in attack_results + _gradient_attacks(cfg, ft_info["traffic"])}
            attack_results = [by_name[n] for n in cfg.attacks]
            ft_info["traffic"] = None  # the recordings are large: free them before the records are built
    total = round(time.perf_counter() - t_start, 3)
    prov = provenance()
    defense_obj, _ = cell_defense(cfg)
    base = {
        "schema": RECORD_SCHEMA,
        "config_hash": h,
        "config": cfg.resolved(),
        "seeds": {"seed": cfg.seed},
        "versions": prov.get("versions"),
        "commit": prov.get("commit"),
        "dirty": prov.get("dirty"),
        "date": prov.get("date"),
        "model": {"name": loaded.name, "weights_sha256": loaded.identity.get("weights_sha256")},
        "split": cfg.split,
        "compute": {"dtype": cfg.dtype, "client_device": devices.get("client_device", "cpu"),
                    "server_device": devices.get("server_device", "cpu")},
        "finetune": finetune,
        "task": task,
    }
    if ft_info.get("grad_defense") is not None:  # only cells with one: the records before it stay as they were
        base["grad_defense"] = ft_info["grad_defense"]

    def defense_block(res: dict | None) -> dict:
        params = defense_obj.params()
        snr = (res or {}).get("snr", {}).get("rms") if res else uinfo.get("utility_snr")
        out = {"name": cfg.defense.name, "params": params, "noise_sigma": params.get("sigma"),
               "relative": bool(params.get("relative", False)), "snr": snr,
               "snr_utility_traffic": uinfo.get("utility_snr"),
               "epsilon": (res or {}).get("epsilon"), "delta": (res or {}).get("delta")}
        # The typical token's SNR (median over real rows, `NoiseStats.snr_token_median`) of the attacked traffic
        # (else the utility traffic's): only when measured and finite, so records without noise keep their bytes.
        token = ((res or {}).get("snr") or {}).get("token_median") if res else uinfo.get("utility_snr_token")
        if token is not None and math.isfinite(token):
            out["snr_token"] = token
        releases = cfg.victims.releases if (res is not None and cfg.victims is not None) else 1
        acc = (res or {}).get("accounting") or defense_obj.accounting(releases)
        if acc:
            out["accounting"] = acc  # unit, releases composed, (ε, δ), accountant: the defense's own statement
            if out["epsilon"] is None:
                out["epsilon"], out["delta"] = acc.get("epsilon"), acc.get("delta")
        return out

    records = []
    for name, res, secs in attack_results or [(None, None, 0.0)]:
        attack = None
        if res is not None:
            attack = {"name": name, "params": res["attack_params"], "data": res["data"], "n": res["n"],
                      "metrics": res["metrics"], "primary": attack_primary(name),
                      "fit_s": res["seconds"]["fit"], "examples": res["examples"][:2]}
            if res.get("releases", 1) > 1:
                attack["releases"] = res["releases"]
            if res.get("segments"):  # generation traffic: prompt and answer recovery apart
                attack["victim_mode"], attack["segments"] = res["victim_mode"], res["segments"]
            if res.get("channel"):  # the backward channel (dL/dh_B of the cell's fine-tuning traffic)
                attack["channel"] = res["channel"]
            if res.get("diagnostics"):  # e.g. candidate recall: whether pruning, not the defense, limited it
                attack["diagnostics"] = res["diagnostics"]
            if res.get("reused_from"):
                attack["reused_from"] = res["reused_from"]
            if res.get("fit_cache"):  # the fit came from (or went to) an on-disk cache; fit_s is then the load time
                attack["fit_cache"] = res["fit_cache"]
        records.append({
            **base,
            "record_id": f"{h}__{name or 'none'}",
            "defense": defense_block(res),
            "attack": attack,
            "wire": {"bytes_total": uinfo.get("utility_wire_bytes", 0)},
            "timings": {**timings, "attack_s": secs, "total_s": total},
        })
    return [finite_or_null(r) for r in records]
