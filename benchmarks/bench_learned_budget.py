"""learned-inversion recovery against its training budget: fixed budgets side by side with training to a plateau.

    python benchmarks/bench_learned_budget.py --split 2,2 --sigma 2 --budgets 150 300 600 1200 plateau \
        --victims private-records enron --limit 100 --out results/bench/attacks_learned_budget.json

One fit per budget, each on the same public auxiliary text against the same defense law (gaussian noise of
σ × the RMS of the clean h_A; --absolute: σ itself) and scored on the same victims with the same noise
draws (a fresh runtime seeded alike per budget), through flbench.pipeline.attack: what `flbench attack
--attack learned-inversion --attack-param steps=N --attack-param patience=0 ...` reports. A number N is a
fixed budget (patience=0: exactly N steps with cosine decay and the last weights, as the sweep's and
bench_attacks.py's earlier rows); "plateau" is the attack's default: train to a validation plateau on
held-out auxiliary text, at most --plateau-steps steps, best-validation weights; its fit log holds the
validation curve. Each row adds `budget`, `steps_run` and `stop_reason`; `summary` lists them per budget.
The file records the command; --resume keeps the rows it holds for the same measurement and fits the rest.
--fit-cache DIR stores each fit (attacks.fit_cache) and checkpoints a running one there, so a plateau fit longer
than a session continues where it was killed (rerun the same command).
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

from flbench.pipeline.attack import (
    AttackConfig,
    evaluate_attack,
    fit_attack,
    load_victims,
)
from flbench.pipeline.bench import machine, resumed, write_result

PLATEAU = "plateau"


def _budget(text: str) -> str:
    if text == PLATEAU or (text.isdigit() and int(text) > 0):
        return text
    raise argparse.ArgumentTypeError(f"budget {text!r}: expected a positive number of steps or {PLATEAU!r}")


def _params(budget: str, common: dict, plateau_steps: int | None) -> dict:
    """The attack parameters of one budget: a fixed number of steps (patience=0) or the plateau defaults."""
    if budget != PLATEAU:
        return {**common, "steps": int(budget), "patience": 0}
    return {**common, **({"steps": plateau_steps} if plateau_steps else {})}


def _summary(rows: list[dict], budgets: list[str]) -> list[dict]:
    order = {b: i for i, b in enumerate(budgets)}
    out = [{"budget": r["budget"], "data": r["data"], "steps_run": r["steps_run"], "stop_reason": r["stop_reason"],
            "token_accuracy": r["metrics"]["token_accuracy"],
            # a fit resumed from a checkpoint (--fit-cache) ran over several processes: its log has the sum
            "fit_s": r.get("fit_seconds_total", r["seconds"]["fit"])} for r in rows]
    return sorted(out, key=lambda s: (order.get(s["budget"], len(order)), s["data"]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--split", default="2,2")
    ap.add_argument("--sigma", type=float, default=2.0, help="noise σ, a multiple of the clean h_A's RMS")
    ap.add_argument("--absolute", action="store_true", help="σ in absolute units instead of × RMS")
    ap.add_argument("--budgets", nargs="+", type=_budget, default=["150", "300", "600", "1200", PLATEAU],
                    help=f"training budgets: fixed step counts and/or {PLATEAU!r}")
    ap.add_argument("--plateau-steps", type=int, default=None,
                    help="maximum steps of the plateau fit (default: the attack's default budget)")
    ap.add_argument("--victims", nargs="+", default=["private-records", "enron"])
    ap.add_argument("--limit", type=int, default=100, help="victim texts per corpus")
    ap.add_argument("--aux-limit", type=int, default=2000, help="auxiliary texts per public corpus")
    ap.add_argument("--attack-params", type=json.loads, default={},
                    help='other learned-inversion parameters for every budget (JSON object), e.g. \'{"decoder": "mlp"}\'')
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/bench/attacks_learned_budget.json")
    ap.add_argument("--resume", action="store_true", help="keep the rows --out holds for the same measurement")
    ap.add_argument("--fit-cache", default=None,
                    help="directory where fits are stored and running fits checkpoint themselves (resumable)")
    args = ap.parse_args(argv)
    if not isinstance(args.attack_params, dict) or {"steps", "patience"} & set(args.attack_params):
        ap.error("--attack-params takes a JSON object without steps or patience (--budgets sets them)")

    from attacks.fit_cache import open_fit_cache
    from defenses import make_defense, make_generator
    from flbench.core.errors import FlbenchError
    from flbench.models import load_model
    from flbench.pipeline.config import VictimsConfig

    relative = not args.absolute
    measurement = {"model": args.model, "split": args.split, "sigma": args.sigma, "relative_sigma": relative,
                   "limit": args.limit, "aux_limit": args.aux_limit, "seed": args.seed,
                   "attack_params": args.attack_params, "plateau_steps": args.plateau_steps}
    victims_cfg = {"limit": args.limit, "aux_limit": args.aux_limit}
    try:
        cache = open_fit_cache(args.fit_cache)
    except FlbenchError as e:
        ap.error(str(e))
    cfgs = {b: AttackConfig(model=args.model, split=args.split, attack="learned-inversion", seed=args.seed,
                            params=_params(b, args.attack_params, args.plateau_steps), victims=victims_cfg,
                            defense={"name": "gaussian", "params": {"sigma": args.sigma, "relative": relative}})
            for b in args.budgets}  # validated before any loading
    victims = {}
    for v in args.victims:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            victims[v] = load_victims(VictimsConfig(data=v, limit=args.limit), args.seed)
    rows = resumed(args.out, measurement, args.resume, key="measurement").get("rows", [])
    done = {b for b in args.budgets if {r["data"] for r in rows if r["budget"] == b} >= set(args.victims)}
    rows = [r for r in rows if r["budget"] in done or r["budget"] not in args.budgets]  # redo partial budgets

    def save() -> None:  # rewrite after every row: a killed run keeps what it measured
        write_result({"benchmark": "attacks_learned_budget", "measurement": measurement, "rows": rows,
                      "summary": _summary(rows, args.budgets), "machine": machine()}, args.out,
                     ["python", "benchmarks/bench_learned_budget.py", *sys.argv[1:]])

    loaded = None
    for budget in args.budgets:
        if budget in done:
            print(f"[bench] budget {budget}: kept from {args.out}", file=sys.stderr, flush=True)
            continue
        loaded = loaded or load_model(args.model, progress=False)
        cfg = cfgs[budget]
        defense = make_defense("gaussian", sigma=args.sigma, relative=relative)
        fa = fit_attack(cfg, defense, make_generator(seed=cfg.seed), progress=False, loaded=loaded, fit_cache=cache)
        log = fa.attack.fit_log
        for v, (records, notes) in victims.items():
            row = evaluate_attack(fa, records, notes, data_name=v)
            row.update(budget=budget, steps_run=log["steps"], stop_reason=log["stop_reason"], relative_sigma=relative)
            if log.get("resumed_from"):
                row["fit_seconds_total"] = round(log["seconds"], 3)
            rows.append(row)
            acc = row["metrics"]["token_accuracy"]
            print(f"[bench] budget {budget} ({log['steps']} steps, {log['stop_reason']}) {v}: token accuracy "
                  f"{acc['mean']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}], fit {row['seconds']['fit']:.0f} s",
                  file=sys.stderr, flush=True)
            save()
    save()
    print(json.dumps({"rows": len(rows), "out": args.out}))


if __name__ == "__main__":
    main()
