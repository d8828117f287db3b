"""Plots: files written (PNG + SVG), SVG deterministic, missing data skipped with a note."""
from __future__ import annotations

import pytest
from synth_records import grid

from flbench.reporting import leaderboard as lb
from flbench.reporting.plots import plot_all


def test_plots_written_and_svg_deterministic(tmp_path):
    df = lb.build(grid(attacks=("learned-inversion", "embedding-nn")))
    a = plot_all(df, tmp_path / "a")
    b = plot_all(df, tmp_path / "b")
    names = sorted(p.name for p in a["paths"])
    assert a["notes"] == []
    assert names == sorted(p.name for p in b["paths"])
    stems = {n.rsplit(".", 1)[0] for n in names}
    assert stems == {"tradeoff__m__sst2",  # one trade-off per task, on the worst case over both attacks
                     "recovery_vs_sigma__m__learned-inversion__relative",
                     "recovery_vs_sigma__m__embedding-nn__relative", "epsilon_vs_utility__m__sst2"}
    for p in a["paths"]:
        assert p.stat().st_size > 1000
        if p.suffix == ".svg":
            text = p.read_text()
            assert "<svg" in text and "<dc:date>" not in text
            assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes()
    svg = (tmp_path / "a" / "recovery_vs_sigma__m__learned-inversion__relative.svg").read_text()
    assert "σ (× RMS of h_A)" in svg and "token accuracy (fraction of tokens recovered)" in svg  # axis labels
    svg = (tmp_path / "a" / "tradeoff__m__sst2.svg").read_text()
    assert "worst-case token accuracy" in svg and "embedding-nn, learned-inversion" in svg and "[95% CI]" in svg
    assert plot_all(grid(attacks=("learned-inversion", "embedding-nn")), tmp_path / "c")["notes"] == []
    assert (tmp_path / "c" / "tradeoff__m__sst2.svg").read_bytes() == (tmp_path / "a" / "tradeoff__m__sst2.svg").read_bytes()


def test_tradeoff_error_bars_come_from_the_cis():
    """Utility error bars from the records' bootstrap CI, recovery error bars from the worst attack's CI."""
    import numpy as np

    from flbench.reporting.plots import _errors

    recs = grid(splits=("1,1",), sigmas=(1,), zs=())
    for r in recs:
        if r["task"] is not None:
            u = r["task"]["metrics"]["accuracy"]
            r["task"]["ci"] = {"accuracy": {"mean": u, "ci_low": u - 0.03, "ci_high": u + 0.05, "n": 100}}
    w = lb.build_worst_case(recs)
    w = w[w["worst_recovery"].notna()]
    np.testing.assert_allclose(_errors(w, "utility"), [[0.03] * len(w), [0.05] * len(w)], atol=1e-12)
    lo, hi = w["worst_recovery_ci_low"], w["worst_recovery_ci_high"]
    np.testing.assert_allclose(_errors(w, "worst_recovery"), [w["worst_recovery"] - lo, hi - w["worst_recovery"]])


def test_plots_skip_without_data(tmp_path):
    only_central = [r for r in grid() if r["split"] is None]
    res = plot_all(only_central, tmp_path)
    assert res["paths"] == [] and len(res["notes"]) == 3
    assert any(n.startswith("tradeoff: skipped") for n in res["notes"])
    res = plot_all([], tmp_path)
    assert res["paths"] == [] and res["notes"]
    no_dp = [r for r in grid() if r["defense"]["name"] != "dp-forward"]
    res = plot_all(no_dp, tmp_path / "c")
    assert [n.split(":")[0] for n in res["notes"]] == ["epsilon_vs_utility"]


def test_reference_lines_come_from_cells_with_the_plotted_budget():
    """A utility reference (undefended split, centralized) is drawn from cells fine-tuned and scored as the plotted
    ones: a 40-step, n = 200 centralized cell is not the reference of 60-step, n = 300 cells, and two budgets give
    two labelled lines, never their mean."""
    import pandas as pd

    from flbench.reporting.plots import _references

    refs = pd.DataFrame({"finetune_steps": [40, 60, 60], "task_n": [200, 300, 300], "utility": [0.79, 0.84, 0.82]})
    one = pd.DataFrame({"finetune_steps": [60, 60], "task_n": [300, 300]})
    assert _references(refs, one) == [("", pytest.approx(0.83))]
    both = pd.DataFrame({"finetune_steps": [40, 60], "task_n": [200, 300]})
    assert _references(refs, both) == [(" (40 steps, n = 200)", pytest.approx(0.79)),
                                       (" (60 steps, n = 300)", pytest.approx(0.83))]
    assert _references(refs, pd.DataFrame({"finetune_steps": [150], "task_n": [872]})) == []
    zero_shot = pd.DataFrame({"finetune_steps": [float("nan")], "task_n": [100]})
    assert _references(pd.DataFrame({"finetune_steps": [None], "task_n": [100], "utility": [0.5]}), zero_shot) == [("", 0.5)]


