"""Render results/bench/*.json as the Markdown tables shown in README.md:

    python benchmarks/report.py            # every table, on stdout
    python benchmarks/report.py --readme   # rewrite README.md's utility-and-sweep block

Tables go through pandas' `DataFrame.to_markdown` (flbench.reporting.tables); every number is formatted
here, before the table is drawn, so the numbers are exactly those of the JSON files. Every utility carries its
n and its 95% CI as "0.848 [0.823, 0.871]" where the file or record holds one (`ci`, a bootstrap over the eval
examples), "0.848 [–]" where it does not (files written before utility CIs existed).
"""
from __future__ import annotations

import json
from pathlib import Path

from flbench.reporting.tables import MISSING, markdown_table

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "results" / "bench"


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


def training_strategies() -> list[str]:
    """Issue 11's benchmark: one pass per (strategy, K), centralized beside, with the time ratios, wire bytes,
    final loss and the task metric with its CI."""
    path = BENCH / "training_strategies.json"
    if not path.exists():
        return []
    d = json.loads(path.read_text())
    st = d["setting"]
    rows = []
    for r in d["results"]:
        m = r["metric"]
        ci = m.get("ci") or {}
        rows.append({"strategy": r["strategy"], "K": str(r["clients"]),
                     "parties": f"{r['transport']}, {r['processes']} process(es)",
                     "s / pass": f"{r['seconds_per_pass']:.1f}",
                     "speed-up vs sequential": "–" if r["ratio_to_sequential"] is None
                     else f"{r['speedup_over_sequential']:.2f}×",
                     "time / centralized": f"{r['ratio_to_centralized']:.2f}",
                     "wire B / example": f"{r['wire_bytes_per_example']:.0f}",
                     "final loss (last 10 %)": f"{r['final_loss_mean_last10pct']:.3f}",
                     f"{m['task']} {m['name']} [95% CI], n": f"{m['value']:.3f} [{ci.get('ci_low', float('nan')):.3f}, "
                                                             f"{ci.get('ci_high', float('nan')):.3f}], {m['n']}"})
    targets = "; ".join(f"{k} {v}" for k, v in d["targets"].items())
    return [f"`{d['command']}` ({d['model']['name']}, split {d['split']}, {st['examples']} {d['task']} training "
            f"examples, batch {st['batch']}, LoRA r{d['lora']['rank']}, {st['threads']} torch thread per process, "
            f"{d['machine']['cpu_count']} cores; one pass each, all in one run, {d['date']}). Targets: {targets}.",
            "", *_lines(markdown_table(rows))]


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


def with_ci(value, ci: dict | None, digits: int = 3) -> str:
    """"0.848 [0.823, 0.871]"; "0.848 [–]" without a CI; "–" without a value."""
    if value is None:
        return MISSING
    if not ci or ci.get("ci_low") is None or ci.get("ci_high") is None:
        return f"{value:.{digits}f} [{MISSING}]"
    return f"{value:.{digits}f} [{ci['ci_low']:.{digits}f}, {ci['ci_high']:.{digits}f}]"


def _cell_seconds(recs: list[dict]) -> float:
    """The sum of the runs' wall times: each run's `timings.total_s` once (its attack records share it; a run is
    its `config_hash`, so an adaptive attacker's run counts beside the cell it attacks)."""
    from flbench.reporting.leaderboard import cell_key

    per_run = {}
    for r in recs:
        per_run[r.get("config_hash") or cell_key(r)] = float((r.get("timings") or {}).get("total_s") or 0.0)
    return sum(per_run.values())


def sweep_progress(runs: Path, hashes: set[str], recs: list[dict]) -> tuple[int, float]:
    """(finished cells, their summed wall seconds) of the sweep whose cell hashes are `hashes`, in `runs`: its
    cells the sweep itself counts as finished, and the wall time of their records. Other runs in the directory
    (e.g. an adaptive attacker's cells from another spec) are not this sweep's; records written before their
    cells had today's hashes (none matches) all count."""
    from flbench.experiments.sweep import finished

    own = [r for r in recs if r.get("config_hash") in hashes] or recs
    return len(hashes & finished(runs)), _cell_seconds(own)


