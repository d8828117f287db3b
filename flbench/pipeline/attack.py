"""`flbench attack`: capture the traffic the server really saw on victim data, run one attack, score it.

Flow (one runtime for everything): victim texts → split runtime with the defense on the client's edge →
wire tap (what the server received / sent) → attack.fit(public aux text, knowledge) → attack.invert(tap)
→ recovery metrics with bootstrap CIs. The attacker never sees the victim ids or the noise draws.
"""
from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass

from flbench.core.canonical import finite_or_null
from flbench.core.errors import FlbenchError
from flbench.pipeline.config import AttackConfig, VictimsConfig

__all__ = ["AttackConfig", "FittedAttack", "capture_victims", "evaluate_attack", "fit_attack", "load_aux",
           "load_victims", "run_attack", "victim_capture", "victim_runtime"]


def load_victims(victims: VictimsConfig, seed: int) -> tuple[list, list[str]]:
    """The victim records (`victims.data` corpus, shuffled by `seed`, or the texts of `victims.data_file`),
    at most `victims.limit`; and the notes (warnings) that came up, also printed on stderr."""
    from flbench.data import load_corpus, load_data_file

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if victims.data_file:
            records = load_data_file(victims.data_file)
            if len(records) < victims.limit:
                warnings.warn(f"data file has {len(records)} texts, fewer than --limit {victims.limit}; using all")
            records = records[: victims.limit]
        else:
            records = load_corpus(victims.data, limit=victims.limit, seed=seed)
    notes = [str(w.message) for w in caught]
    for n in notes:
        print(f"[flbench] note: {n}", file=sys.stderr)
    return records, notes


def load_aux(victims: VictimsConfig, seed: int) -> list[str]:
    """The public auxiliary texts the attacker fits on: `victims.aux_limit` of each `victims.aux_data` corpus
    (the config already refused victim corpora and the victims' own data)."""
    from flbench.data import load_corpus

    texts: list[str] = []
    for name in victims.aux_data:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            texts.extend(r.text for r in load_corpus(name, limit=victims.aux_limit, seed=seed))
    return texts


def _privacy(defense, crossings: int) -> dict:
    """SNR of the captured traffic and the defense's own accounting over `crossings` releases of each text
    (`accounting(releases)`: its unit, ε, δ; None for defenses without accounting)."""
    stats = defense.stats()
    acc = defense.accounting(crossings) or {}
    return {"snr": {"rms": stats.get("snr_rms"), "mean_abs": stats.get("snr_mean_abs"),
                    "token_median": stats.get("snr_token_median")},
            "epsilon": acc.get("epsilon"), "delta": acc.get("delta"), "accounting": acc or None}


@dataclass
class FittedAttack:
    """A runtime with its defense, and an attack fitted on public text against that defense."""

    cfg: AttackConfig
    loaded: object
    rt: object
    defense: object
    attack: object
    fit_seconds: float
    fit_cache: dict | None = None  # attacks.fit_cache.fit_with_cache's report, when a cache was given


def fit_attack(cfg: AttackConfig, defense, generator, progress: bool = True, loaded=None,
               checkpoint=None, rt=None, aux: list[str] | None = None, devices: dict | None = None,
               attacker_checkpoint=None, fit_cache=None) -> FittedAttack:
    """`loaded`: an already loaded model (else cfg.model is loaded). `checkpoint`: a `flbench train --out`
    directory whose adapters the victim client runs; the attacker still knows only the public weights.
    `rt` / `aux`: a runtime built by `victim_runtime` and auxiliary texts already loaded (several attacks on
    one capture, as `flbench run` does). `cfg` is validated (names, split, parameters) before any loading.
    `attacker_checkpoint`: adapters the ATTACKER trained (`flbench train --out`, on public data with the client's
    known recipe): the attacker runs that surrogate head instead of the public one (attacks that run the head:
    map-inversion, relaxation, learned-inversion's simulated client). `fit_cache`: an attacks.fit_cache.FitCache
    through which cacheable fits are stored and reused."""
    from attacks import Knowledge, make_attack
    from attacks.fit_cache import fit_with_cache
    from flbench.models import load_model

    params = dict(cfg.params)
    if rt is None:
        loaded = loaded if loaded is not None else load_model(cfg.model, progress=progress)
        rt = victim_runtime(cfg, loaded, defense, generator, checkpoint, devices)
    loaded = rt.loaded
    knowledge = Knowledge.from_runtime(rt)
    if attacker_checkpoint is not None:
        from dataclasses import replace

        own = victim_runtime(cfg, loaded, None, None, attacker_checkpoint, devices)
        knowledge = replace(knowledge, head=own.clients[0].head)
    attack = make_attack(cfg.attack, knowledge, **params)
    if aux is None:
        aux = load_aux(cfg.victims, cfg.seed)
    t0 = time.perf_counter()
    cached = fit_with_cache(attack, aux, knowledge, fit_cache)
    return FittedAttack(cfg, loaded, rt, defense, attack, time.perf_counter() - t0, cached)


