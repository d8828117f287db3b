"""Render results/bench/*.json as the Markdown tables shown in README.md:

    python benchmarks/report.py            # every table, on stdout
    python benchmarks/report.py --readme   # rewrite README.md's utility-and-sweep block

Tables go through pandas' `DataFrame.to_markdown` (flbench.reporting.tables); every number is formatted
here, before the table is drawn, so the numbers are exactly those of the JSON files.
"""
from __future__ import annotations

import json
from pathlib import Path

from flbench.reporting.tables import markdown_table

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "results" / "bench"
UTILITY = ROOT / "results" / "utility"


def inference() -> list[str]:
    d = json.loads((BENCH / "inference.json").read_text())
    rows = [{"batch": str(r["batch"]), "centralized tok/s": f"{r['tokens_per_s']['centralized']:.1f}",
             "split KV tok/s": f"{r['tokens_per_s']['kv-cache']:.1f}",
             "split naive tok/s": f"{r['tokens_per_s']['naive']:.1f}",
             "KV / centralized": f"{r['ratio_kv_over_centralized']:.2f}", "KV / naive": f"{r['ratio_kv_over_naive']:.2f}",
             "identical tokens": str(r["tokens_identical"]),
             "wire B / decode step (KV)": f"{r['wire_bytes_per_decode_step']['kv-cache']:.0f}"} for r in d["results"]]
    return [f"Inference, `{d['command']}` ({d['model']['name']}, split {d['split']}, {d['prompt_tokens']}-token "
            f"prompts + {d['new_tokens']} new tokens, median of {d['repeats']}):", "", *_lines(markdown_table(rows))]


def _lines(table: str) -> list[str]:
    return table.rstrip("\n").split("\n")


def training() -> list[str]:
    d = json.loads((BENCH / "training.json").read_text())
    t = d["seconds_per_step_median"]
    return [f"Training, `{d['command']}`: split LoRA step {t['split']:.2f} s vs centralized {t['centralized']:.2f} s "
            f"(ratio {d['ratio_split_over_centralized_time']:.2f}), {d['wire_bytes_per_step']} wire bytes per step "
            f"(batch {d['batch']} × {d['seq_len']} tokens, split {d['split']})."]


def attacks(name: str = "attacks.json") -> list[str]:
    d = json.loads((BENCH / name).read_text())
    relative = d["rows"][0].get("relative_sigma", False)
    meaning = "σ in multiples of the clean hidden states' RMS" if relative else "σ absolute (standard deviation)"
    rows = []
    for r in d["rows"]:
        a, p, rl = (r["metrics"][k] for k in ("token_accuracy", "pii_recovery", "rouge_l"))
        rows.append({"split": str(r["split"]), "σ×RMS" if relative else "σ": f"{r['noise_sigma']:g}",
                     "SNR": "∞" if r["snr"]["rms"] is None else f"{r['snr']['rms']:.2f}",
                     "victims": str(r["data"]), "n": str(r["n"]),
                     "token accuracy": f"{a['mean']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}]",
                     "PII recovery": "n/a" if p["mean"] is None else f"{p['mean']:.2f}",
                     "ROUGE-L": f"{rl['mean']:.3f}", "fit s": f"{r['seconds']['fit']:.0f}"})
    return [f"`{d['command']}` (token accuracy [95% CI], PII recovery; {meaning}; SNR = RMS(h_A)/σ measured on "
            "the victim traffic; the attacker trains against the same noise law):", "", *_lines(markdown_table(rows))]


def finetune(name: str = "sst2_finetune.json") -> list[str]:  # noqa: D103
    d = json.loads((UTILITY / name).read_text())
    rows = [{"mode": str(r["mode"]), "train s": f"{r['train_seconds']:.0f}",
             "loss first → last 10 %": f"{r['first_loss']:.3f} → {r['final_loss_mean_last10pct']:.3f}",
             "train wire bytes": str(r["train_wire_bytes"]), **{k: f"{v:.4f}" for k, v in r["metrics"].items()},
             "n": str(r["n"])} for r in d["rows"]]
    return [f"Fine-tuning, `{d['command']}` ({d['model']}, {d['task']}, split {d['split']}; commands per row in the file):",
            "", *_lines(markdown_table(rows))]