def sweep(runs: Path = ROOT / "results" / "runs", spec: str | tuple[str, ...] = "sweeps/default.yaml") -> list[str]:
    """A sweep's worst-case view (one table per task: per defense setting, the strongest attack's recovery, the
    fine-tuned utility with its CI and baseline, the gated score and the Pareto flag) and its claims view (the
    best utility below 10 % / 1 % worst-case recovery, against centralized), with the cells' summed wall time."""
    from flbench.experiments.records import read_records
    from flbench.reporting import leaderboard as lb
    from flbench.reporting.claims import build_claims
    from flbench.tasks.base import primary_metric

    recs = read_records(runs)
    if not recs:
        return []
    per_attack = lb.build(recs)
    worst = lb.build_worst_case(per_attack)
    cols = ["split", "defense", "noise_sigma", "finetune_steps", "utility", "baseline", "relative_utility",
            "worst_recovery", "worst_attack", "score", "pareto"]
    from flbench.experiments.sweep import expand, load_spec

    specs = (spec,) if isinstance(spec, str) else tuple(spec)
    hashes = {c.hash for sp in specs for c in expand(load_spec(ROOT / sp))}
    total = len(hashes)
    cells, seconds = sweep_progress(runs, hashes, recs)
    done = f"{cells} cells" if cells >= total else f"{cells} of its {total} cells so far (resumable: the rest next)"
    command = " and ".join(f"`flbench sweep {sp} --out {runs.relative_to(ROOT)}`" for sp in specs)
    out = [f"{command}: {done}, {seconds / 60:.0f} min "
           "summed over the cells' own wall times (records' `timings.total_s`, per cell in the leaderboard's "
           "`seconds`; 2-core machine, shared with other jobs unless said otherwise); tables: `flbench leaderboard --records "
           f"{runs.relative_to(ROOT)} --view worst-case --format md` and `--view claims`.", ""]
    for task in sorted(worst["task"].dropna().unique()):
        sub = worst[(worst["task"] == task) & worst["worst_recovery"].notna()].reset_index(drop=True)
        ref = worst[(worst["task"] == task) & (worst["split"] == lb.CENTRALIZED)]
        if not len(sub):
            continue
        att = per_attack[(per_attack["task"] == task) & per_attack["attack"].notna()]
        attacks = ", ".join(f"{a} ({m})" for a, m in sorted(set(zip(att["attack"], att["recovery_metric"]))))
        victims = "/".join(str(int(n)) for n in sorted(set(att["attack_n"].dropna())))
        central = ("" if not len(ref) else "; centralized, same fine-tuning: " + with_ci(
            ref["utility"].iloc[0], {"ci_low": ref["utility_ci_low"].iloc[0], "ci_high": ref["utility_ci_high"].iloc[0]}))
        shown = lb.with_optional_columns(cols, sub.to_dict("records"))
        out += [f"*{task}* (utility = {primary_metric(task)} [95% CI], n = {int(sub['task_n'].iloc[0])}{central}; "
                f"worst case over {attacks} on {victims} private records):", "", lb.to_markdown(sub, shown).rstrip(), ""]
    claims = build_claims(recs)
    if len(claims):
        out += ["Claims view (`--view claims`): per split, the best fine-tuned utility among the noise levels whose "
                "worst-case recovery is below 10 % / 1 % of the private tokens (upper end of its 95% CI), against "
                "centralized:", "", lb.to_markdown(claims).rstrip(), ""]
    return out


def _bench(name: str) -> dict | None:
    """results/bench/<name> as data, None when that benchmark has not been run."""
    f = BENCH / name
    return json.loads(f.read_text()) if f.is_file() else None


def _learned_row(split: str, sigma: float) -> dict | None:
    """learned-inversion's row in attacks.json (private-records, 100 victims of ≤ 64 tokens) at (split, σ×RMS)."""
    f = BENCH / "attacks.json"
    if not f.is_file():
        return None
    for r in json.loads(f.read_text())["rows"]:
        if (r["attack"] == "learned-inversion" and r["split"] == split and r["data"] == "private-records"
                and r.get("relative_sigma") and r["noise_sigma"] == sigma):
            return r
    return None


