"""Utility-vs-privacy plots from the leaderboard (matplotlib, Agg; PNG + deterministic SVG).

`plot_all(records_or_df, out_dir)` writes, when the data exist:

- `tradeoff__<model>__<task>`: utility vs WORST-CASE recovery (the leaderboard's worst-case view: per cell,
  the maximum over every attack run of the attack's primary metric), with 95% CIs as error bars on both
  axes (utility: bootstrap over the eval examples, where the records carry it; recovery: the CI of the
  attack that reached the maximum); one curve per partition point and defense (and σ unit), points
  labelled with ε where the defense accounts for privacy, else with σ (those curves start at the undefended
  point, σ = 0); the centralized utility as a dashed horizontal line, the task's strongest trivial baseline
  (chance / majority / lead) as a dotted one, the Pareto front (worst-case view `pareto` flag: gated and
  CI-aware, flbench.reporting.score) as a grey step line with circled points. One plot per task, not per
  attack: the strongest attacker decides how private a defense is; each attack's own strength is in the
  recovery-vs-σ plots below;
- `recovery_vs_sigma__<model>__<attack>__<relative|absolute>[__<task>]`: attack recovery vs σ of the
  defenses without privacy accounting (σ = 0: no defense), one line per partition point (and defense, when
  several share the σ unit), the 95% CI as a shaded band (the FL-LLaMA "deeper head is more robust" analysis);
- `epsilon_vs_utility__<model>__<task>`: ε vs utility (95% CI error bars where the records carry them) for
  the defenses that account for privacy, one line per partition point, log-x when ε spans more than two decades, with the undefended and centralized
  utilities as reference lines.

Nothing here names a defense: the undefended reference is the defense family "none" (asked from the
registered class), σ and its unit are the leaderboard's `noise_sigma` / `relative` (asked from the defense),
and a defense accounts for privacy when its records carry a finite ε. A plot without data is skipped with
a note, never an error. SVGs are byte-identical across calls (fixed `svg.hashsalt`, no date in the metadata).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flbench.experiments import records as rec
from splits.partition import split_sort_key

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


def _with_family(df):
    """The leaderboard plus a `family` column, asked from the registered defense classes."""
    from flbench.reporting.leaderboard import defense_family

    return df.assign(family=[defense_family(n) for n in df["defense"]])


def _sigma_tag(relative: bool) -> str:
    return "σ×RMS" if relative else "σ"


def _utility_label(task: str) -> str:
    return f"{task} utility (primary task metric, 0–1)"


def _to_df(data):
    import pandas as pd

    from flbench.reporting import leaderboard

    if not isinstance(data, pd.DataFrame):
        if isinstance(data, (str, os.PathLike)):
            data = rec.read_records(data)
        data = leaderboard.build(list(data))
    out = _with_family(data)
    out.attrs = dict(data.attrs)
    return out


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


def _place_labels(ax, labels: list) -> None:
    """Move the point labels `labels` (matplotlib Text at their points) apart so none overlaps another, with a
    thin leader line back to its point (adjustText). Deterministic: a fixed iteration budget instead of its
    default one-second time limit, and its only random shifts use a fixed seed."""
    if not labels:
        return
    from adjustText import adjust_text

    x = [t.get_position()[0] for t in labels]
    y = [t.get_position()[1] for t in labels]
    adjust_text(labels, x=x, y=y, ax=ax, expand=(1.2, 1.6), force_text=(0.3, 0.5), force_static=(0.3, 0.5),
                iter_lim=500, arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.4})


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

# (marker, line style) per curve kind: σ relative, σ absolute, ε-accounted; further curves of a kind cycle on.
STYLES = [("o", "-"), ("^", "-."), ("s", ":"), ("D", "--"), ("v", (0, (3, 1, 1, 1)))]


def _accounted(rows) -> bool:
    """A defense accounts for privacy when its records carry a finite ε."""
    return bool(rows["epsilon"].map(_finite).any())


def _relative(rows):
    return rows["relative"].fillna(False).astype(bool)


def _primary(df, attack: Any) -> str | None:
    """The attack's primary metric if the leaderboard has that column: from the leaderboard (records, see
    `leaderboard.attack_primary`), else asked from the attack class."""
    from flbench.reporting.leaderboard import attack_primary

    ap = df.attrs.get("primary_metric", {}).get(attack) or attack_primary(attack)
    return ap if ap in df.columns else None


def _errors(rows, col: str):
    """Asymmetric error bars (2, n) from `col`_ci_low / _ci_high; 0 where a CI is missing."""
    import numpy as np

    v = rows[col].astype(float).to_numpy()
    lo = rows.get(f"{col}_ci_low", rows[col]).astype(float).to_numpy()
    hi = rows.get(f"{col}_ci_high", rows[col]).astype(float).to_numpy()
    below = np.where(np.isfinite(lo), v - lo, 0.0)
    above = np.where(np.isfinite(hi), hi - v, 0.0)
    return np.vstack([np.clip(below, 0, None), np.clip(above, 0, None)])


def _budget(row) -> tuple[int, int]:
    """A cell's fine-tuning steps and eval-set size: how a reference line is labelled."""
    steps, n = row["finetune_steps"], row["task_n"]
    return (0 if steps is None or steps != steps else int(steps)), (-1 if n is None or n != n else int(n))


