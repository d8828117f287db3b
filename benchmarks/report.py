"""Render results/bench/*.json as the Markdown tables shown in README.md:

    python benchmarks/report.py
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "results" / "bench"
UTILITY = ROOT / "results" / "utility"


def inference() -> list[str]:
    d = json.loads((BENCH / "inference.json").read_text())
    out = [f"Inference, `{d['command']}` ({d['model']['name']}, split {d['split']}, {d['prompt_tokens']}-token "
           f"prompts + {d['new_tokens']} new tokens, median of {d['repeats']}):", "",
           "| batch | centralized tok/s | split KV tok/s | split naive tok/s | KV / centralized | KV / naive | identical tokens | wire B / decode step (KV) |",
           "|---|---|---|---|---|---|---|---|"]
    for r in d["results"]:
        t = r["tokens_per_s"]
        out.append(f"| {r['batch']} | {t['centralized']:.1f} | {t['kv-cache']:.1f} | {t['naive']:.1f} | "
                   f"{r['ratio_kv_over_centralized']:.2f} | {r['ratio_kv_over_naive']:.2f} | {r['tokens_identical']} | "
                   f"{r['wire_bytes_per_decode_step']['kv-cache']:.0f} |")
    return out


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
    out = [f"`{d['command']}` (token accuracy [95% CI], PII recovery; {meaning}; SNR = RMS(h_A)/σ measured on "
           "the victim traffic; the attacker trains against the same noise law):", "",
           f"| split | {'σ×RMS' if relative else 'σ'} | SNR | victims | n | token accuracy | PII recovery | ROUGE-L | fit s |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        a, p, rl = (r["metrics"][k] for k in ("token_accuracy", "pii_recovery", "rouge_l"))
        pii = "n/a" if p["mean"] is None else f"{p['mean']:.2f}"
        snr = "∞" if r["snr"]["rms"] is None else f"{r['snr']['rms']:.2f}"
        out.append(f"| {r['split']} | {r['noise_sigma']:g} | {snr} | {r['data']} | {r['n']} | {a['mean']:.3f} "
                   f"[{a['ci_low']:.3f}, {a['ci_high']:.3f}] | {pii} | {rl['mean']:.3f} | {r['seconds']['fit']:.0f} |")
    return out


def finetune(name: str = "sst2_finetune.json") -> list[str]:  # noqa: D103
    d = json.loads((UTILITY / name).read_text())
    out = [f"Fine-tuning, `{d['command']}` ({d['model']}, {d['task']}, split {d['split']}; commands per row in the file):",
           "", "| mode | train s | loss first → last 10 % | train wire bytes | " +
           " | ".join(d["rows"][0]["metrics"]) + " | n |", "|---|---|---|---|" + "---|" * len(d["rows"][0]["metrics"]) + "---|"]
    for r in d["rows"]:
        ms = " | ".join(f"{v:.4f}" for v in r["metrics"].values())
        out.append(f"| {r['mode']} | {r['train_seconds']:.0f} | {r['first_loss']:.3f} → "
                   f"{r['final_loss_mean_last10pct']:.3f} | {r['train_wire_bytes']} | {ms} | {r['n']} |")
    return out


def _mode(rec: dict) -> str:
    if rec["split"] is None:
        return "centralized"
    p = rec["defense"].get("params") or {}
    if rec["defense"]["name"] == "none" or not p.get("sigma"):
        return f"split {rec['split']}"
    return f"split {rec['split']} σ={p['sigma']:g}{'×RMS' if p.get('relative') else ''}"


def utility(runs: Path = UTILITY / "runs") -> list[str]:
    """Zero-shot and fine-tuned utility per task and mode, from the run records of sweeps/utility*.yaml."""
    from flbench.experiments.records import read_records

    recs = [r for r in read_records(runs) if r.get("task")]
    modes = sorted({_mode(r) for r in recs}, key=lambda m: (m != "centralized", "σ" in m, m))
    cols = [(ft, m) for ft in (False, True) for m in modes]
    out = ["| task | metric | n | " + " | ".join(f"{'fine-tuned' if ft else 'zero-shot'} {m}" for ft, m in cols) + " |",
           "|---|---|---|" + "---|" * len(cols)]
    by = {(r["task"]["name"], r["finetune"] is not None, _mode(r)): r for r in recs}
    for task in sorted({r["task"]["name"] for r in recs}):
        some = next(r for r in recs if r["task"]["name"] == task)
        for metric in some["task"]["metrics"]:
            cells = []
            for ft, m in cols:
                r = by.get((task, ft, m))
                cells.append("–" if r is None else f"{r['task']['metrics'][metric]:.3f}")
            out.append(f"| {task} | {metric} | {some['task']['n']} | " + " | ".join(cells) + " |")
    return out


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