def map_inversion(names: tuple[str, ...] = ("attacks_map_inversion.json", "attacks_map_inversion_deep.json",
                                            "attacks_map_inversion_reference.json",
                                            "attacks_map_inversion_reference_sigma8.json",
                                            "attacks_map_inversion_reference_44_sigma4.json")) -> list[str]:
    """The exact-forward attack per (split, σ×RMS), candidate recall and cost beside it; learned inversion of
    the same split and σ from attacks.json (its victims are the same corpus, seed and count, truncated at 64
    tokens instead of 32)."""
    out: list[str] = []
    for name in names:
        f = BENCH / name
        if not f.is_file():
            continue
        d = json.loads(f.read_text())
        rows = []
        for r in sorted(d["rows"], key=lambda r: (tuple(int(x) for x in r["split"].split(",")), r["noise_sigma"])):
            a, p = r["metrics"]["token_accuracy"], r["metrics"]["pii_recovery"]
            dg = r.get("diagnostics", {})
            li = _learned_row(r["split"], r["noise_sigma"])
            ref = r.get("reference")
            rows.append({
                "split": r["split"], "σ×RMS": f"{r['noise_sigma']:g}",
                "SNR": "∞" if r["snr"]["rms"] is None else f"{r['snr']['rms']:.2f}", "n": str(r["n"]),
                "token accuracy": with_ci(a["mean"], a), "PII recovery": "n/a" if p["mean"] is None else f"{p['mean']:.2f}",
                "candidate recall": f"{dg['candidate_recall']:.3f}" if "candidate_recall" in dg else MISSING,
                "s / position": f"{dg['seconds_per_position']:.3f}" if "seconds_per_position" in dg else MISSING,
                "invert s (n victims)": f"{r['seconds']['invert']:.0f}",
                "full-vocabulary retention": (f"{ref['retention']:.3f} (n={ref['n']})" if ref and ref.get("retention")
                                              is not None else MISSING),
                "learned-inversion (≤ 64 tokens)": (with_ci(li["metrics"]["token_accuracy"]["mean"],
                                                            li["metrics"]["token_accuracy"]) if li else MISSING),
            })
        out += [f"**map-inversion**, `{d['command']}` (token accuracy [95% CI] on private-records victims of ≤ "
                f"{d['rows'][0]['config']['victims']['max_length']} tokens; σ in multiples of RMS(h_A) per call; "
                "candidate recall = share of positions whose true token was scored; seconds on the shared 2-core "
                "machine, 1 thread, other jobs running):", "", *_lines(markdown_table(rows)), ""]
    return out


def releases(name: str = "attacks_releases.json") -> list[str]:
    d = _bench(name)
    if d is None:
        return []
    st = d["setting"]
    rows = [{"releases k": str(r["releases"]), "n": str(r["n"]),
             "token accuracy": with_ci(r["metrics"]["token_accuracy"]["mean"], r["metrics"]["token_accuracy"]),
             "candidate recall": f"{r['diagnostics']['candidate_recall']:.3f}",
             "invert s": f"{r['seconds']['invert']:.0f}"} for r in d["rows"]]
    return [f"**Repeated releases**, `{d['command']}` ({st['attack']}, split {st['split']}, σ = {st['sigma']:g}"
            f"{'×RMS' if st['relative'] else ''}; each victim text sent k times with fresh noise; the attack sums "
            "the k log-likelihoods):", "", *_lines(markdown_table(rows)), ""]


def generation(name: str = "attacks_generation.json") -> list[str]:
    d = _bench(name)
    if d is None:
        return []
    rows = []
    for r in d["rows"]:
        seg = r["segments"]
        params = ", ".join(f"{k}={v}" for k, v in r["config"]["params"].items() if k == "decoder")  # the choice that matters
        rows.append({"attack": r["attack"] + (f" ({params})" if params else ""), "σ×RMS": f"{r['sigma']:g}",
                     "n": str(r["n"]),
                     "prompt tokens": with_ci(seg["prompt"]["metrics"]["token_accuracy"]["mean"],
                                              seg["prompt"]["metrics"]["token_accuracy"]),
                     "answer tokens": with_ci(seg["answer"]["metrics"]["token_accuracy"]["mean"],
                                              seg["answer"]["metrics"]["token_accuracy"]),
                     "answer tokens scored": str(seg["answer"]["tokens"])})
    st = d["setting"]
    return [f"**Chat traffic**, `{d['command']}` (split {st['split']}; each victim record is a prompt of ≤ "
            f"{st['max_length']} tokens answered greedily with {st['new_tokens']} tokens through the KV-cached split; "
            "token accuracy of the prompt and of the fed-back answer, 95% CIs):", "", *_lines(markdown_table(rows)), ""]