def _reference_of(row, keys: dict) -> tuple:
    """What a utility reference must share with a plotted cell: the leaderboard's reference key (model, task config,
    fine-tuning config, seed; the key `utility_ref` is matched on) when the frame carries it, else the budget."""
    return _budget(row), keys.get(row.get("cell"), "")


def _references(refs, like) -> list[tuple[str, float]]:
    """Utility reference lines for the plotted rows `like`: the mean utility of the reference rows `refs` per
    reference key that some plotted row shares — a cell trained, seeded or scored differently is not its reference —
    labelled with the budget when the plotted rows span several keys (numbered when two keys share a budget)."""
    from flbench.reporting.leaderboard import REFERENCE_KEY

    keys = {**refs.attrs.get(REFERENCE_KEY, {}), **like.attrs.get(REFERENCE_KEY, {})}
    wanted = {_reference_of(r, keys) for _, r in like.iterrows()}
    by: dict[tuple, list[float]] = {}
    for _, r in refs.iterrows():
        if _reference_of(r, keys) in wanted:
            by.setdefault(_reference_of(r, keys), []).append(float(r["utility"]))
    many = len(wanted) > 1
    out, seen = [], {}
    for (b, key), v in sorted(by.items()):
        seen[b] = seen.get(b, 0) + 1
        label = f" ({b[0]} steps, n = {b[1]}{f', #{seen[b]}' if seen[b] > 1 else ''})" if many else ""
        out.append((label, sum(v) / len(v)))
    return out


def _point_label(r, accounted: bool) -> str:
    """A trade-off point's label: its ε (accounted defenses), its σ (noise defenses and the undefended point), or
    the defense's name (a defense without a noise scale, e.g. NoPeek); "≥" when a search-limited attack makes
    its worst-case recovery a lower bound (never at full recovery, which nothing can exceed)."""
    from flbench.reporting.claims import RECALL_OK

    if accounted and _finite(r["epsilon"]):
        txt = f"ε={r['epsilon']:.3g}"
    elif r["family"] != "none" and not (_finite(r["noise_sigma"]) and r["noise_sigma"] > 0):
        txt = str(r["defense"])
    else:
        txt = f"σ={_num(r['noise_sigma'])}" if _finite(r["noise_sigma"]) else "σ=?"
    recall = r.get("candidate_recall", float("nan"))
    if _finite(recall) and recall < RECALL_OK and r["worst_recovery"] < 1.0:  # the search limited it
        txt += " ≥"
    return txt


