"""Inference benchmark: centralized vs split KV-cached vs split naive, side by side.

    python benchmarks/bench_inference.py            # = flbench bench inference --out results/bench/inference.json
"""
import sys

from flbench.cli.app import main

if __name__ == "__main__":
    main(["bench", "inference", "--out", "results/bench/inference.json", *sys.argv[1:]])
