"""Render results/bench/*.json as the Markdown tables shown in README.md:

    python benchmarks/report.py
"""
from __future__ import annotations

import json
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "results" / "bench"


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


if __name__ == "__main__":
    parts = inference() + [""] + training() + [""]
    for f in ("attacks.json", "attacks_absolute_sigma.json", "attacks_embedding-nn.json",
              "attacks_output-inversion.json"):
        if (BENCH / f).exists():
            attack = json.loads((BENCH / f).read_text())["rows"][0]["attack"]
            parts += [f"**{attack}**, " + attacks(f)[0], *attacks(f)[1:], ""]
    print("\n".join(parts))