def gradient(name: str = "attacks_gradient.json") -> list[str]:
    d = _bench(name)
    if d is None:
        return []
    rows = []
    for r in d["rows"]:
        g = r.get("grad_defense")
        p = r["attack_params"]
        m = r["metrics"]
        lm = r["row"].startswith("lm")
        rows.append({"traffic": "LM loss, private-records" if lm else "sst2, answer-only loss",
                     "grad defense": f"grad-dp z={g['params']['noise_multiplier']:g}" if g else "none",
                     "ε (δ)": f"{g['epsilon']:.3g} ({g['delta']:g})" if g and g.get("epsilon") is not None else MISSING,
                     "label candidates": p["candidates"], "positions": p["positions"], "n": str(r["n"]),
                     "recovered": with_ci(m["token_accuracy" if lm else "label_accuracy"]["mean"],
                                          m["token_accuracy" if lm else "label_accuracy"]),
                     "chance": MISSING if lm or r.get("label_chance") is None else f"{r['label_chance']:.2f}"})
    return [f"**Backward channel** (`gradient-label` on dL/dh_B, the gradient the client's tail sends during "
            f"fine-tuning), `{d['command']}` ({d['model']}, split {d['split']}, {d['examples']} training sequences, "
            "one epoch; sst2: share of training examples whose class word is recovered; LM loss: token accuracy "
            "of the training text; label candidates 'answers' = the task's verbalised answers only):", "",
            *_lines(markdown_table(rows)), ""]


def gradient_channels(name: str = "attacks_gradient_channels.json") -> list[str]:
    d = _bench(name)
    if d is None:
        return []
    m = d["measurement"]
    rows = []
    for r in d["rows"]:  # in run order: per setting, backward alone, forward alone, both
        lm = r["loss"] == "lm"
        g = r.get("grad_defense")
        metric = "token_accuracy" if lm else "label_accuracy"
        rows.append({"traffic": "LM loss, private-records" if lm else "sst2, answer-only loss",
                     "h_A defense": f"σ = {r['sigma_h_a']:g}×RMS" if r["sigma_h_a"] else "none",
                     "gradient defense": f"grad-dp z = {r['grad_dp_z']:g}" if r["grad_dp_z"] else "none",
                     "grad ε (δ)": f"{g['epsilon']:.3g} ({g['delta']:g})" if g and g.get("epsilon") is not None else MISSING,
                     "channel read": {"grad_b": "dL/dh_B alone (gradient-label)", "h_a": "h_A alone (joint-inversion channels=h_a)",
                                      "h_a+grad_b": "both (joint-inversion)"}[r["channel"]],
                     "positions": r["attack_params"]["positions"],
                     "n": str(r["n"]), "recovered": with_ci(r["metrics"][metric]["mean"], r["metrics"][metric]),
                     "chance": MISSING if lm or r.get("label_chance") is None else f"{r['label_chance']:.2f}"})
    return [f"**Each channel of the fine-tuning traffic alone, and both**, `{d['command']}` ({m['model']}, split "
            f"{m['split']}, {m['examples']} training sequences, one epoch, each setting its own tapped fine-tuning run "
            "with the defenses on; sst2: share of training examples whose class word is recovered; LM loss: token "
            "accuracy of the training text; scored alike at the training targets; positions: where the labels (and the "
            "joint attack's gradient evidence) are taken — answer = the public recipe's answer position, all = every "
            "position, detect = where the gradient's likelihood-ratio test finds a label):", "",
            *_lines(markdown_table(rows)), ""]


def _victim_defense(st: dict) -> str:
    if st.get("nopeek_weight"):
        return f"nopeek α = {st['nopeek_weight']:g} in training (identity on the wire)"
    return "σ = " + format(st["sigma"], "g") + ("×RMS" if st["relative"] else "") if st["sigma"] else "none"