def victim_runtime(cfg: AttackConfig, loaded, defense, generator, checkpoint=None, devices: dict | None = None):
    """The victim client's split runtime (defense on its edge; adapters of `checkpoint` if given), in `cfg.dtype`
    with the parties on `devices` ({"client_device", "server_device"}; default: the loaded model's)."""
    from splits.partition import parse_split
    from splits.runtime import SplitRuntime

    spec = parse_split(cfg.split)
    spec.validate(len(loaded.model.model.layers))
    devices = devices or {}
    rt = SplitRuntime(loaded, spec, wire_dtype=cfg.wire_dtype, defense=defense, generator=generator,
                      dtype=getattr(cfg, "dtype", None), client_device=devices.get("client_device"),
                      server_device=devices.get("server_device"))
    if checkpoint is not None:
        from flbench.pipeline.utility import (
            apply_checkpoint,
            check_checkpoint,
            read_checkpoint,
        )

        meta = read_checkpoint(checkpoint)
        check_checkpoint(meta, loaded, spec, checkpoint)
        apply_checkpoint(rt, meta, checkpoint)
    return rt


def capture_victims(rt, defense, records, max_length: int, releases: int = 1, mode: str = "forward",
                    new_tokens: int = 32):
    """What the server saw of the victim texts: (observations, true ids) of each text sent `releases` times
    (fresh noise each time), or with mode "generate" a `GenerationCapture` of each text as a chat prompt
    answered with `new_tokens` greedy tokens. The defense's statistics then describe this traffic only."""
    from attacks import capture
    from attacks.generation_traffic import capture_generation

    defense.reset_stats()
    texts = [r.text for r in records]
    if mode == "generate":
        return capture_generation(rt, texts, new_tokens, max_length=max_length)
    return capture(rt, texts, max_length=max_length, releases=releases)


def victim_capture(fa: FittedAttack, records):
    """`capture_victims` with the victims config of `fa`."""
    v = fa.cfg.victims
    return capture_victims(fa.rt, fa.defense, records, v.max_length, v.releases, v.mode, v.new_tokens)


