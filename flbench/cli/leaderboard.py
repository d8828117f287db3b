"""`flbench leaderboard`: derive the leaderboard from the run records."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from flbench.core.errors import FlbenchError


@click.command("leaderboard")
@click.option("--records", default="results/runs", show_default=True, help="directory of run records")
@click.option("--view", type=click.Choice(["records", "worst-case", "claims"]), default="records",
              show_default=True,
              help="records: one row per (cell, attack); worst-case: one row per cell with the maximum recovery "
                   "over all its attacks; claims: per split and defense, the best utility whose worst-case "
                   "recovery is below 10 % / 1 %, against centralized")
@click.option("--out", default=None, help="write here [default: results/leaderboard.csv, "
              "results/leaderboard_worst_case.csv with --view worst-case, results/leaderboard_claims.csv with --view "
              "claims; .md with --format md]")
@click.option("--format", "fmt", type=click.Choice(["csv", "md"]), default="csv", show_default=True)
@click.option("--stdout", "to_stdout", is_flag=True, help="print instead of writing a file")
@click.option("--attack", "only_attacks", multiple=True, help="keep only rows of this attack (repeatable)")
@click.option("--task", "only_tasks", multiple=True, help="keep only rows of this task (repeatable)")
def leaderboard_cmd(records, view, out, fmt, to_stdout, only_attacks, only_tasks) -> None:
    """Derive the leaderboard (utility CIs, baselines, score, DCS, Pareto flag) from the records; byte-identical
    for the same records."""
    from flbench.core.io import check_output
    from flbench.experiments.records import read_records
    from flbench.reporting import leaderboard as lb

    path = None
    if not to_stdout:  # refuse an unusable --out before reading anything; the leaderboard is rewritten in place
        stem = "results/leaderboard" + {"worst-case": "_worst_case", "claims": "_claims"}.get(view, "")
        path = check_output(Path(out or f"{stem}.{fmt}"), kind="file", overwrite=True)
    recs = read_records(Path(records))
    if not recs:
        raise FlbenchError(f"--records {records!r}: no run records found (run flbench run or flbench sweep first)")
    if view != "records" and only_attacks:
        raise FlbenchError(f"--attack does not apply to --view {view} (its rows take the maximum over every "
                           "attack of a cell); use --view records")
    df = lb.build_view(recs, view)
    for col, keep in (("attack", only_attacks), ("task", only_tasks)):
        if keep:
            unknown = sorted(set(keep) - set(df[col].dropna().astype(str)))
            if unknown:
                raise FlbenchError(f"--{col} {unknown[0]}: no such {col} in the records; present: "
                                   f"{', '.join(sorted(set(df[col].dropna().astype(str))))}")
            df = df[df[col].isin(keep)].reset_index(drop=True)
    text = lb.to_csv(df) if fmt == "csv" else lb.to_markdown(df)
    if to_stdout:
        sys.stdout.write(text)
        return
    from flbench.experiments.records import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    click.echo(f"[flbench] {len(df)} rows from {len(recs)} records → {path}", err=True)
