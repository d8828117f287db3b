"""Training strategies side by side (issue 11's benchmark): sequential, client-batch and server-hierarchical
with 2 and 4 clients, centralized beside them, one pass over the same fixed SST-2 training examples each, on
smollm2-135m with the paper's set-up (batch 1, LoRA r8, one block on each client side), all in one run.

    python benchmarks/bench_training_strategies.py [--resume] [--examples 1000] [--out FILE]

Runs `flbench bench training --strategies ...` (server-hierarchical's K sub-server/client pairs as 2K local
processes over torch.distributed; the other strategies in one process; every process one torch thread) and
writes its JSON, with the command, to results/bench/training_strategies.json. `--resume` keeps the rows an
interrupted run of the same setting already wrote (the CLI saves after every row). Not a timed test.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

FLBENCH = [str(Path(sys.executable).parent / "flbench")]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--split", default="1,1")
    ap.add_argument("--strategies", default="sequential,client-batch,server-hierarchical")
    ap.add_argument("--clients", default="2,4")
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--eval-limit", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (one core per party: 1)")
    ap.add_argument("--out", default="results/bench/training_strategies.json")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    cmd = FLBENCH + ["bench", "training", "--model", args.model, "--split", args.split, "--strategies", args.strategies,
                     "--clients", args.clients, "--examples", str(args.examples), "--batch", str(args.batch),
                     "--seq-len", str(args.seq_len), "--eval-limit", str(args.eval_limit), "--threads",
                     str(args.threads), "--out", args.out, "--overwrite"]
    if args.resume:
        cmd.append("--resume")
    raise SystemExit(subprocess.run(cmd, check=False).returncode)


if __name__ == "__main__":
    main()
