"""`gradient-label` against grad-dp over the EPOCHS of a fine-tuning run (issue 10): every epoch re-sends each
example's gradient dL/dh_B with a fresh noise draw; the server links the releases of one example by their
forward traffic (h_A) and decodes the mean gradient (`pool=linked`, noise σ/√k). A grad-dp level that leaves one
release at chance is judged by what the whole run leaks.

    python benchmarks/bench_gradient_epochs.py --split 2,2 --examples 64 --batch-size 8 --epochs 8 \
        --grad-dp-z 3 --out results/bench/attacks_gradient_epochs.json

One LoRA fine-tuning run per z on the first `--examples` SST-2 training pairs (loss on the class word only),
`--epochs` passes over them (a new order each), grad-dp with clip C = the median per-example gradient norm of an
undefended pass, tapped as the server sees it (the code path of `flbench run ... --attack gradient-label`,
flbench.pipeline.gradient). Then the attack (candidates = the class words, positions = all) on the traffic of the
first e epochs, e = 1, 2, 4, ... `--epochs`: alone (e = 1, each release decoded by itself) and pooled. Rows: label
accuracy with its 95% CI (chance 1/2), the linking accuracy, and the accountant's ε for e releases per example.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from flbench.pipeline.bench import machine, write_result


def _prefix(tap, n: int):
    """A TrainingTap holding the first `n` recorded training sequences of `tap` (whole forwards: each kept
    HIDDEN_A message with its HIDDEN_B and GRAD_B, which the tap's lists hold in the same order)."""
    from flbench.pipeline.gradient import TrainingTap
    from splits.wire import Kind

    out = TrainingTap(n)
    fwd = [m for m in tap.received if m.kind == Kind.HIDDEN_A]
    k = seen = 0
    for m in fwd:
        if seen >= n:
            break
        seen += m.batch
        k += 1
    keep_a = {id(m) for m in fwd[:k]}
    keep_g = {id(m) for m in [m for m in tap.received if m.kind == Kind.GRAD_B][:k]}
    out.received = [m for m in tap.received if id(m) in keep_a or id(m) in keep_g]
    out.sent = [m for m in tap.sent if m.kind == Kind.HIDDEN_B][:k]
    out.sequences = seen
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--split", default="2,2")
    ap.add_argument("--examples", type=int, default=64, help="training examples (one epoch)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--grad-dp-z", type=float, nargs="+", default=[3.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.examples % args.batch_size:
        ap.error(f"--examples {args.examples} must be a multiple of --batch-size {args.batch_size}")
    torch.manual_seed(args.seed)

    from bench_gradient_attack import _example_norms, _train_tapped  # the same tapped training run

    from defenses import make_defense
    from flbench.models import load_model
    from flbench.pipeline.finetune import task_samples
    from flbench.pipeline.gradient import TrainingTraffic, evaluate_gradient_attack, task_answers, task_chance
    from flbench.tasks import get_task
    from splits.partition import parse_split

    t_start = time.perf_counter()
    loaded = load_model(args.model, progress=False)
    spec = parse_split(args.split)
    spec.validate(len(loaded.model.model.layers))
    task = get_task("sst2")
    examples = task.load("train")[: args.examples]
    samples = task_samples(loaded.tokenizer, task, examples, 256)
    answers, chance = task_answers(loaded.tokenizer, task, examples, 256), task_chance(task)
    per_epoch = args.examples // args.batch_size
    common = dict(batch=args.batch_size, lr=args.lr, seed=args.seed, task="sst2", answers=answers, chance=chance)
    clean, _ = _train_tapped(loaded, spec, samples, steps=per_epoch, **common)
    clip = statistics.median(_example_norms(clean))
    del clean
    counts = [e for e in (1, 2, 4, 8, 16, 32) if e <= args.epochs] + ([args.epochs] if args.epochs not in
                                                                      (1, 2, 4, 8, 16, 32) else [])
    rows = []
    for z in args.grad_dp_z:
        gd = make_defense("grad-dp", clip=clip, noise_multiplier=z)
        traffic, summary = _train_tapped(loaded, spec, samples, steps=per_epoch * args.epochs, grad_defense=gd,
                                         **common)
        for e in counts:
            sub = TrainingTraffic(_prefix(traffic.tap, e * args.examples), trace=traffic.trace, rt=traffic.rt,
                                  answers=answers, chance=chance, task="sst2", examples_per_epoch=len(samples))
            pool = "none" if e == 1 else "linked"
            t0 = time.perf_counter()
            res = evaluate_gradient_attack("gradient-label", {"positions": "all", "candidates": "answers",
                                                              "pool": pool}, sub, args.seed)
            m = res["metrics"]
            acc = gd.accounting(e)
            row = {"noise_multiplier": z, "clip": clip, "epochs": e, "pool": pool,
                   "n": res["n"], "label_accuracy": m["label_accuracy"], "label_chance": m.get("label_chance"),
                   "linking_accuracy": res["diagnostics"].get("linking_accuracy"),
                   "epsilon": acc.get("epsilon"), "delta": acc.get("delta"), "accounting": acc,
                   "seconds": round(time.perf_counter() - t0, 1),
                   "train": {"first_loss": summary["first_loss"], "final_loss": summary["final_loss"]}}
            rows.append(row)
            print(f"[bench] z={z:g} epochs={e} pool={row['pool']}: label "
                  f"{m['label_accuracy']['mean']:.3f} (n={res['n']}, links {row['linking_accuracy']}, "
                  f"ε={row['epsilon']:.3g}, {row['seconds']:.0f} s)", file=sys.stderr, flush=True)
        del traffic
    result = {"benchmark": "attacks_gradient_epochs", "model": loaded.name, "split": args.split,
              "examples": args.examples, "batch_size": args.batch_size, "epochs": args.epochs, "lr": args.lr,
              "seed": args.seed, "rows": rows, "seconds": round(time.perf_counter() - t_start, 1),
              "machine": machine()}
    write_result(result, args.out, ["python", "benchmarks/bench_gradient_epochs.py",
                                    *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
