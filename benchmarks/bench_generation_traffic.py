"""Chat traffic (`--victim-mode generate`): prompt and answer recovery, scored apart, per attack and σ.

    python benchmarks/bench_generation_traffic.py --split 2,2 --sigmas 0 1 --relative --limit 20 \
        --new-tokens 16 --out results/bench/attacks_generation.json

Each row is exactly `flbench attack --victim-mode generate --new-tokens N --attack A [--attack-param ...]
--split P,Q --noise-sigma σ [--noise-relative] --limit L --max-length M --json` (same code path,
flbench.pipeline.attack.run_attack); `segments` holds the prompt's and the answer's recovery. Attacks:
map-inversion (h_A of the prompt and of every fed-back token) and output-inversion with the public tail on the
server's own h_B. `--resume` keeps the (attack, σ) rows already in --out.
"""
from __future__ import annotations

import argparse
import json
import sys

from flbench.pipeline.attack import AttackConfig, run_attack
from flbench.pipeline.bench import machine, resumed, write_result

ATTACKS = {"map-inversion": {}, "output-inversion": {"decoder": "public-tail"}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--split", default="2,2")
    ap.add_argument("--sigmas", nargs="+", type=float, default=[0.0, 1.0])
    ap.add_argument("--relative", action="store_true")
    ap.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=list(ATTACKS))
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--out", default="results/bench/attacks_generation.json")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)

    from defenses import make_defense, make_generator

    setting = {k: getattr(args, k) for k in ("model", "split", "relative", "limit", "max_length", "new_tokens")}
    rows: list[dict] = resumed(args.out, setting, args.resume).get("rows", [])

    def save() -> None:
        write_result({"benchmark": "attacks_generation", "setting": setting, "rows": rows, "machine": machine()},
                     args.out, ["python", "benchmarks/bench_generation_traffic.py", *sys.argv[1:]])

    for sigma in args.sigmas:
        dname, dparams = ("gaussian", {"sigma": sigma, "relative": args.relative}) if sigma > 0 else ("none", {})
        for attack in args.attacks:
            if any(r["attack"] == attack and r["sigma"] == sigma for r in rows):
                continue
            cfg = AttackConfig(model=args.model, split=args.split, attack=attack, params=ATTACKS[attack],
                               defense={"name": dname, "params": dparams},
                               victims={"limit": args.limit, "max_length": args.max_length, "mode": "generate",
                                        "new_tokens": args.new_tokens})
            res = run_attack(cfg, make_defense(dname, **dparams), make_generator(seed=0), progress=False)
            seg = {k: {"tokens": v["tokens"], "token_accuracy": v["metrics"]["token_accuracy"]}
                   for k, v in res["segments"].items()}
            print(f"[bench] {attack} σ={sigma:g}: " + ", ".join(
                f"{k} {v['token_accuracy']['mean']:.3f} ({v['tokens']} tokens)" for k, v in seg.items()),
                file=sys.stderr, flush=True)
            rows.append({"attack": attack, "sigma": sigma, "attack_params": res["attack_params"], "n": res["n"],
                         "segments": res["segments"], "snr": res["snr"], "seconds": res["seconds"],
                         "examples": res["examples"], "config": res["config"]})
            save()
    save()
    print(json.dumps({"rows": len(rows), "out": args.out}))


if __name__ == "__main__":
    main()