def evaluate_attack(fa: FittedAttack, records, notes: list[str] | None = None, data_name: str | None = None,
                    captured=None) -> dict:
    """Victim texts through the runtime (tapped), invert what the server saw, score against the truth.
    `captured`: (observations, true ids) from `capture_victims` on the same runtime, shared by several attacks."""
    from flbench.metrics import score_reconstructions

    cfg, defense = fa.cfg, fa.defense
    from attacks.generation_traffic import GenerationCapture

    releases = cfg.victims.releases
    captured = captured if captured is not None else victim_capture(fa, records)
    chat = captured if isinstance(captured, GenerationCapture) else None
    obs, true_ids = (chat.obs, chat.true_ids) if chat else captured
    if (chat is not None) != (cfg.victims.mode == "generate"):
        raise FlbenchError(f"evaluate_attack: the capture does not match victims.mode={cfg.victims.mode!r}")
    if obs.releases != releases:
        raise FlbenchError(f"evaluate_attack: the capture holds {obs.releases} release(s) of each victim, the "
                           f"config says victims.releases={releases}")
    t1 = time.perf_counter()
    rec_ids = fa.attack.invert(obs)
    invert_s = time.perf_counter() - t1

    tok = fa.loaded.tokenizer
    originals = [tok.decode(ids, skip_special_tokens=True) for ids in true_ids]
    recovered = [tok.decode(ids, skip_special_tokens=True) for ids in rec_ids]
    # PII that survived truncation to --max-length is what the server could have seen
    pii = [[v for v in r.pii_values() if v in o] for r, o in zip(records, originals)]
    metrics = score_reconstructions(originals, recovered, original_ids=true_ids, recovered_ids=rec_ids, pii=pii,
                                    seed=cfg.seed)
    segments = None
    if chat is not None:  # prompt and answer scored apart (the answer: up to its first stop token)
        segments = {}
        for part, truth in chat.segments(true_ids).items():
            guess = chat.segments(rec_ids)[part]
            o_txt = [tok.decode(ids, skip_special_tokens=True) for ids in truth]
            r_txt = [tok.decode(ids, skip_special_tokens=True) for ids in guess]
            p_pii = [[v for v in r.pii_values() if v in o] for r, o in zip(records, o_txt)] if part == "prompt" else None
            m = score_reconstructions(o_txt, r_txt, original_ids=truth, recovered_ids=guess, pii=p_pii, seed=cfg.seed)
            segments[part] = {"tokens": sum(len(t) for t in truth),
                              "metrics": {k: {s: v[s] for s in ("mean", "ci_low", "ci_high")} for k, v in m.items()}}
    privacy = _privacy(defense, crossings=releases)
    result = {
        "model": fa.loaded.name,
        "model_identity": fa.loaded.identity,
        "compute": fa.rt.placement(),
        "split": str(fa.rt.spec),
        "attack": cfg.attack,
        "attack_params": fa.attack.describe()["params"],
        "defense": defense.name,
        "defense_params": defense.params(),
        "noise_sigma": defense.params().get("sigma"),
        "snr": privacy["snr"],
        "epsilon": privacy["epsilon"],
        "delta": privacy["delta"],
        "accounting": privacy["accounting"],
        "data": data_name or cfg.victims.data_file or cfg.victims.data,
        "aux_data": list(cfg.victims.aux_data),
        "n": len(records),
        "releases": releases,
        "victim_mode": cfg.victims.mode,
        "segments": segments,
        "notes": notes or [],
        "metrics": {k: {m: v[m] for m in ("mean", "ci_low", "ci_high")} for k, v in metrics.items()},
        "seconds": {"fit": round(fa.fit_seconds, 3), "invert": round(invert_s, 3)},
        "fit_log": getattr(fa.attack, "fit_log", {}),
        # {"key", "hit", "fit_seconds" of the original fit} when the fit went through an on-disk cache
        "fit_cache": fa.fit_cache,
        # scorer-side diagnostics of this inversion (e.g. candidate recall), computed with the true ids after
        # `invert` returned: the attack never saw them
        "diagnostics": fa.attack.diagnostics(true_ids),
        "examples": [{"original": o, "recovered": r} for o, r in list(zip(originals, recovered))[:3]],
        "config": cfg.model_dump(mode="json"),
    }
    return finite_or_null(result)


def run_attack(cfg: AttackConfig, defense, generator, progress: bool = True, task=None,
               utility_defense=None, utility_generator=None, devices: dict | None = None,
               checkpoint=None, attacker_checkpoint=None) -> dict:
    """`flbench attack`: victims (before any model loading), fit, capture, invert, score.

    `checkpoint`: a `flbench train --out` directory whose adapters the victim runs (at `cfg.split`); the
    attacker still knows only the public weights. `task` (a `TaskConfig`): also score the task's utility through the same split, wire dtype and defense law
    (`utility_defense` / `utility_generator`: a fresh instance of the same defense and its own generator, so
    the utility traffic does not shift the victim traffic's noise draws or statistics); the result gets a
    `utility` block. Task data is read before the model is loaded."""
    from flbench.tasks import get_task

    records, notes = load_victims(cfg.victims, cfg.seed)
    task_obj = None
    if task is not None:
        task_obj = get_task(task.name)
        task_obj.load("eval", None, task.limit)  # a missing data file fails before any loading
    fa = fit_attack(cfg, defense, generator, progress, devices=devices, checkpoint=checkpoint,
                    attacker_checkpoint=attacker_checkpoint)
    result = evaluate_attack(fa, records, notes)
    result["checkpoint"] = None if checkpoint is None else str(checkpoint)  # the victim's adapters (unknown to the attacker)
    if attacker_checkpoint is not None:  # the attacker's own surrogate head
        result["attacker_checkpoint"] = str(attacker_checkpoint)
    if task_obj is not None:
        from flbench.pipeline.utility import evaluate

        res = evaluate(task_obj, fa.loaded, fa.rt.spec, utility_defense, utility_generator, limit=task.limit,
                       batch_size=task.batch_size, wire_dtype=cfg.wire_dtype, checkpoint=checkpoint,
                       progress=progress, summary=False,
                       dtype=fa.rt.dtype, client_device=fa.rt.client_device, server_device=fa.rt.server_device)
        result["utility"] = finite_or_null({"task": task_obj.name, "primary": task_obj.primary, "n": res["n"],
                                            "metrics": res["metrics"], "ci": res.get("ci"),
                                            "baselines": res.get("baselines"), "seconds": res["seconds"]})
    return result
