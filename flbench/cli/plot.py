"""`flbench plot`: figures derived from the run records."""
from __future__ import annotations

from pathlib import Path

import click

from flbench.core.errors import FlbenchError


@click.command("plot")
@click.option("--records", default="results/runs", show_default=True, help="directory of run records")
@click.option("--out", default="results/plots", show_default=True, help="directory for PNG + SVG files")
def plot_cmd(records, out) -> None:
    """Utility vs worst-case attack recovery (95% CI error bars) per task, recovery vs σ per attack, ε vs utility
    (PNG and SVG)."""
    from flbench.core.io import check_output
    from flbench.experiments.records import read_records
    from flbench.reporting import leaderboard as lb
    from flbench.reporting import plots

    check_output(Path(out), kind="dir", existing_dir_ok=True)  # plots are rewritten in place
    recs = read_records(Path(records))
    if not recs:
        raise FlbenchError(f"--records {records!r}: no run records found (run flbench run or flbench sweep first)")
    res = plots.plot_all(lb.build(recs), Path(out))
    for p in res.get("paths", []):
        click.echo(str(p))
    for n in res.get("notes", []):
        click.echo(f"[flbench] note: {n}", err=True)