def finetuned_victims(name: str = "attacks_finetuned_victims.json") -> list[str]:
    d = _bench(name)
    if d is None:
        return []
    st = d["setting"]
    rows = []
    for r in d["rows"]:
        mm = (r.get("diagnostics") or {}).get("model_mismatch")
        u = (d.get("utility") or {}).get(str(r["finetune_steps"]))
        util = MISSING
        if u:
            metric = next(iter(u["metrics"]))
            util = f"{with_ci(u['metrics'][metric], (u.get('ci') or {}).get(metric))} (n={u['n']})"
        rows.append({"victim fine-tuning steps": str(r["finetune_steps"]), "attack": r["attack"],
                     "attacker's head": (f"surrogate (the client's recipe on {st.get('surrogate_task', st['task'])}, "
                                         f"seed {st.get('surrogate_seed')})" if r.get("attacker_checkpoint")
                                         else "public"), "n": str(r["n"]),
                     "token accuracy": with_ci(r["metrics"]["token_accuracy"]["mean"], r["metrics"]["token_accuracy"]),
                     "mismatch detected (residual sd)": f"yes ({mm['residual_sd']:.3g})" if mm else "no",
                     f"victim's {st['task']} utility": util})
    return [f"**Fine-tuned victims**, `{d['command']}` (the victim's head, trunk and tail carry LoRA adapters from "
            f"`flbench train --task {st['task']} --steps N --split {st['split']}` that the attacker does not know; "
            f"defense {_victim_defense(st)}):",
            "", *_lines(markdown_table(rows)), ""]


def gradient_epochs(name: str = "attacks_gradient_epochs.json") -> list[str]:
    d = _bench(name)
    if d is None:
        return []
    rows = [{"grad-dp z": f"{r['noise_multiplier']:g}", "epochs attacked": str(r["epochs"]), "pooling": r["pool"],
             "ε (δ) of those releases": f"{r['epsilon']:.3g} ({r['delta']:g})",
             "linking accuracy": MISSING if r.get("linking_accuracy") is None else f"{r['linking_accuracy']:.3f}",
             "n": str(r["n"]), "class word recovered": with_ci(r["label_accuracy"]["mean"], r["label_accuracy"]),
             "chance": f"{r['label_chance']:.2f}"} for r in d["rows"]]
    return [f"**Backward channel over the epochs of a run**, `{d['command']}` ({d['model']}, split {d['split']}, "
            f"{d['examples']} SST-2 training examples × {d['epochs']} epochs, grad-dp clip = the median per-example "
            "gradient norm; `pool=linked`: each example's releases linked across epochs by h_A and their mean "
            "decoded; label candidates = the class words):", "", *_lines(markdown_table(rows)), ""]


def dp_ceiling(name: str = "attacks_dp_ceiling.json") -> list[str]:
    d = _bench(name)
    if d is None:
        return []
    rows = [{"release": "drowned (no information)" if r["kind"] == "blind" else f"ε = {r['epsilon']:.3g}",
             "δ": f"{r['delta']:g}", "noise multiplier z": f"{r['noise_multiplier']:.4g}", "n": str(r["n"]),
             "token accuracy": with_ci(r["token_accuracy"]["mean"], r["token_accuracy"]),
             "ceiling e^ε·p0⁺ + δ": f"{r['ceiling']:.3f}" if "ceiling" in r else MISSING,
             "violation": ("yes" if r["violation"] else "no") if "violation" in r else MISSING} for r in d["rows"]]
    return [f"**dp-forward at a stated ε**, `{d['command']}` (per-example clipping at C = {d['clip']:.1f}, the median "
            "per-example norm of h_A on public text; one release; map-inversion; p0⁺ = the upper 95% bound of the "
            "drowned release's accuracy, the guess without information):", "", *_lines(markdown_table(rows)), ""]


