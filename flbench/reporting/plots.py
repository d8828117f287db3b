"""Utility-vs-privacy plots from the leaderboard (matplotlib, Agg; PNG + deterministic SVG).

`plot_all(records_or_df, out_dir)` writes, when the data exist:

- `tradeoff__<model>__<task>__<attack>`: utility vs attack recovery, one curve per partition point (and
  defense family), points labelled with σ (or ε for dp-forward), the centralized utility as a dashed
  horizontal line, the Pareto front (leaderboard `pareto` flag) as a grey step line with circled points;
- `recovery_vs_sigma__<model>__<attack>__<relative|absolute>[__<task>]`: attack recovery vs σ of the Gaussian
  defense (σ = 0: no defense), one line per partition point, the 95% CI as a shaded band (the FL-LLaMA
  "deeper head is more robust" analysis);
- `epsilon_vs_utility__<model>__<task>`: ε of dp-forward vs utility, one line per partition point, log-x when
  ε spans more than two decades, with the undefended and centralized utilities as reference lines.

A plot without data is skipped with a note, never an error. SVGs are byte-identical across calls
(fixed `svg.hashsalt`, no date in the metadata).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from flbench.experiments import records as rec

RC = {"svg.hashsalt": "flbench", "svg.fonttype": "path", "font.size": 9, "axes.titlesize": 10,
      "figure.dpi": 100, "savefig.dpi": 120}
METRIC_LABELS = {
    "token_accuracy": "token accuracy (fraction of tokens recovered)",
    "rouge_l": "ROUGE-L of the reconstruction (0–1)",
    "pii_recovery": "PII recovery (fraction of PII items recovered)",
}


@dataclass
class PlotResult:
    paths: list[Path] = field(default_factory=list)   # PNG and SVG files written
    notes: list[str] = field(default_factory=list)    # plots skipped and why


def _slug(*parts: Any) -> str:
    return "__".join(re.sub(r"[^A-Za-z0-9._-]+", "-", str(p)).strip("-") or "x" for p in parts)


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _num(x: Any) -> str:
    f = float(x)
    return str(int(f)) if f.is_integer() else f"{f:g}"


def _split_key(s: str) -> tuple[int, int]:
    if s == "centralized":
        return (-1, -1)
    try:
        p, q = s.split(",")
        return (int(p), int(q))
    except ValueError:
        return (10**9, 10**9)


def _utility_label(task: str) -> str:
    return f"{task} utility (primary task metric, 0–1)"


def _to_df(data):
    import pandas as pd

    from flbench.reporting import leaderboard

    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, (str, os.PathLike)):
        data = rec.read_records(data)
    return leaderboard.build(list(data))


def _save(fig, out_dir: Path, stem: str, result: PlotResult) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / f"{stem}.png", out_dir / f"{stem}.svg"
    for path, fmt, meta in ((png, "png", {"Software": None}), (svg, "svg", {"Date": None, "Creator": None})):
        tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
        fig.savefig(tmp, format=fmt, metadata=meta, bbox_inches="tight")
        os.replace(tmp, path)
        result.paths.append(path)


def _new_fig(width: float = 7.2, height: float = 4.4):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    ax = fig.add_subplot(1, 1, 1)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    return fig, ax


def _legend_outside(ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False, fontsize=8)


def _colors(splits: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    n = max(len(splits), 1)
    return {s: cmap(0.15 + 0.7 * i / max(n - 1, 1)) for i, s in enumerate(splits)}


# --------------------------------------------------------------------------------------------- plots

def plot_tradeoff(df, out_dir: Path, result: PlotResult) -> None:
    import pandas as pd

    rows = df[df["attack"].notna() & df["task"].notna() & df["utility"].notna() & df["token_accuracy"].notna()]
    if rows.empty:
        result.notes.append("tradeoff: skipped, no record has both a task utility and an attack result")
        return
    for (model, task, attack), g in sorted(rows.groupby(["model", "task", "attack"], sort=True, dropna=False),
                                           key=lambda kv: tuple(map(str, kv[0]))):
        fig, ax = _new_fig()
        splits = sorted(g["split"].unique(), key=_split_key)
        colors = _colors(splits)
        for split in splits:
            gs = g[g["split"] == split]
            base = gs[gs["defense"] == "none"]
            families = [("gaussian", True, "o", "-", "σ×RMS"), ("gaussian", False, "^", "-.", "σ"),
                        ("dp-forward", None, "s", ":", "ε")]
            drawn_any = False
            for name, relative, marker, ls, tag in families:
                fam = gs[gs["defense"] == name]
                if relative is not None:
                    fam = fam[fam["relative"].fillna(False) == relative]
                if fam.empty:
                    continue
                pts = fam if name == "dp-forward" else pd.concat([base, fam])
                pts = pts.sort_values(["noise_sigma", "config_hash"])
                ax.plot(pts["token_accuracy"], pts["utility"], ls=ls, marker=marker, ms=4, color=colors[split],
                        label=f"split {split} · {name}" + (f" ({tag})" if name == "gaussian" else ""))
                for _, r in pts.iterrows():
                    if name == "dp-forward":
                        txt = f"ε={r['epsilon']:.3g}" if _finite(r["epsilon"]) else f"σ={_num(r['noise_sigma'])}"
                    else:
                        txt = f"σ={_num(r['noise_sigma'])}" if _finite(r["noise_sigma"]) else "σ=?"
                    ax.annotate(txt, (r["token_accuracy"], r["utility"]), textcoords="offset points",
                                xytext=(4, 3), fontsize=6.5, color=colors[split])
                drawn_any = True
            if not drawn_any and not base.empty:
                ax.plot(base["token_accuracy"], base["utility"], ls="none", marker="o", ms=4, color=colors[split],
                        label=f"split {split} · none")
        front = g[g["pareto"]].sort_values(["token_accuracy", "utility"])
        if not front.empty:
            ax.step(front["token_accuracy"], front["utility"], where="post", color="0.35", lw=1.0, ls="--",
                    zorder=1, label="Pareto front")
            ax.scatter(front["token_accuracy"], front["utility"], s=90, facecolors="none", edgecolors="0.2",
                       linewidths=1.0, zorder=3)
        central = df[(df["model"] == model) & (df["task"] == task) & (df["split"] == "centralized")
                     & df["utility"].notna()]
        if not central.empty:
            ax.axhline(float(central["utility"].mean()), color="k", ls="--", lw=1.0, label="centralized utility")
        ax.set_xlabel(METRIC_LABELS["token_accuracy"] + " → more leakage")
        ax.set_ylabel(_utility_label(task))
        ax.set_title(f"{model} · {task} · {attack}: utility vs attack recovery")
        _legend_outside(ax)
        _save(fig, out_dir, _slug("tradeoff", model, task, attack), result)


def _dedupe_attack_rows(g):
    """Attack results of cells that differ only in the task (no fine-tuning) are the same measurement:
    keep one row per (split, σ), the first in leaderboard order."""
    return g.drop_duplicates(subset=["split", "noise_sigma"], keep="first")


def plot_recovery_vs_sigma(df, out_dir: Path, result: PlotResult) -> None:
    import pandas as pd

    rows = df[df["attack"].notna() & df["token_accuracy"].notna() & df["defense"].isin(["none", "gaussian"])]
    if rows[rows["defense"] == "gaussian"].empty:
        result.notes.append("recovery_vs_sigma: skipped, no gaussian-defense record with an attack result")
        return
    for (model, attack), g in sorted(rows.groupby(["model", "attack"], sort=True), key=lambda kv: tuple(map(str, kv[0]))):
        gauss = g[g["defense"] == "gaussian"]
        finetuned = (g["finetune_steps"].fillna(0) > 0).any()
        for relative in (True, False):
            fam = gauss[gauss["relative"].fillna(False) == relative]
            if fam.empty:
                continue
            base = g[g["defense"] == "none"]
            tasks = sorted(map(str, fam["task"].dropna().unique())) if finetuned else [None]
            for task in tasks:
                pts_all = pd.concat([base, fam])
                if task is not None:
                    pts_all = pts_all[pts_all["task"] == task]
                fig, ax = _new_fig()
                splits = sorted(pts_all["split"].unique(), key=_split_key)
                colors = _colors(splits)
                for split in splits:
                    pts = _dedupe_attack_rows(pts_all[pts_all["split"] == split]).sort_values("noise_sigma")
                    c = colors[split]
                    ax.plot(pts["noise_sigma"], pts["token_accuracy"], marker="o", ms=4, color=c,
                            label=f"split {split}")
                    lo, hi = pts["token_accuracy_ci_low"], pts["token_accuracy_ci_high"]
                    ok = lo.notna() & hi.notna()
                    if ok.any():
                        ax.fill_between(pts["noise_sigma"][ok], lo[ok], hi[ok], color=c, alpha=0.2, lw=0,
                                        label=f"split {split} 95% CI")
                ax.set_xlabel("σ (× RMS of h_A)" if relative else "σ (absolute)")
                ax.set_ylabel(METRIC_LABELS["token_accuracy"])
                ax.set_ylim(-0.02, 1.02)
                data = ", ".join(sorted(map(str, pts_all["attack_data"].dropna().unique())))
                ax.set_title(f"{model} · {attack}: recovery vs Gaussian noise"
                             + (f" · {task}" if task else "") + (f" (victims: {data})" if data else ""))
                _legend_outside(ax)
                _save(fig, out_dir, _slug("recovery_vs_sigma", model, attack,
                                          "relative" if relative else "absolute", *([task] if task else [])), result)


def plot_epsilon_utility(df, out_dir: Path, result: PlotResult) -> None:
    import pandas as pd

    rows = df[(df["defense"] == "dp-forward") & df["epsilon"].notna() & df["utility"].notna()
              & df["task"].notna()]
    rows = rows[rows["epsilon"].map(_finite)]
    if rows.empty:
        result.notes.append("epsilon_vs_utility: skipped, no dp-forward record with a finite ε and a task utility")
        return
    for (model, task), g in sorted(rows.groupby(["model", "task"], sort=True), key=lambda kv: tuple(map(str, kv[0]))):
        g = g.drop_duplicates(subset=["config_hash"], keep="first")
        fig, ax = _new_fig()
        splits = sorted(g["split"].unique(), key=_split_key)
        colors = _colors(splits)
        for split in splits:
            pts = g[g["split"] == split].sort_values(["epsilon", "config_hash"])
            ax.plot(pts["epsilon"], pts["utility"], marker="s", ms=4, color=colors[split], label=f"split {split}")
            ref = df[(df["model"] == model) & (df["task"] == task) & (df["split"] == split)
                     & (df["defense"] == "none") & df["utility"].notna()]
            if not ref.empty:
                ax.axhline(float(ref["utility"].mean()), color=colors[split], ls=":", lw=1.0,
                           label=f"split {split} undefended")
        central = df[(df["model"] == model) & (df["task"] == task) & (df["split"] == "centralized")
                     & df["utility"].notna()]
        if not central.empty:
            ax.axhline(float(central["utility"].mean()), color="k", ls="--", lw=1.0, label="centralized utility")
        eps = g["epsilon"].astype(float)
        if eps.min() > 0 and eps.max() / eps.min() > 100:
            ax.set_xscale("log")
        ax.set_xlabel("ε of dp-forward (at the record's δ; lower = more private)")
        ax.set_ylabel(_utility_label(task))
        ax.set_title(f"{model} · {task}: utility vs privacy budget ε (dp-forward)")
        _legend_outside(ax)
        _save(fig, out_dir, _slug("epsilon_vs_utility", model, task), result)


def plot_all(data, out_dir: str | os.PathLike) -> dict:
    """Write every plot that has data; `data` is a records dir, a list of records, or a leaderboard frame.

    Returns {"paths": [PNG and SVG paths written], "notes": [one line per plot skipped for lack of data]}.
    """
    # Figures are built with matplotlib.figure.Figure (no pyplot, no global figure state); savefig picks
    # the Agg/SVG canvas from the file format, so the process-wide backend is never touched.
    from matplotlib import rc_context

    df = _to_df(data)
    out = Path(out_dir)
    result = PlotResult()
    if df.empty:
        result.notes.append("no records: nothing to plot")
    else:
        with rc_context(RC):
            for fn in (plot_tradeoff, plot_recovery_vs_sigma, plot_epsilon_utility):
                fn(df, out, result)
    return {"paths": result.paths, "notes": result.notes}
