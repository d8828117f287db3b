"""Split vs centralized LoRA fine-tuning on one task, same adapters, data order and budget, through the CLI.

    python benchmarks/bench_finetune.py --task sst2 --steps 150 --batch-size 16 --lr 1e-3 --max-length 96 \
        --out results/utility/sst2_finetune.json

Runs `flbench train --task T [--centralized]` then `flbench eval --checkpoint DIR [--centralized]` for each
mode (σ = 0, plus `--noise-sigma S --noise-relative` runs when --sigmas is given) and writes every command
with its JSON output (training seconds, losses, accuracy) to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flbench.core.canonical import strict_json  # non-finite numbers (SNR without noise) → null
from flbench.core.io import atomic_write_text

FLBENCH = [str(Path(sys.executable).parent / "flbench")]


def run(argv: list[str]) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run(FLBENCH + argv, stdout=subprocess.PIPE, text=True, check=False)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): flbench {' '.join(argv)}")
    out = json.loads(p.stdout)
    out["_wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--split", default="2,2")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-length", type=int, default=96)
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--sigmas", type=float, nargs="*", default=[], help="relative σ (× RMS of h_A) for noisy runs")
    ap.add_argument("--modes", default="centralized,split", help="comma-separated subset of centralized,split")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    common = ["--model", args.model, "--split", args.split, "--task", args.task, "--steps", str(args.steps),
              "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--max-length", str(args.max_length)]
    limit = ["--limit", str(args.eval_limit)] if args.eval_limit else []
    modes = [("centralized", ["--centralized"], ["--centralized"]), ("split", [], [])]
    modes += [(f"split σ={s}×RMS", ["--noise-sigma", str(s), "--noise-relative"],
               ["--noise-sigma", str(s), "--noise-relative"]) for s in args.sigmas]
    wanted = set(args.modes.split(",")) | {f"split σ={s}×RMS" for s in args.sigmas}
    modes = [m for m in modes if m[0] in wanted]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, train_extra, eval_extra) in enumerate(modes):
            ck = os.path.join(tmp, f"ck{i}")
            train_argv = ["train", *common, *train_extra, "--out", ck, "--json"]
            tr = run(train_argv)
            eval_argv = ["eval", "--task", args.task, "--checkpoint", ck, *eval_extra, *limit, "--json"]
            ev = run(eval_argv)
            rows.append({
                "mode": name,
                "train_command": "flbench " + " ".join(train_argv).replace(ck, "CK"),
                "eval_command": "flbench " + " ".join(eval_argv).replace(ck, "CK"),
                "train_seconds": tr["seconds"], "first_loss": tr["first_loss"],
                "final_loss_mean_last10pct": tr["final_loss_mean_last10pct"],
                "train_wire_bytes": tr["wire"]["bytes_total"], "metrics": ev["metrics"], "n": ev["n"],
                "ci": ev.get("ci"), "baselines": ev.get("baselines"), "sample": ev.get("sample"),
                "eval_seconds": ev["seconds"], "snr": (tr.get("defense_stats") or {}).get("snr_rms"),
            })
            print(strict_json(rows[-1]), file=sys.stderr, flush=True)
    res = {"command": "python benchmarks/bench_finetune.py " + " ".join(sys.argv[1:]), "task": args.task,
           "model": args.model, "split": args.split, "rows": rows}
    atomic_write_text(args.out, strict_json(res, indent=2) + "\n")



if __name__ == "__main__":
    main()
