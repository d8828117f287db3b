"""Synthetic, deterministic run records (schema 1) for leaderboard and plot tests: no model, no torch."""
from __future__ import annotations

import math

from flbench.experiments.records import config_hash
from flbench.experiments.sweep import make_cell


def record(cell: dict, attack: str | None, *, utility: float | None, ap: float | None, snr: float | None = None,
           epsilon: float | None = None, seconds: float = 1.5, commit: str | None = "abc123",
           u_ci: tuple[float, float] | None = None, baselines: dict | None = None, primary: str = "token_accuracy",
           ap_ci: float = 0.02) -> dict:
    """One schema-1 record; `u_ci` (low, high) and `baselines` ({name: accuracy}) add the task block's `ci` and
    `baselines` of newer records; `primary` is the attack's primary metric (its value is `ap`)."""
    h = config_hash(cell)
    d = cell["defense"]
    p = d["params"]
    sigma = {"none": 0.0, "gaussian": p.get("sigma", 0.0),
             "dp-forward": p.get("noise_multiplier", 1.0) * p.get("clip", 1.0)}.get(d["name"])
    task = cell["task"]
    return {
        "schema": 1, "record_id": f"{h}__{attack or 'none'}", "config_hash": h, "config": cell,
        "seeds": {"seed": cell["seed"]}, "versions": {"flbench": "0.1.0"}, "commit": commit, "dirty": False,
        "date": "2025-01-01T00:00:00+00:00",
        "model": {"name": cell["model"], "weights_sha256": "0" * 64}, "split": cell["split"],
        "defense": {"name": d["name"], "params": p, "noise_sigma": None if sigma is None else float(sigma),
                    "relative": bool(p.get("relative", False)), "snr": snr, "epsilon": epsilon,
                    "delta": 1e-5 if epsilon is not None else None},
        "finetune": cell["finetune"],
        "task": None if task is None or utility is None else {
            "name": task["name"], "family": "nlu", "metrics": {"accuracy": utility, "f1": utility / 2},
            "primary": "accuracy", "n": task["limit"] or 100,
            **({} if u_ci is None else {"ci": {"accuracy": {"mean": utility, "ci_low": u_ci[0], "ci_high": u_ci[1],
                                                            "n": task["limit"] or 100}}}),
            **({} if baselines is None else {"baselines": {k: {"metrics": {"accuracy": v}, "how": k}
                                                           for k, v in baselines.items()}})},
        "attack": None if attack is None else {
            "name": attack, "params": {}, "data": "private-records", "n": 50,
            "metrics": _attack_metrics(ap, primary, ap_ci),
            "primary": primary},
        "wire": {"bytes_total": 4718784},
        "timings": {"train_s": 0.0, "eval_s": 0.5, "attack_s": 1.0, "total_s": seconds},
    }


def _attack_metrics(ap: float, primary: str, ci: float) -> dict:
    m = {"token_accuracy": {"mean": ap, "ci_low": max(ap - ci, 0.0), "ci_high": min(ap + ci, 1.0)},
         "rouge_l": {"mean": ap * 0.9, "ci_low": 0, "ci_high": 1}, "pii_recovery": ap / 2, "bleu": ap / 3}
    if primary != "token_accuracy":  # the primary metric carries `ap`; token accuracy something smaller
        m[primary] = {"mean": ap, "ci_low": max(ap - ci, 0.0), "ci_high": min(ap + ci, 1.0)}
        m["token_accuracy"] = {"mean": ap / 4, "ci_low": ap / 5, "ci_high": ap / 3}
    return m


def grid(tasks=("sst2",), attacks=("learned-inversion",), splits=("1,1", "2,2"), sigmas=(0.5, 1, 2, 4),
         zs=(1.0, 4.0), central=True) -> list[dict]:
    """Records of a small sweep: none + relative gaussian σ + dp-forward z, per split, task and attack."""
    out = []
    victims = {"data": "private-records", "limit": 50}
    for task in tasks:
        t = {"name": task, "limit": 100}
        if central:
            out.append(record(make_cell("m", None, {"name": "none", "params": {}}, t, None, [], {}, None, 0),
                              None, utility=0.9, ap=None))
        for split in splits:
            depth = int(split.split(",")[0])
            defs = [({"name": "none", "params": {}}, 0.0, None)]
            defs += [({"name": "gaussian", "params": {"sigma": s, "relative": True}}, s, None) for s in sigmas]
            defs += [({"name": "dp-forward", "params": {"clip": 5, "noise_multiplier": z}}, z, 10.0 / z ** 2)
                     for z in zs]
            for d, s, eps in defs:
                cell = make_cell("m", split, d, t, None, list(attacks), {}, victims, 0)
                for attack in attacks:
                    ap = 0.97 * math.exp(-s * (0.6 + 0.1 * depth))
                    util = 0.85 - 0.05 * s - 0.01 * depth
                    out.append(record(cell, attack, utility=util, ap=ap, snr=None if s == 0 else 1.0 / s,
                                      epsilon=eps))
    return out