def plot_tradeoff(df, out_dir: Path, result: PlotResult, worst=None) -> None:
    import pandas as pd

    from flbench.reporting.claims import RECALL_OK
    from flbench.reporting.leaderboard import build_worst_case

    w = _with_family(build_worst_case(df) if worst is None else worst)
    ap = "worst_recovery"
    rows = w[w["task"].notna() & w["utility"].notna()]
    drawn = 0
    for (model, task), g in sorted(rows.groupby(["model", "task"], sort=True, dropna=False),
                                   key=lambda kv: tuple(map(str, kv[0]))):
        g = g[g[ap].notna()]
        if g.empty:
            continue
        drawn += 1
        fig, ax = _new_fig()
        splits = sorted(g["split"].unique(), key=split_sort_key)
        colors = _colors(splits)
        steps = sorted(g["finetune_steps"].fillna(0).astype(int).unique())
        labels: list = []  # each point's σ (or ε) label, placed clear of the others at the end
        bounded = False  # some point's recovery is a search-limited lower bound
        for split, ft in [(sp, st) for sp in splits for st in steps]:
            gs = g[(g["split"] == split) & (g["finetune_steps"].fillna(0).astype(int) == ft)]
            if gs.empty:
                continue
            where = f"split {split}" + (f" · {'zero-shot' if ft == 0 else f'{ft} ft steps'}" if len(steps) > 1 else "")
            used: dict[int, int] = {}
            # the gradient edge's defense ("" = none): a line joins only cells with the same one
            edges = gs.get("grad_defense", pd.Series(None, index=gs.index)).astype(object).fillna("").astype(str)
            for edge in sorted(edges.unique()):
                ge = gs[edges == edge]
                plus = f" + {edge}" if edge else ""
                base = ge[ge["family"] == "none"]
                noisy = ge[ge["family"] != "none"].assign(_rel=lambda x: _relative(x))
                drawn_any = False
                for (name, rel), fam in sorted(noisy.groupby(["defense", "_rel"], sort=True), key=lambda kv: str(kv[0])):
                    accounted = _accounted(fam)
                    kind = 2 if accounted else (0 if rel else 1)
                    marker, ls = STYLES[(kind + 3 * used.get(kind, 0) + steps.index(ft)) % len(STYLES)]
                    used[kind] = used.get(kind, 0) + 1
                    pts = fam if accounted else pd.concat([base, fam])
                    pts = pts.sort_values(["noise_sigma", "cell"])
                    tag = "ε" if accounted else _sigma_tag(rel)
                    ax.errorbar(pts[ap], pts["utility"], xerr=_errors(pts, ap), yerr=_errors(pts, "utility"), ls=ls,
                                marker=marker, ms=4, color=colors[split], elinewidth=0.7, capsize=2,
                                label=f"{where} · {name}{plus} ({tag})")
                    for _, r in pts.iterrows():
                        labels.append(ax.text(r[ap], r["utility"], _point_label(r, accounted), fontsize=6.5,
                                              color=colors[split]))
                        bounded = bounded or labels[-1].get_text().endswith("≥")
                    drawn_any = True
                if not drawn_any and not base.empty:
                    ax.errorbar(base[ap], base["utility"], xerr=_errors(base, ap), yerr=_errors(base, "utility"),
                                ls="none", marker="o", ms=4, color=colors[split], elinewidth=0.7, capsize=2,
                                label=f"{where} · none{plus}")
        front = g[g["pareto"]].sort_values([ap, "utility"])
        if not front.empty:
            ax.step(front[ap], front["utility"], where="post", color="0.35", lw=1.0, ls="--",
                    zorder=1, label="Pareto front")
            ax.scatter(front[ap], front["utility"], s=90, facecolors="none", edgecolors="0.2",
                       linewidths=1.0, zorder=3)
        central = w[(w["model"] == model) & (w["task"] == task) & (w["split"] == "centralized")
                    & w["utility"].notna()]
        for k, (suffix, value) in enumerate(_references(central, g)):
            ax.axhline(value, color="k", ls=("--", "-.", ":")[k % 3], lw=1.0, label="centralized utility" + suffix)
        trivial = g[g["baseline"].notna()]
        if not trivial.empty:
            kind = ", ".join(sorted(map(str, trivial["baseline_kind"].dropna().unique())))
            ax.axhline(float(trivial["baseline"].max()), color="0.45", ls=":", lw=1.0, label=f"baseline ({kind})")
        metrics = sorted(map(str, g["worst_metric"].dropna().unique()))
        attacks = sorted({a for s in g["attacks"].dropna() for a in str(s).split(";")})
        what = METRIC_LABELS.get(metrics[0], metrics[0]) if len(metrics) == 1 else "primary recovery metric"
        ax.set_xlabel(f"worst-case {what} over {', '.join(attacks)} → more leakage")
        ax.set_ylabel(_utility_label(task) + " [95% CI]")
        ax.set_title(f"{model} · {task}: utility vs worst-case attack recovery")
        if bounded:  # one legend entry explains the mark instead of a long label on every such point
            ax.plot([], [], ls="none", marker="$≥$", color="0.3",
                    label=f"≥: a lower bound (search recall < {RECALL_OK:g})")
        _place_labels(ax, labels)
        _legend_outside(ax)
        _save(fig, out_dir, _slug("tradeoff", model, task), result)
    if not drawn:
        result.notes.append("tradeoff: skipped, no record has both a task utility and an attack result")


