"""Recovery against the number of releases k: the same victim texts cross the wire k times with fresh noise
(retries, regenerations, epochs), and the attack combines them (`map-inversion`: summed log-likelihood).

    python benchmarks/bench_releases.py --split 2,2 --sigma 4 --relative --releases 1 2 4 8 --limit 50 \
        --out results/bench/attacks_releases.json

One runtime and one fitted attack; per k, a fresh capture of the same victims (k releases each) scored with
95% bootstrap CIs — exactly `flbench attack --attack map-inversion --split P,Q --noise-sigma σ
[--noise-relative] --releases k --json`. `--resume` keeps the k already measured in --out.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

from flbench.pipeline.attack import AttackConfig, evaluate_attack, fit_attack, load_victims
from flbench.pipeline.bench import machine, resumed, write_result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--split", default="2,2")
    ap.add_argument("--attack", default="map-inversion")
    ap.add_argument("--attack-params", type=json.loads, default={}, help="attack parameters (JSON object)")
    ap.add_argument("--sigma", type=float, default=4.0)
    ap.add_argument("--relative", action="store_true", help="σ as a multiple of the clean hidden states' RMS")
    ap.add_argument("--releases", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--data", default="private-records")
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--out", default="results/bench/attacks_releases.json")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    if any(k < 1 for k in args.releases):
        ap.error(f"--releases {args.releases}: every k must be ≥ 1")

    from defenses import make_defense, make_generator
    from flbench.pipeline.config import VictimsConfig

    base = {"data": args.data, "limit": args.limit, "max_length": args.max_length}
    rows: list[dict] = resumed(args.out, _setting(args), args.resume).get("rows", [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records, notes = load_victims(VictimsConfig(**base), 0)

    def save() -> None:
        write_result({"benchmark": "attacks_releases", "setting": _setting(args), "rows": rows, "machine": machine()},
                     args.out, ["python", "benchmarks/bench_releases.py", *sys.argv[1:]])

    fa = None
    defense = make_defense("gaussian", sigma=args.sigma, relative=args.relative)
    for k in args.releases:
        if any(r["releases"] == k for r in rows):
            print(f"[bench] k={k}: kept from {args.out}", file=sys.stderr, flush=True)
            continue
        cfg = AttackConfig(model=args.model, split=args.split, attack=args.attack, params=args.attack_params,
                           defense={"name": "gaussian", "params": {"sigma": args.sigma, "relative": args.relative}},
                           victims={**base, "releases": k})
        if fa is None:
            fa = fit_attack(cfg, defense, make_generator(seed=0), progress=False)
        fa.cfg = cfg  # same runtime, attack and noise stream; this k's victims config
        row = evaluate_attack(fa, records, notes)
        acc, d = row["metrics"]["token_accuracy"], row.get("diagnostics", {})
        print(f"[bench] k={k}: token accuracy {acc['mean']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}], "
              f"recall {d.get('candidate_recall', float('nan')):.3f}, invert {row['seconds']['invert']:.0f} s",
              file=sys.stderr, flush=True)
        rows.append({k2: row[k2] for k2 in ("releases", "n", "metrics", "seconds", "diagnostics", "snr", "config",
                                            "attack_params", "examples")})
        rows.sort(key=lambda r: r["releases"])
        save()
    save()
    print(json.dumps({"rows": len(rows), "out": args.out}))


def _setting(args: argparse.Namespace) -> dict:
    return {"model": args.model, "split": args.split, "attack": args.attack, "attack_params": args.attack_params,
            "sigma": args.sigma, "relative": args.relative, "data": args.data, "limit": args.limit,
            "max_length": args.max_length}


if __name__ == "__main__":
    main()
