"""Attack strength and cost on the real model: one fit per (split, σ), scored on each victim corpus.

    python benchmarks/bench_attacks.py --splits 1,1 2,2 --sigmas 0 1 2 4 --relative \
        --victims private-records enron --out results/bench/attacks.json

Every row is what `flbench attack --split P,Q --noise-sigma σ [--noise-relative] --data V --json` reports
(same code path: flbench.pipeline.attack), plus the fit log. The file records the command that produced it.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

from flbench.pipeline.attack import AttackConfig, evaluate_attack, fit_attack
from flbench.pipeline.bench import machine, write_result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--attack", default="learned-inversion")
    ap.add_argument("--splits", nargs="+", default=["1,1", "2,2"])
    ap.add_argument("--sigmas", nargs="+", type=float, default=[0.0])
    ap.add_argument("--relative", action="store_true", help="σ as a multiple of the clean hidden states' RMS")
    ap.add_argument("--victims", nargs="+", default=["private-records", "enron"])
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--attack-params", type=json.loads, default={},
                    help='attack parameters as a JSON object, e.g. \'{"steps": 300}\'')
    ap.add_argument("--out", default="results/bench/attacks.json")
    args = ap.parse_args(argv)
    if not isinstance(args.attack_params, dict):
        ap.error(f"--attack-params {args.attack_params!r}: expected a JSON object")

    from defenses import make_defense, make_generator
    from flbench.pipeline.attack import load_victims
    from flbench.pipeline.config import VictimsConfig

    rows = []
    for split in args.splits:
        for sigma in args.sigmas:
            cfg = AttackConfig(model=args.model, split=split, attack=args.attack, params=args.attack_params,
                               defense={"name": "gaussian", "params": {"sigma": sigma, "relative": args.relative}},
                               victims={"limit": args.limit})
            defense = make_defense("gaussian", sigma=sigma, relative=args.relative)
            fa = fit_attack(cfg, defense, make_generator(seed=cfg.seed), progress=False)
            for victim in args.victims:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    records, notes = load_victims(VictimsConfig(data=victim, limit=args.limit), cfg.seed)
                row = evaluate_attack(fa, records, notes, data_name=victim)
                row["relative_sigma"] = args.relative
                rows.append(row)
                acc = row["metrics"]["token_accuracy"]
                print(f"[bench] {split} σ={sigma}{' ×RMS' if args.relative else ''} {victim}: token accuracy "
                      f"{acc['mean']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}], fit {row['seconds']['fit']:.0f} s",
                      file=sys.stderr, flush=True)
                # rewrite after every row: a killed run keeps what it measured
                write_result({"benchmark": "attacks", "rows": rows, "machine": machine()}, args.out,
                             ["python", "benchmarks/bench_attacks.py", *sys.argv[1:]])
    print(json.dumps({"rows": len(rows), "out": args.out}))


if __name__ == "__main__":
    main()