def test_reference_lines_match_the_leaderboard_reference_key():
    """Cells that share steps and n but differ in seed (or lr) are not each other's reference: the plots match on the
    leaderboard's reference key, as `utility_ref` does, and carry it through the worst-case view and filtering."""
    import copy

    import pandas as pd

    from flbench.reporting import leaderboard
    from flbench.reporting.plots import _references, _to_df

    central = [r for r in grid() if r.get("split") is None][:1]
    assert central, "the fixture grid has a centralized record"
    other_seed = copy.deepcopy(central[0])
    other_seed["config"]["seed"] = 12345
    other_seed["task"]["metrics"] = {k: 0.0 for k in other_seed["task"]["metrics"]}
    split = [r for r in grid() if r.get("split") is not None][:1]
    df = _to_df(central + [other_seed] + split)
    keys = df.attrs[leaderboard.REFERENCE_KEY]
    assert len(set(keys.values())) == 2
    w = leaderboard.build_worst_case(df)
    assert w.attrs[leaderboard.REFERENCE_KEY] == keys
    cent = w[w["split"] == "centralized"]
    like = w[w["split"] != "centralized"]
    assert len(cent) == 2 and len(like) == 1
    lines = _references(cent, like)
    assert lines == [("", pytest.approx(float(cent.loc[cent["utility"] > 0, "utility"].iloc[0])))]
    # Without the key (a frame built elsewhere), the budget alone decides: both centralized cells count.
    bare = pd.DataFrame(cent.to_dict("list")), pd.DataFrame(like.to_dict("list"))
    assert _references(*bare) == [("", pytest.approx(float(cent["utility"].mean())))]


def test_point_labels_are_moved_apart():
    """Labels of points that (nearly) coincide — the low-recovery end of a trade-off plot — end up not overlapping."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flbench.reporting.plots import _place_labels

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.set_xlim(0, 1)
    ax.set_ylim(0.4, 0.9)
    labels = [ax.text(0.01 + 0.002 * i, 0.5, f"σ={2 ** i} ≥", fontsize=6.5) for i in range(6)]
    renderer = fig.canvas.get_renderer()

    def overlaps() -> int:
        boxes = [t.get_window_extent(renderer) for t in labels]
        return sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])

    assert overlaps() > 0  # as drawn at their points
    _place_labels(ax, labels)
    assert overlaps() == 0
    plt.close(fig)


def test_records_without_any_noisy_cell_plot_the_tradeoff_and_skip_the_sigma_curves(tmp_path):
    """A sweep's first cells (undefended and centralized only): the trade-off is drawn, recovery-vs-σ skipped
    with a note — not a crash."""
    recs = [r for r in grid(zs=()) if r["defense"]["name"] == "none"]
    assert recs and all(r["defense"]["name"] == "none" for r in recs)
    res = plot_all(recs, tmp_path)
    assert [p.name for p in res["paths"]] == ["tradeoff__m__sst2.png", "tradeoff__m__sst2.svg"]
    assert any(n.startswith("recovery_vs_sigma: skipped") for n in res["notes"])


def test_tradeoff_lines_join_only_cells_with_the_same_gradient_defense(tmp_path):
    """A cell defended on both edges is its own line ("gaussian + grad-dp"), never joined to the h_A-only cells;
    a defense without a noise scale is labelled by name; full recovery is never marked as a lower bound."""
    import copy

    import pandas as pd

    from flbench.reporting.plots import _point_label

    recs = grid(attacks=("learned-inversion",))
    both = []
    for r in recs:
        if r.get("split") is None:
            continue
        r2 = copy.deepcopy(r)
        g = {"name": "grad-dp", "params": {"clip": 0.01, "noise_multiplier": 3.0}}
        r2["config"]["grad_defense"] = g
        r2["grad_defense"] = {**g, "epsilon": 3.0, "delta": 1e-5}
        r2["config_hash"] = r2["record_id"] = None
        both.append(r2)
    res = plot_all(recs + both, tmp_path)
    svg = next(p for p in res["paths"] if p.name == "tradeoff__m__sst2.svg").read_text()
    assert "gaussian + grad-dp (σ×RMS)" in svg and "gaussian (σ×RMS)" in svg
    row = {"family": "nopeek", "defense": "nopeek", "noise_sigma": 0.0, "epsilon": float("nan"),
           "candidate_recall": 0.3, "worst_recovery": 0.5}
    assert _point_label(pd.Series(row), accounted=False) == "nopeek ≥"
    assert _point_label(pd.Series({**row, "worst_recovery": 1.0}), accounted=False) == "nopeek"
    assert _point_label(pd.Series({**row, "family": "gaussian", "noise_sigma": 2.0, "candidate_recall": 0.95}),
                        accounted=False) == "σ=2"
