"""`gradient-label` on the real model: what the gradient the client's tail sends back during split fine-tuning
(dL/dh_B, the backward channel) reveals of the training targets, undefended and under grad-dp.

    python benchmarks/bench_gradient_attack.py --model smollm2-135m --split 2,2 --examples 64 --batch-size 8 \
        --grad-dp-z 0.3 3 --out results/bench/attacks_gradient.json

Rows (each: one LoRA fine-tuning run through the split runtime, tapped as the server sees it, then the attack
on the recorded traffic, scored against what the client sent — the code path of `flbench run --task sst2
--finetune-steps N --attack gradient-label`, flbench.pipeline.gradient):
  - "sst2": the task's training pairs, loss on the answer (the class word) only, `--examples` sequences in
    `--examples / --batch-size` steps (one epoch), no gradient defense; `label_accuracy` = fraction of training
    examples whose class word is recovered, `label_chance` = 1/2;
  - "sst2 grad-dp z": the same with grad-dp on the gradient edge (per-example clip C = the median Frobenius norm
    of the undefended row's per-example gradients, noise z·C per coordinate), attacked knowing the law
    (positions="all": the answer position is decoded whatever the detection test says; candidates "vocab"
    and "answers" = the class words);
  - "lm": `--examples` private-records texts (at most `--lm-max-length` tokens) with the whole-text LM loss;
    token accuracy of the recovered text (positions 1..T-1; position 0 is never a target), with the
    labelled-position test ("detect") and without ("all").
The file records the command that produced it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from flbench.pipeline.bench import machine, write_result


def _train_tapped(loaded, spec, samples, steps: int, batch: int, lr: float, seed: int, grad_defense=None,
                  task=None, answers=None, chance=None, defense=None):
    """One fine-tuning run with the server's tap on (`defense` on h_A, `grad_defense` on dL/dh_B, each with its
    own seeded stream): returns the TrainingTraffic and the train summary."""
    from flbench.pipeline.finetune import TrainConfig, model_meta, train
    from defenses import NoDefense, make_generator
    from flbench.pipeline.gradient import TrainingTap, TrainingTraffic, grad_seed
    from splits.runtime import SplitRuntime
    from splits.training import LoraSpec

    rt = SplitRuntime(loaded, spec, defense=defense, generator=None if defense is None else make_generator(seed),
                      grad_defense=grad_defense,
                      grad_generator=None if grad_defense is None else make_generator(grad_seed(seed)))
    traffic = TrainingTraffic(TrainingTap(steps * batch), rt=rt, task=task, answers=answers, chance=chance,
                              examples_per_epoch=len(samples))
    rt.wire.taps.append(traffic.tap)
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=lr, seed=seed, max_length=256)
    with tempfile.TemporaryDirectory() as tmp:
        summary = train(rt, samples, cfg, LoraSpec(), Path(tmp) / "run",
                        model_meta(loaded, rt, defense or NoDefense(), grad_defense),
                        progress=False, trace=traffic.trace)
    return traffic, summary


def add_training_args(ap: argparse.ArgumentParser, examples: int, lm_max_length: int) -> None:
    """The options every backward-channel benchmark shares (model, split, the tapped training run)."""
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--split", default="2,2")
    ap.add_argument("--examples", type=int, default=examples, help="training sequences (one epoch)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lm-max-length", type=int, default=lm_max_length)


def training_setup(args: argparse.Namespace) -> tuple:
    """(loaded model, split spec, training steps for one epoch of --examples, the sst2 training data: its
    samples, verbalised answers and chance level) for `add_training_args`' options."""
    from flbench.models import load_model
    from flbench.pipeline.finetune import task_samples
    from flbench.pipeline.gradient import task_answers, task_chance
    from flbench.tasks import get_task
    from splits.partition import parse_split

    loaded = load_model(args.model, progress=False)
    spec = parse_split(args.split)
    spec.validate(len(loaded.model.model.layers))
    task = get_task("sst2")
    examples = task.load("train")
    sst2 = {"samples": task_samples(loaded.tokenizer, task, examples, 256), "task": "sst2",
            "answers": task_answers(loaded.tokenizer, task, examples, 256), "chance": task_chance(task)}
    return loaded, spec, max(1, args.examples // args.batch_size), sst2


def _attack(traffic, params: dict, seed: int, name: str = "gradient-label") -> dict:
    from flbench.pipeline.gradient import evaluate_gradient_attack

    t0 = time.perf_counter()
    res = evaluate_gradient_attack(name, params, traffic, seed)
    res["seconds"]["total"] = round(time.perf_counter() - t0, 3)
    return res


def _row(name: str, traffic, summary, res: dict, extra: dict | None = None) -> dict:
    m = res["metrics"]
    row = {"row": name, "attack_params": res["attack_params"], "n": res["n"], "data": res["data"],
           "metrics": m, "label_accuracy": m["label_accuracy"]["mean"], "token_accuracy": m["token_accuracy"]["mean"],
           "label_chance": m.get("label_chance"), "train": {"first_loss": summary["first_loss"],
                                                            "final_loss": summary["final_loss"],
                                                            "seconds": summary["seconds"]},
           "seconds": res["seconds"], "diagnostics": res["diagnostics"], "examples": res["examples"]}
    gd = traffic.rt.clients[0].grad_defense
    if gd is not None:
        from flbench.pipeline.gradient import grad_defense_block

        row["grad_defense"] = grad_defense_block(gd, 1)
        row["grad_defense_stats"] = {k: gd.stats().get(k) for k in ("norm_mean", "clipped_fraction", "snr_rms")}
    row.update(extra or {})
    print(f"[bench] {name} {res['attack_params'].get('candidates')}/{res['attack_params'].get('positions')}: "
          f"label {row['label_accuracy']:.3f} token {row['token_accuracy']:.3f} "
          f"({res['seconds']['total']:.0f} s)", file=sys.stderr, flush=True)
    return row


def _example_norms(traffic) -> list[float]:
    """Frobenius norm of each recorded example's gradient (what grad-dp's per-example clip acts on)."""
    from attacks import observe

    obs = observe(traffic.tap)
    return [float(g.norm()) for g in obs.grad_b if g is not None]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_args(ap, examples=64, lm_max_length=64)
    ap.add_argument("--grad-dp-z", type=float, nargs="*", default=[0.3, 3.0], help="grad-dp noise multipliers")
    ap.add_argument("--no-lm", action="store_true", help="skip the whole-text LM-loss row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)

    from defenses import make_defense
    from flbench.data import load_corpus
    from flbench.pipeline.finetune import text_samples

    t_start = time.perf_counter()
    loaded, spec, steps, sst2 = training_setup(args)
    samples, answers, chance = sst2["samples"], sst2["answers"], sst2["chance"]
    rows = []
    common = dict(steps=steps, batch=args.batch_size, lr=args.lr, seed=args.seed, task="sst2", answers=answers,
                  chance=chance)

    traffic, summary = _train_tapped(loaded, spec, samples, **common)
    norms = _example_norms(traffic)
    rows.append(_row("sst2", traffic, summary, _attack(traffic, {}, args.seed),
                     {"grad_norm_median": statistics.median(norms)}))
    clip = statistics.median(norms)
    del traffic

    for z in args.grad_dp_z:
        gd = make_defense("grad-dp", clip=clip, noise_multiplier=z)
        traffic, summary = _train_tapped(loaded, spec, samples, grad_defense=gd, **common)
        for cand in ("vocab", "answers"):
            res = _attack(traffic, {"positions": "all", "candidates": cand}, args.seed)
            rows.append(_row(f"sst2 grad-dp z={z:g}", traffic, summary, res, {"clip": clip, "noise_multiplier": z}))
        del traffic

    if not args.no_lm:
        texts = [r.text for r in load_corpus("private-records", limit=args.examples, seed=args.seed)]
        lm = text_samples(loaded.tokenizer, texts, args.lm_max_length)
        traffic, summary = _train_tapped(loaded, spec, lm, steps=steps, batch=args.batch_size, lr=args.lr,
                                         seed=args.seed, task=None)
        for positions in ("detect", "all"):
            res = _attack(traffic, {"positions": positions}, args.seed)
            rows.append(_row("lm private-records", traffic, summary, res, {"max_length": args.lm_max_length}))

    result = {"benchmark": "attacks_gradient", "model": loaded.name, "split": args.split,
              "examples": args.examples, "batch_size": args.batch_size, "steps": steps, "lr": args.lr,
              "seed": args.seed, "rows": rows, "seconds": round(time.perf_counter() - t_start, 1),
              "machine": machine()}
    write_result(result, args.out, ["python", "benchmarks/bench_gradient_attack.py",
                                    *(sys.argv[1:] if argv is None else argv)])
    for r in rows:
        print(f"{r['row']:24s} {r['attack_params']['candidates']:7s} {r['attack_params']['positions']:6s} "
              f"label {r['label_accuracy']:.3f} token {r['token_accuracy']:.3f} chance {r['label_chance']}")


if __name__ == "__main__":
    main()
