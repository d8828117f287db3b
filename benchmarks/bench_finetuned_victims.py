"""Recovery against the victim's fine-tuning: the victim's head carries LoRA adapters from `flbench train` that
the attacker does not know (it holds only the public weights).

    python benchmarks/bench_finetuned_victims.py --split 2,2 --task sst2 --steps 0 50 200 \
        --attacks map-inversion embedding-nn --limit 50 --out results/bench/attacks_finetuned_victims.json

Per number of fine-tuning steps N: `flbench train --task T --steps N --split P,Q --out <workdir>/ftN` (skipped
when N = 0: the public weights; reused when the checkpoint is already there), then every attack against the
victims' traffic through a runtime carrying that checkpoint — exactly `flbench attack --checkpoint
<workdir>/ftN --attack A --split P,Q [defense] --json`. `--resume` keeps the (N, attack) rows already in --out.
Defense: none, or Gaussian noise (`--sigma`, `--relative`) on the wire both in training and under attack, or
NoPeek in training only (`--nopeek-weight`; identity on the wire, so the attack's defense is none).

`--surrogate-seed S` (adaptive attacker): the attacker fine-tunes its OWN head with the client's recipe (same
task, steps, batch, defense — Kerckhoffs) but its own seed (another data order and adapter initialisation; it
knows neither the client's seed nor its draws), `<workdir>/ftN_..._surrogateS`, and every attack runs that
surrogate head instead of the public one (`flbench attack --attacker-checkpoint`). By default the surrogate
trains on the same public task data as the victim (an optimistic attacker when the client's data is private);
`--surrogate-task T` trains it on another public task instead.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings
from pathlib import Path

from flbench.pipeline.attack import AttackConfig, evaluate_attack, fit_attack, load_victims
from flbench.pipeline.bench import machine, resumed, write_result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--split", default="2,2")
    ap.add_argument("--task", default="sst2", help="the victim's fine-tuning task (flbench ls tasks)")
    ap.add_argument("--steps", nargs="+", type=int, default=[0, 50, 200])
    ap.add_argument("--train-batch-size", type=int, default=8)
    ap.add_argument("--attacks", nargs="+", default=["map-inversion", "embedding-nn"])
    ap.add_argument("--sigma", type=float, default=0.0)
    ap.add_argument("--relative", action="store_true")
    ap.add_argument("--nopeek-weight", type=float, default=0.0,
                    help="train the victim with the NoPeek penalty of this weight (a training-time defense: identity "
                         "on the wire, so the attack sees no noise from it); 0 = off")
    ap.add_argument("--data", default="private-records")
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--utility-limit", type=int, default=0,
                    help="also score the victim's task utility (eval portion, this many examples, 95%% CI) through "
                         "the same split with its adapters; 0 = skip")
    ap.add_argument("--surrogate-seed", type=int, default=None,
                    help="adaptive attacker: train a surrogate head with the client's recipe and this seed, attack with it")
    ap.add_argument("--surrogate-task", default=None,
                    help="the public task the surrogate trains on [default: --task, the victim's own task]")
    ap.add_argument("--workdir", default="benchmarks/.work/finetuned_victims", help="checkpoints (not committed)")
    ap.add_argument("--out", default="results/bench/attacks_finetuned_victims.json")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--fit-cache", default=None,
                    help="directory of reusable attacker fits (attacks.fit_cache): a learned attack's fit reads only "
                         "public inputs, so it is the same for every N (the victim's adapters never enter it)")
    args = ap.parse_args(argv)
    if any(n < 0 for n in args.steps):
        ap.error(f"--steps {args.steps}: every N must be ≥ 0")

    from attacks.fit_cache import open_fit_cache
    from defenses import make_defense, make_generator
    from flbench.pipeline.config import VictimsConfig

    cache = open_fit_cache(args.fit_cache)

    setting = {k: getattr(args, k) for k in ("model", "split", "task", "train_batch_size", "sigma", "relative",
                                            "data", "limit", "max_length")}
    if args.surrogate_seed is not None:
        setting["surrogate_seed"] = args.surrogate_seed
        if args.surrogate_task not in (None, args.task):
            setting["surrogate_task"] = args.surrogate_task
    if args.nopeek_weight:
        if args.sigma > 0:
            ap.error("--nopeek-weight with --sigma: one defense at a time here")
        setting["nopeek_weight"] = args.nopeek_weight
    old = resumed(args.out, setting, args.resume)
    rows: list[dict] = old.get("rows", [])
    utility: dict = old.get("utility", {})
    victims = {"data": args.data, "limit": args.limit, "max_length": args.max_length}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records, notes = load_victims(VictimsConfig(**victims), 0)
    dparams = {"sigma": args.sigma, "relative": args.relative} if args.sigma > 0 else {}
    dname = "gaussian" if dparams else "none"
    dflags = (["--noise-sigma", str(args.sigma)] + (["--noise-relative"] if args.relative else [])) if dparams else []
    if args.nopeek_weight:
        dflags = ["--defense", "nopeek", "--nopeek-weight", str(args.nopeek_weight)]

    def save() -> None:
        write_result({"benchmark": "attacks_finetuned_victims", "setting": setting, "rows": rows,
                      "utility": utility, "machine": machine()}, args.out, ["python", "benchmarks/bench_finetuned_victims.py", *sys.argv[1:]])

    def trained(n: int, seed: int | None) -> Path:
        """The checkpoint of `flbench train` with the recipe for N steps (and `--seed seed` when given)."""
        task = args.task if seed is None else (args.surrogate_task or args.task)
        ckpt = Path(args.workdir) / (f"ft{n}" + (f"_nopeek{args.nopeek_weight:g}" if args.nopeek_weight else "")
                                     + ("" if seed is None else f"_surrogate{seed}")
                                     + ("" if task == args.task else f"_{task}"))
        if not (ckpt / "run.json").is_file():
            cmd = [str(Path(sys.executable).parent / "flbench"), "train", "--model", args.model, "--split",
                   args.split, "--task", task, "--steps", str(n), "--batch-size", str(args.train_batch_size),
                   "--out", str(ckpt), "--overwrite", *dflags, *([] if seed is None else ["--seed", str(seed)])]
            print(f"[bench] {' '.join(cmd)}", file=sys.stderr, flush=True)
            subprocess.run(cmd, check=True)
        return ckpt

    for n in args.steps:
        ckpt = trained(n, None) if n > 0 else None
        own = trained(n, args.surrogate_seed) if n > 0 and args.surrogate_seed is not None else None
        if args.utility_limit and str(n) not in utility:  # the victim's own task, as it runs it
            from flbench.models import load_model
            from flbench.pipeline.utility import evaluate
            from splits.partition import parse_split

            res = evaluate(args.task, load_model(args.model, progress=False), parse_split(args.split),
                           make_defense(dname, **dparams), make_generator(seed=1), limit=args.utility_limit,
                           checkpoint=ckpt, progress=False, summary=False)
            utility[str(n)] = {k: res.get(k) for k in ("task", "n", "metrics", "ci", "baselines")}
            print(f"[bench] {n} steps, utility: {res['metrics']}", file=sys.stderr, flush=True)
            save()
        for attack in args.attacks:
            if any(r["finetune_steps"] == n and r["attack"] == attack for r in rows):
                print(f"[bench] {n} steps, {attack}: kept from {args.out}", file=sys.stderr, flush=True)
                continue
            cfg = AttackConfig(model=args.model, split=args.split, attack=attack, victims=victims,
                               defense={"name": dname, "params": dparams})
            defense = make_defense(dname, **dparams)
            fa = fit_attack(cfg, defense, make_generator(seed=0), progress=False, checkpoint=ckpt,
                            attacker_checkpoint=own, fit_cache=cache)
            row = evaluate_attack(fa, records, notes)
            acc = row["metrics"]["token_accuracy"]
            print(f"[bench] {n} steps, {attack}: token accuracy {acc['mean']:.3f} [{acc['ci_low']:.3f}, "
                  f"{acc['ci_high']:.3f}]", file=sys.stderr, flush=True)
            rows.append({"finetune_steps": n, "checkpoint": str(ckpt) if ckpt else None, "attack": attack,
                         "attacker_checkpoint": str(own) if own else None,
                         **{k: row[k] for k in ("n", "metrics", "seconds", "diagnostics", "attack_params", "examples",
                                                "fit_cache") if row.get(k) is not None}})
            save()
    save()
    print(json.dumps({"rows": len(rows), "out": args.out}))


if __name__ == "__main__":
    main()
