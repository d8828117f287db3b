"""Each channel of split fine-tuning traffic alone, and both together: what the server reads of the training
data from h_A (forward), from dL/dh_B (backward) and from the two at once (`joint-inversion`), with a defense on
either edge.

    python benchmarks/bench_gradient_channels.py --split 2,2 --examples 32 --batch-size 8 \\
        --settings sst2:4:0 sst2:0:3 sst2:4:3 lm:4:0.3 lm:4:1 --out results/bench/attacks_gradient_channels.json

A setting is LOSS:SIGMA:Z — LOSS "sst2" (the task's training pairs, loss on the answer only: the class word) or
"lm" (private-records texts, whole-text LM loss); SIGMA the Gaussian defense on h_A (× the per-call RMS, as in
the sweeps; 0 = none); Z grad-dp's noise multiplier on the gradient (0 = none), its per-example clip C the median
gradient norm of an undefended run of the same loss and data (measured here, one extra training run per loss).
Each setting is one tapped LoRA fine-tuning run (one epoch of `--examples` sequences, the code path of `flbench
run --finetune-steps N`); on its traffic three attacks, scored alike at the training targets
(flbench.pipeline.gradient): `gradient-label` (backward alone), `joint-inversion channels=h_a` (forward alone:
the exact-forward search on the training h_A) and `joint-inversion` (both). sst2 rows decode the label with the
answers as candidates at the answer's position (positions="answer": the recipe and its answers are public); lm
rows decode every position with the whole vocabulary. The file records the command that produced it; `--resume` keeps finished settings.
"""
from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_gradient_attack import (
    _attack,
    _example_norms,
    _row,
    _train_tapped,
    add_training_args,
    training_setup,
)

from flbench.pipeline.bench import machine, resumed, write_result

ATTACKS = (("gradient-label", {}), ("joint-inversion", {"channels": "h_a"}), ("joint-inversion", {}))


def parse_setting(text: str) -> tuple[str, float, float]:
    try:
        loss, sigma, z = text.split(":")
        out = (loss, float(sigma), float(z))
    except ValueError:
        raise SystemExit(f"bench_gradient_channels: --settings {text!r} is not LOSS:SIGMA:Z (e.g. sst2:4:3)") from None
    if loss not in ("sst2", "lm") or out[1] < 0 or out[2] < 0:
        raise SystemExit(f"bench_gradient_channels: --settings {text!r}: LOSS is sst2 or lm, SIGMA and Z ≥ 0")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_args(ap, examples=32, lm_max_length=48)
    ap.add_argument("--settings", nargs="+", default=["sst2:4:0", "sst2:0:3", "sst2:4:3", "lm:4:0.3", "lm:4:1"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--resume", action="store_true", help="keep the finished settings of --out")
    ap.add_argument("--lm-joint-positions", choices=["all", "detect"], default="all",
                    help="where joint-inversion adds the gradient's evidence under the LM loss: every position, or "
                         "only where the gradient's likelihood-ratio test finds a label (noise-only rows add none)")
    args = ap.parse_args(argv)
    settings = [parse_setting(s) for s in args.settings]
    torch.manual_seed(args.seed)

    from defenses import make_defense
    from flbench.data import load_corpus
    from flbench.pipeline.finetune import text_samples

    t_start = time.perf_counter()
    loaded, spec, steps, sst2 = training_setup(args)
    texts = [r.text for r in load_corpus("private-records", limit=args.examples, seed=args.seed)]
    data = {
        "sst2": sst2,
        "lm": dict(samples=text_samples(loaded.tokenizer, texts, args.lm_max_length), task=None, answers=None,
                   chance=None),
    }
    decode = {  # sst2: the public answer-only recipe (the sequence ends with a class word); lm: every position
        "sst2": {"gradient-label": {"positions": "answer", "candidates": "answers"},
                 "joint-inversion": {"positions": "answer", "grad_candidates": "answers"}},
        "lm": {"gradient-label": {"positions": "all"}, "joint-inversion": {"positions": args.lm_joint_positions}},
    }
    measurement = {"model": args.model, "split": args.split, "examples": args.examples,
                   "batch_size": args.batch_size, "lr": args.lr, "lm_max_length": args.lm_max_length, "seed": args.seed}
    if args.lm_joint_positions != "all":
        measurement["lm_joint_positions"] = args.lm_joint_positions
    rows = resumed(args.out, measurement, args.resume, key="measurement").get("rows", [])
    count = collections.Counter(r["setting"] for r in rows)
    done = {t for t, k in count.items() if k == len(ATTACKS)}  # a setting cut short is rerun whole
    rows = [r for r in rows if r["setting"] in done]
    clips: dict[str, float] = {r["loss"]: r["clip"] for r in rows if r.get("clip")}

    def save(rows: list[dict]) -> None:  # after every row: a killed run keeps what it measured
        result = {"benchmark": "attacks_gradient_channels", "measurement": measurement, "steps": steps,
                  "rows": rows, "seconds": round(time.perf_counter() - t_start, 1), "machine": machine()}
        write_result(result, args.out, ["python", "benchmarks/bench_gradient_channels.py",
                                        *(sys.argv[1:] if argv is None else argv)])

    for text, (loss, sigma, z) in zip(args.settings, settings):
        if text in done:
            continue
        d = data[loss]
        common = dict(steps=steps, batch=args.batch_size, lr=args.lr, seed=args.seed, task=d["task"],
                      answers=d["answers"], chance=d["chance"])
        if z > 0 and loss not in clips:  # grad-dp's clip: the median per-example norm of an undefended run
            traffic, _ = _train_tapped(loaded, spec, d["samples"], **common)
            clips[loss] = statistics.median(_example_norms(traffic))
            del traffic
        defense = make_defense("gaussian", sigma=sigma, relative=True) if sigma > 0 else None
        gd = make_defense("grad-dp", clip=clips[loss], noise_multiplier=z) if z > 0 else None
        traffic, summary = _train_tapped(loaded, spec, d["samples"], grad_defense=gd, defense=defense, **common)
        for name, params in ATTACKS:
            p = {**params, **decode[loss][name]}
            res = _attack(traffic, p, args.seed, name)
            row = _row(f"{text} {res.get('channel')}", traffic, summary, res,
                       {"setting": text, "loss": loss, "sigma_h_a": sigma, "grad_dp_z": z, "attack": name,
                        "channel": res.get("channel"), "clip": clips.get(loss) if z > 0 else None})
            rows.append(row)
            save(rows)
        del traffic
    save(rows)  # also after a --resume with nothing left to run: the file then records that command
    for r in rows:
        print(f"{r['setting']:10s} {r['channel']:11s} label {r['label_accuracy']:.3f} token {r['token_accuracy']:.3f}")


if __name__ == "__main__":
    main()