def token_snr(name: str = "token_snr.json") -> list[str]:
    """Per split, the typical token's SNR behind each nominal σ × RMS (bench_token_snr.py): one row per σ."""
    d = _bench(name)
    if d is None or not d.get("rows"):
        return []
    splits = sorted({r["split"] for r in d["rows"]}, key=lambda s: tuple(int(x) for x in s.split(",")))
    by = {(r["split"], r["sigma"]): r for r in d["rows"]}
    rows = []
    for sigma in sorted({r["sigma"] for r in d["rows"]}):
        row = {"σ × RMS (per call)": f"{sigma:g}", "SNR over all coordinates (1/σ)": f"{1 / sigma:.3g}"}
        for s in splits:
            r = by.get((s, sigma))
            row[f"token SNR {s}"] = MISSING if r is None else f"{r['snr_token']:.3g}"
            row[f"× public token RMS {s}"] = MISSING if r is None else f"{r['calibrated_multiple']:.3g}"
        rows.append(row)
    st = d.get("setting", {})
    return [f"**The typical token's SNR behind a nominal σ**, `{d['command']}` ({st.get('model')}, "
            f"{st.get('limit')} {st.get('data')} victims of ≤ {st.get('max_length')} tokens through the "
            f"{st.get('head', 'public head')}, captured as the sweep cells capture them; token SNR = median over real "
            "rows of ‖h_t‖ / (σ_eff·√d); “× public token RMS” = σ_eff over `flbench calibrate`'s median token RMS "
            "on public text, the calibrated multiple of the same noise):", "", *_lines(markdown_table(rows)), ""]


def training_releases(name: str = "attacks_training_releases.json") -> list[str]:
    d = _bench(name)
    if d is None:
        return []
    rows = [{"view": r["view"], "releases k": str(r["releases"]), "n": str(r["n"]),
             "token accuracy": with_ci(r["token_accuracy"]["mean"], r["token_accuracy"]),
             "linking accuracy": f"{r['linking_accuracy']:.3f}" if "linking_accuracy" in r else MISSING}
            for r in d["rows"]]
    return [f"**Releases of a real fine-tuning run**, `{d['command']}` ({d['model']}, split {d['split']}, σ = "
            f"{d['sigma']:g}{'×RMS' if d['relative'] else ''}; {d['examples']} private records fine-tuned for "
            f"{d['epochs']} epochs (LM loss, LoRA, new order and fresh noise every epoch); map-inversion on the "
            "first epoch alone, on the releases the attacker linked itself, and on the truly linked ones):", "",
            *_lines(markdown_table(rows)), ""]


def learned_budget(name: str = "attacks_learned_budget.json") -> list[str]:
    d = _bench(name)
    if d is None:
        return []
    rows = [{"budget": str(r["budget"]), "steps run": str(r["steps_run"]), "stopped by": r["stop_reason"],
             "victims": r["data"], "n": str(r["n"]),
             "token accuracy": with_ci(r["metrics"]["token_accuracy"]["mean"], r["metrics"]["token_accuracy"]),
             # a fit resumed across processes (--fit-cache) counts every process's time
             "fit s": f"{r.get('fit_seconds_total', r['seconds']['fit']):.0f}"} for r in d["rows"]]
    r0 = d["rows"][0]
    return [f"**learned-inversion against its training budget**, `{d['command']}` ({r0['model']}, split {r0['split']}, "
            f"σ = {r0['noise_sigma']:g}×RMS; a number = that many steps, fixed; plateau = trained until validation "
            "accuracy on held-out public text stops improving):", "", *_lines(markdown_table(rows)), ""]


EXACT_BEGIN, EXACT_END = "<!-- report:exact-forward:begin -->", "<!-- report:exact-forward:end -->"


def _flag(command: str, flag: str) -> str:
    """The value of `flag` in a recorded command line, "–" when absent."""
    words = command.split()
    return words[words.index(flag) + 1] if flag in words[:-1] else MISSING


