"""`map-inversion` strength and cost on the real model, with the full-vocabulary reference side by side.

    python benchmarks/bench_map_inversion.py --splits 1,1 2,2 --sigmas 0 1 2 4 --relative --limit 100 \
        --reference-limit 4 --reference-sigmas 0 2 4 --out results/bench/attacks_map_inversion.json

Per (split, σ), one runtime and one fit (no training: the public head's vocabulary tables):
  - "main": `--attack-params` (default: the pruned default policy) on `--limit` victims, exactly what
    `flbench attack --attack map-inversion --split P,Q --noise-sigma σ [--noise-relative] --json` reports
    (same code path, flbench.pipeline.attack), with the candidate recall and seconds per position in
    `diagnostics`; `--variants` adds rows with other parameters on the same captured traffic;
  - "reference" (σ in `--reference-sigmas`, `--reference-limit` > 0): the first victims captured once, scored
    by the pruned policy and by `candidates="all"` (the whole vocabulary at every position) on the same
    observations; `retention` = pruned / full-vocabulary token accuracy;
  - "learned_inversion": the token accuracy that results/bench/attacks.json (bench_attacks.py, same victims,
    seed, split and σ) reports for learned-inversion, when it has the row.
The file records the command that produced it; every row carries its config.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from flbench.pipeline.attack import AttackConfig, capture_victims, evaluate_attack, fit_attack, load_victims
from flbench.pipeline.bench import machine, write_result

LEARNED = Path("results/bench/attacks.json")


def _acc(row: dict) -> float:
    return row["metrics"]["token_accuracy"]["mean"]


def _learned_inversion(split: str, sigma: float, relative: bool, data: str, n: int, max_length: int) -> dict | None:
    """learned-inversion's committed row for the same victims (corpus, n, truncation, seed 0), if bench_attacks.py
    measured it."""
    if not LEARNED.is_file():
        return None
    for row in json.loads(LEARNED.read_text())["rows"]:
        cfg = row.get("config", {})
        victims = cfg.get("victims", cfg)  # AttackConfig dumps: nested (now) or flat (older files)
        if (row["attack"] == "learned-inversion" and row["split"] == split and row["data"] == data
                and row["n"] == n and victims.get("max_length") == max_length and cfg.get("seed") == 0
                and row["defense_params"] == {"sigma": sigma, "relative": relative}):
            return {"token_accuracy": row["metrics"]["token_accuracy"], "source": str(LEARNED),
                    "fit_s": row["seconds"]["fit"], "invert_s": row["seconds"]["invert"]}
    return None


def _resumable_rows(args: argparse.Namespace) -> list[dict]:
    """Rows of an earlier run of the same measurement (model, victims, truncation, σ unit, parameters,
    variants, reference settings) in --out; anything else there is not comparable and is refused."""
    path = Path(args.out)
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())["rows"]
    want = {"model": args.model, "data": args.data, "limit": args.limit, "relative_sigma": args.relative,
            "requested_params": args.attack_params}
    for r in rows:
        got = {"model": r["model"], "data": r["data"], "limit": r["config"]["victims"]["limit"], "relative_sigma": r["relative_sigma"],
               "requested_params": r.get("requested_params")}
        if got != want or r["config"]["victims"]["max_length"] != args.max_length:
            raise SystemExit(f"--resume: {args.out} holds a different measurement ({got}); use another --out")
    return rows


def _brief(row: dict) -> dict:
    keep = ("attack_params", "n", "metrics", "seconds", "diagnostics", "snr", "examples")
    return {k: row[k] for k in keep if k in row}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--splits", nargs="+", default=["1,1", "2,2"])
    ap.add_argument("--sigmas", nargs="+", type=float, default=[0.0])
    ap.add_argument("--relative", action="store_true", help="σ as a multiple of the clean hidden states' RMS")
    ap.add_argument("--data", default="private-records", help="victim corpus")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--max-length", type=int, default=64, help="victim tokens per example (truncation)")
    ap.add_argument("--attack-params", type=json.loads, default={}, help="map-inversion parameters (JSON object)")
    ap.add_argument("--variants", type=json.loads, default=[],
                    help='extra parameter sets scored on the same capture, e.g. \'[{"beam": 4}]\'')
    ap.add_argument("--reference-limit", type=int, default=0, help="victims scored with the full vocabulary")
    ap.add_argument("--reference-sigmas", nargs="*", type=float, default=None,
                    help="σ values that get the full-vocabulary reference (default: all of --sigmas)")
    ap.add_argument("--out", default="results/bench/attacks_map_inversion.json")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows --out already holds for the same victims and parameters; measure the rest")
    args = ap.parse_args(argv)
    if not isinstance(args.attack_params, dict) or not isinstance(args.variants, list):
        ap.error("--attack-params takes a JSON object and --variants a JSON list of objects")

    from defenses import make_defense, make_generator
    from flbench.pipeline.config import VictimsConfig

    ref_sigmas = args.sigmas if args.reference_sigmas is None else args.reference_sigmas
    victims_cfg = {"data": args.data, "limit": args.limit, "max_length": args.max_length}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records, notes = load_victims(VictimsConfig(**victims_cfg), 0)
    rows = _resumable_rows(args) if args.resume else []

    def fit(split, sigma, params, defense, gen, rt=None):
        cfg = AttackConfig(model=args.model, split=split, attack="map-inversion", params=params,
                           defense={"name": "gaussian", "params": {"sigma": sigma, "relative": args.relative}},
                           victims=victims_cfg)
        return fit_attack(cfg, defense, gen, progress=False, rt=rt, aux=[] if rt is not None else None)

    def save():  # rewrite after every row: a killed run keeps what it measured
        write_result({"benchmark": "attacks_map_inversion", "rows": rows, "machine": machine()}, args.out,
                     ["python", "benchmarks/bench_map_inversion.py", *sys.argv[1:]])

    def say(what: str, row: dict) -> None:
        acc, d = row["metrics"]["token_accuracy"], row.get("diagnostics", {})
        print(f"[bench] {what}: token accuracy {acc['mean']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}], "
              f"recall {d.get('candidate_recall', float('nan')):.3f}, "
              f"{d.get('seconds_per_position', float('nan')):.3f} s/position, invert {row['seconds']['invert']:.0f} s",
              file=sys.stderr, flush=True)

    for split in args.splits:
        for sigma in args.sigmas:
            tag = f"{split} σ={sigma:g}{'×RMS' if args.relative else ''}"
            if any(r["split"] == split and r["defense_params"]["sigma"] == sigma for r in rows):
                print(f"[bench] {tag}: kept from {args.out}", file=sys.stderr, flush=True)
                continue
            defense = make_defense("gaussian", sigma=sigma, relative=args.relative)
            fa = fit(split, sigma, args.attack_params, defense, make_generator(seed=0))
            captured = capture_victims(fa.rt, defense, records, args.max_length)
            row = evaluate_attack(fa, records, notes, data_name=args.data, captured=captured)
            row["relative_sigma"] = args.relative
            row["requested_params"] = args.attack_params
            row["learned_inversion"] = _learned_inversion(split, sigma, args.relative, args.data, len(records),
                                                          args.max_length)
            say(tag, row)
            row["variants"] = []
            for params in args.variants:
                va = fit(split, sigma, {**args.attack_params, **params}, defense, None, rt=fa.rt)
                vrow = evaluate_attack(va, records, notes, data_name=args.data, captured=captured)
                say(f"{tag} {params}", vrow)
                row["variants"].append(_brief(vrow))
            rows.append(row)
            save()
            if args.reference_limit > 0 and sigma in ref_sigmas:
                sub = records[: args.reference_limit]
                cap = capture_victims(fa.rt, defense, sub, args.max_length)  # one capture, both policies
                pruned = evaluate_attack(fa, sub, notes, data_name=args.data, captured=cap)
                full = fit(split, sigma, {**args.attack_params, "candidates": "all"}, defense, None, rt=fa.rt)
                ref = evaluate_attack(full, sub, notes, data_name=args.data, captured=cap)
                say(f"{tag} reference pruned (n={len(sub)})", pruned)
                say(f"{tag} reference all (n={len(sub)})", ref)
                row["reference"] = {"n": len(sub), "pruned": _brief(pruned), "all": _brief(ref),
                                    "retention": _acc(pruned) / _acc(ref) if _acc(ref) > 0 else None}
                save()
    save()
    print(json.dumps({"rows": len(rows), "out": args.out}))


if __name__ == "__main__":
    main()