def _dedupe_attack_rows(g):
    """Attack results of cells that differ only in the task (no fine-tuning) are the same measurement:
    keep one row per (split, defense, σ), the first in leaderboard order."""
    return g.drop_duplicates(subset=["split", "defense", "noise_sigma"], keep="first")


def plot_recovery_vs_sigma(df, out_dir: Path, result: PlotResult) -> None:
    import pandas as pd

    from flbench.reporting.leaderboard import attack_label

    rows = df[df["attack"].notna()]
    # one plot per attack and attacker head: a surrogate-head run is not the same attack as the public-head one
    rows = rows.assign(_rel=lambda x: _relative(x), _attack=[attack_label(r) for r in rows.to_dict("records")])
    is_sigma = (rows["family"] != "none") & rows["noise_sigma"].map(_finite) & ~rows["epsilon"].map(_finite)
    drawn = 0
    for (model, attack), g in sorted(rows.groupby(["model", "_attack"], sort=True), key=lambda kv: tuple(map(str, kv[0]))):
        ap = _primary(df, g["attack"].iloc[0])
        if ap is None:
            continue
        keep = g[ap].notna()
        noisy = g[keep & is_sigma.loc[g.index]]
        # a boolean Series, not a list: an empty list would select no *columns* when no cell has noise yet
        noisy = noisy[pd.Series([not _accounted(noisy[noisy["defense"] == n]) for n in noisy["defense"]],
                                index=noisy.index, dtype=bool)]
        base = g[keep & (g["family"] == "none")]
        finetuned = (g["finetune_steps"].fillna(0) > 0).any()
        for relative in (True, False):
            fam = noisy[noisy["_rel"] == relative]
            if fam.empty:
                continue
            names = sorted(map(str, fam["defense"].unique()))
            tasks = sorted(map(str, fam["task"].dropna().unique())) if finetuned else [None]
            for task in tasks:
                pts_all = pd.concat([base, fam])
                if task is not None:
                    pts_all = pts_all[pts_all["task"] == task]
                fig, ax = _new_fig()
                splits = sorted(pts_all["split"].unique(), key=split_sort_key)
                colors = _colors(splits)
                for split in splits:
                    at_split = pts_all[pts_all["split"] == split]
                    for k, name in enumerate(names):
                        one = at_split[(at_split["family"] == "none") | (at_split["defense"] == name)]
                        pts = _dedupe_attack_rows(one).sort_values("noise_sigma")
                        c = colors[split]
                        tag = f"split {split}" + (f" · {name}" if len(names) > 1 else "")
                        ax.plot(pts["noise_sigma"], pts[ap], marker="o", ms=4, color=c, ls=STYLES[k % len(STYLES)][1],
                                label=tag)
                        if f"{ap}_ci_low" in pts.columns:
                            lo, hi = pts[f"{ap}_ci_low"], pts[f"{ap}_ci_high"]
                            ok = lo.notna() & hi.notna()
                            if ok.any():
                                ax.fill_between(pts["noise_sigma"][ok], lo[ok], hi[ok], color=c, alpha=0.2, lw=0,
                                                label=f"{tag} 95% CI")
                drawn += 1
                ax.set_xlabel("σ (× RMS of h_A)" if relative else "σ (absolute)")
                ax.set_ylabel(METRIC_LABELS.get(ap, ap))
                ax.set_ylim(-0.02, 1.02)
                data = ", ".join(sorted(map(str, pts_all["attack_data"].dropna().unique())))
                ax.set_title(f"{model} · {attack}: recovery vs noise ({', '.join(names)})"
                             + (f" · {task}" if task else "") + (f" (victims: {data})" if data else ""))
                _legend_outside(ax)
                _save(fig, out_dir, _slug("recovery_vs_sigma", model, attack,
                                          "relative" if relative else "absolute", *([task] if task else [])), result)
    if not drawn:
        result.notes.append("recovery_vs_sigma: skipped, no record of a noise defense without privacy accounting "
                            "with an attack result")


