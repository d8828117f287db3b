"""Inference benchmark: centralized vs split KV-cached vs split naive, side by side.

    python benchmarks/bench_inference.py [flbench bench inference options]
    # = flbench bench inference --out results/bench/inference.json --overwrite [options]

Runs the installed `flbench` console script (benchmarks never import the CLI package).
"""
import subprocess
import sys
from pathlib import Path

FLBENCH = str(Path(sys.executable).parent / "flbench")

if __name__ == "__main__":
    argv = [FLBENCH, "bench", "inference", "--out", "results/bench/inference.json", "--overwrite", *sys.argv[1:]]
    sys.exit(subprocess.run(argv, check=False).returncode)
