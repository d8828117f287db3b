"""A fake, deterministic cell runner, and a script that runs a sweep with it (for the SIGKILL/resume test).

    python fake_runner.py SPEC.yaml OUT_DIR [CELL_DELAY_S] [WRITE_DELAY_S]

The records depend only on the cell (fixed date, timings and metrics), so an interrupted-and-resumed sweep
and an uninterrupted one must leave byte-identical record files. WRITE_DELAY_S sleeps after each record
file is written, so that a kill easily lands between two records of one cell.
"""
from __future__ import annotations

import hashlib
import sys
import time

from flbench.experiments import records, sweep


def _u(cell: dict, salt: str) -> float:
    """A deterministic number in [0, 1) from the cell and a salt."""
    h = hashlib.sha256((records.config_hash(cell) + salt).encode()).hexdigest()
    return int(h[:8], 16) / 2**32


def fake_records(cell) -> list[dict]:
    """Records of a cell (a RunConfig, or a plain config dict) in the record schema, no model involved."""
    cell = cell.resolved() if hasattr(cell, "resolved") else cell
    h = records.config_hash(cell)
    d = cell["defense"]
    sigma = float(d["params"].get("sigma", 0.0))
    out = []
    for attack in cell["attacks"] or [None]:
        ap = round(0.95 * (1.0 - min(sigma, 4.0) / 4.5) * (0.9 + 0.1 * _u(cell, str(attack))), 6)
        out.append({
            "schema": records.SCHEMA, "config_hash": h, "config": cell, "seeds": {"seed": cell["seed"]},
            "versions": {"flbench": "0.1.0", "torch": "x", "transformers": "y", "python": "3"},
            "commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False,
            "date": "2025-01-01T00:00:00+00:00",
            "model": {"name": cell["model"], "weights_sha256": "0" * 64},
            "split": cell["split"],
            "defense": {"name": d["name"], "params": d["params"], "noise_sigma": sigma,
                        "relative": bool(d["params"].get("relative", False)),
                        "snr": None if sigma == 0 else round(1.0 / sigma, 6), "epsilon": None, "delta": None},
            "finetune": cell["finetune"],
            "task": None if cell["task"] is None else {
                "name": cell["task"]["name"], "family": "nlu", "primary": "accuracy", "n": 10,
                "metrics": {"accuracy": round(0.8 - 0.05 * sigma + 0.01 * _u(cell, "u"), 6)}},
            "attack": None if attack is None else {
                "name": attack, "params": {}, "data": "private-records", "n": 5, "primary": "token_accuracy",
                "metrics": {"token_accuracy": {"mean": ap, "ci_low": max(ap - 0.03, 0.0), "ci_high": min(ap + 0.03, 1.0)},
                            "rouge_l": {"mean": round(ap * 0.8, 6)}, "pii_recovery": {"mean": round(ap / 2, 6)}}},
            "wire": {"bytes_total": 1000 + int(1000 * _u(cell, "w"))},
            "timings": {"train_s": 0.0, "eval_s": 0.01, "attack_s": 0.01, "total_s": 0.02},
        })
    return out


def make_runner(delay: float):
    def run_cell(cell) -> list[dict]:
        time.sleep(delay)
        return fake_records(cell)

    return run_cell


def main(argv: list[str]) -> int:
    spec, out = argv[0], argv[1]
    delay = float(argv[2]) if len(argv) > 2 else 0.0
    write_delay = float(argv[3]) if len(argv) > 3 else 0.0
    if write_delay:
        original = records.write_record

        def slow_write(record, out_dir):
            path = original(record, out_dir)
            time.sleep(write_delay)
            return path

        records.write_record = slow_write  # write_cell looks it up at call time
    summary = sweep.run_sweep(sweep.load_spec(spec, check_names=False), out, make_runner(delay), progress=False)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