def plot_epsilon_utility(df, out_dir: Path, result: PlotResult) -> None:
    rows = df[(df["family"] != "none") & df["epsilon"].map(_finite) & df["utility"].notna() & df["task"].notna()]
    if rows.empty:
        result.notes.append("epsilon_vs_utility: skipped, no record with a finite ε and a task utility")
        return
    for (model, task), g in sorted(rows.groupby(["model", "task"], sort=True), key=lambda kv: tuple(map(str, kv[0]))):
        g = g.drop_duplicates(subset=["config_hash"], keep="first")
        names = sorted(map(str, g["defense"].unique()))
        fig, ax = _new_fig()
        splits = sorted(g["split"].unique(), key=split_sort_key)
        colors = _colors(splits)
        for split in splits:
            for k, name in enumerate(names):
                pts = g[(g["split"] == split) & (g["defense"] == name)].sort_values(["epsilon", "config_hash"])
                if pts.empty:
                    continue
                ax.errorbar(pts["epsilon"], pts["utility"], yerr=_errors(pts, "utility"), marker="s", ms=4,
                            color=colors[split], ls=STYLES[k % len(STYLES)][1], elinewidth=0.7, capsize=2,
                            label=f"split {split}" + (f" · {name}" if len(names) > 1 else ""))
            ref = df[(df["model"] == model) & (df["task"] == task) & (df["split"] == split)
                     & (df["family"] == "none") & df["utility"].notna()]
            for suffix, value in _references(ref, g[g["split"] == split]):
                ax.axhline(value, color=colors[split], ls=":", lw=1.0, label=f"split {split} undefended" + suffix)
        central = df[(df["model"] == model) & (df["task"] == task) & (df["split"] == "centralized")
                     & df["utility"].notna()]
        for suffix, value in _references(central, g):
            ax.axhline(value, color="k", ls="--", lw=1.0, label="centralized utility" + suffix)
        eps = g["epsilon"].astype(float)
        if eps.min() > 0 and eps.max() / eps.min() > 100:
            ax.set_xscale("log")
        ax.set_xlabel(f"ε of {', '.join(names)} (at the record's δ; lower = more private)")
        ax.set_ylabel(_utility_label(task))
        ax.set_title(f"{model} · {task}: utility vs privacy budget ε ({', '.join(names)})")
        _legend_outside(ax)
        _save(fig, out_dir, _slug("epsilon_vs_utility", model, task), result)


def plot_all(data, out_dir: str | os.PathLike) -> dict:
    """Write every plot that has data; `data` is a records dir, a list of records, or a leaderboard frame (the
    records view; the worst-case view of the trade-off plots is derived from it).

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