def attack_costs() -> list[str]:
    """Fit and invert time of every attack, per 100 victims, from every attack benchmark's rows (one table row per
    attack and file: the median over the file's rows, and the invert range; a cached fit counts its original fit
    time). The machine is the shared 2-core one, so these are orders of magnitude, not a timing benchmark."""
    import statistics

    groups: dict[tuple[str, str], list[dict]] = {}
    docs: dict[str, dict] = {}
    for f in sorted(BENCH.glob("attacks*.json")):
        docs[f.name] = json.loads(f.read_text())
        for r in docs[f.name].get("rows", []):
            sec = r.get("seconds")
            if isinstance(sec, dict) and "fit" in sec and "invert" in sec and r.get("attack") and r.get("n"):
                groups.setdefault((r["attack"], f.name), []).append(r)
    rows = []
    for (attack, name), rs in sorted(groups.items()):
        fit = [float((r.get("fit_cache") or {}).get("fit_seconds") or r["seconds"]["fit"]) for r in rs]
        per100 = [100.0 * float(r["seconds"]["invert"]) / int(r["n"]) for r in rs]
        d = docs[name]
        splits = (sorted({str(r["split"]) for r in rs if r.get("split")})
                  or [str((d.get("setting") or {}).get("split") or _flag(d.get("command", ""), "--split"))])
        rows.append({"attack": attack, "file": name, "rows": str(len(rs)), "splits": " ".join(splits),
                     "victims per row": "/".join(str(n) for n in sorted({int(r["n"]) for r in rs})),
                     "fit s (median)": f"{statistics.median(fit):.0f}",
                     "invert s / 100 victims (median, range)":
                         f"{statistics.median(per100):.0f} ({min(per100):.0f}–{max(per100):.0f})"})
    if not rows:
        return []
    return ["**Attack cost** (every attack benchmark above; `python benchmarks/report.py`): fit time and invert "
            "time per 100 victims, on the shared 2-core machine (one torch thread, other jobs beside it), so "
            "orders of magnitude only; a cached fit (`--fit-cache`) counts its original fit time. Victim lengths "
            "differ between files (see each file's command).", "", *_lines(markdown_table(rows)), ""]


def exact_forward() -> list[str]:
    return (map_inversion() + releases() + training_releases() + generation() + finetuned_victims()
            + finetuned_victims("attacks_finetuned_victims_nopeek.json")
            + finetuned_victims("attacks_finetuned_victims_nopeek_adaptive.json")
            + finetuned_victims("attacks_finetuned_victims_nopeek_adaptive_wic.json") + dp_ceiling() + learned_budget()
            + learned_budget("attacks_learned_budget_plateau.json")
            + gradient() + gradient_epochs() + gradient_channels()
            + gradient_channels("attacks_gradient_channels_lm_detect.json") + attack_costs())


BEGIN, END = "<!-- report:utility-and-sweep:begin -->", "<!-- report:utility-and-sweep:end -->"
STRATEGIES_BEGIN, STRATEGIES_END = "<!-- report:training-strategies:begin -->", "<!-- report:training-strategies:end -->"


def utility_and_sweep() -> list[str]:
    parts: list[str] = token_snr()
    for runs, spec in ((ROOT / "results" / "runs-headline", "sweeps/headline_sst2.yaml"),
                       (ROOT / "results" / "runs-headline-qa", "sweeps/headline_qa.yaml"),
                       (ROOT / "results" / "runs-defenses", "sweeps/defenses.yaml"),
                       (ROOT / "results" / "runs", ("sweeps/default.yaml", "sweeps/dp.yaml"))):
        if runs.is_dir():
            parts += sweep(runs, spec)
    return parts


def update_readme() -> None:
    """Replace the blocks between the markers in README.md with `utility_and_sweep()`, `exact_forward()` and
    `training_strategies()`."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    for begin, end, lines in ((BEGIN, END, utility_and_sweep()), (EXACT_BEGIN, EXACT_END, exact_forward()),
                              (STRATEGIES_BEGIN, STRATEGIES_END, training_strategies())):
        if begin not in text:
            continue
        a, b = text.index(begin) + len(begin), text.index(end)
        text = text[:a] + "\n" + "\n".join(lines) + "\n" + text[b:]
    readme.write_text(text)


if __name__ == "__main__":
    import sys

    if "--readme" in sys.argv:
        update_readme()
        raise SystemExit(0)
    parts = inference() + [""] + training() + [""] + training_strategies() + [""]
    for f in ("attacks.json", "attacks_absolute_sigma.json", "attacks_embedding-nn.json",
              "attacks_output-inversion.json"):
        if (BENCH / f).exists():
            attack = json.loads((BENCH / f).read_text())["rows"][0]["attack"]
            parts += [f"**{attack}**, " + attacks(f)[0], *attacks(f)[1:], ""]
    parts += exact_forward() + utility_and_sweep()
    print("\n".join(parts))