def _mode(rec: dict) -> str:
    if rec["split"] is None:
        return "centralized"
    from flbench.reporting.leaderboard import describe_defense  # the defense says its family and σ

    d = describe_defense(rec["defense"]["name"], rec["defense"])
    if d["family"] == "none" or not d["noise_sigma"]:
        return f"split {rec['split']}"
    return f"split {rec['split']} σ={d['noise_sigma']:g}{'×RMS' if d['relative'] else ''}"


def utility(runs: Path = UTILITY / "runs") -> list[str]:
    """Zero-shot and fine-tuned utility per task and mode, from the run records of sweeps/utility*.yaml."""
    from flbench.experiments.records import read_records

    recs = [r for r in read_records(runs) if r.get("task")]
    modes = sorted({_mode(r) for r in recs}, key=lambda m: (m != "centralized", "σ" in m, m))
    cols = [(ft, m) for ft in (False, True) for m in modes]
    names = [f"{'fine-tuned' if ft else 'zero-shot'} {m}" for ft, m in cols]
    by = {(r["task"]["name"], r["finetune"] is not None, _mode(r)): r for r in recs}
    rows = []
    for task in sorted({r["task"]["name"] for r in recs}):
        some = next(r for r in recs if r["task"]["name"] == task)
        for metric in some["task"]["metrics"]:
            row = {"task": task, "metric": metric, "n": str(some["task"]["n"])}
            for name, (ft, m) in zip(names, cols):
                r = by.get((task, ft, m))
                row[name] = "–" if r is None else f"{r['task']['metrics'][metric]:.3f}"
            rows.append(row)
    return _lines(markdown_table(rows, ["task", "metric", "n", *names]))


def sweep(runs: Path = ROOT / "results" / "runs") -> list[str]:
    """The leaderboard rows of the committed sweep shown in README (learned-inversion; one table per task)."""
    from flbench.reporting import leaderboard as lb
    from flbench.experiments.records import read_records

    df = lb.build(read_records(runs))
    cols = ["split", "defense", "noise_sigma", "snr", "epsilon", "token_accuracy", "pii_recovery", "utility",
            "utility_ref", "dcs", "pareto"]
    out = []
    for task in sorted(df["task"].dropna().unique()):
        sub = df[(df["task"] == task) & (df["attack"] == "learned-inversion")].reset_index(drop=True)
        if len(sub):
            metric = next(r["task"]["primary"] for r in read_records(runs) if r.get("task") and r["task"]["name"] == task)
            out += [f"*{task}* (utility = {metric}, n = {int(sub['task_n'].iloc[0])}; attack = learned-inversion on "
                    f"{int(sub['attack_n'].iloc[0])} private records):", "", lb.to_markdown(sub, cols).rstrip(), ""]
    return out


BEGIN, END = "<!-- report:utility-and-sweep:begin -->", "<!-- report:utility-and-sweep:end -->"


def utility_and_sweep() -> list[str]:
    parts: list[str] = []
    for f in sorted(UTILITY.glob("sst2_finetune*.json")):
        parts += finetune(f.name) + [""]
    if (UTILITY / "runs").is_dir():
        parts += ["Utility, `flbench sweep sweeps/utility.yaml --out results/utility/runs` and "
                  "`flbench sweep sweeps/utility_finetuned.yaml --out results/utility/runs`:", ""] + utility() + [""]
    if (ROOT / "results" / "runs").is_dir():
        parts += ["Sweep, `flbench sweep sweeps/default.yaml && flbench sweep sweeps/dp.yaml` "
                  "(rows from `flbench leaderboard --format md --attack learned-inversion --task T`):", ""] + sweep()
    return parts


def update_readme() -> None:
    """Replace the block between the markers in README.md with `utility_and_sweep()`."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
    readme.write_text(text[:a] + "\n" + "\n".join(utility_and_sweep()) + "\n" + text[b:])


if __name__ == "__main__":
    import sys

    if "--readme" in sys.argv:
        update_readme()
        raise SystemExit(0)
    parts = inference() + [""] + training() + [""]
    for f in ("attacks.json", "attacks_absolute_sigma.json", "attacks_embedding-nn.json",
              "attacks_output-inversion.json"):
        if (BENCH / f).exists():
            attack = json.loads((BENCH / f).read_text())["rows"][0]["attack"]
            parts += [f"**{attack}**, " + attacks(f)[0], *attacks(f)[1:], ""]
    parts += utility_and_sweep()
    print("\n".join(parts))
