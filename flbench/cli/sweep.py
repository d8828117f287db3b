"""`flbench sweep`: a grid of cells from a YAML spec."""
from __future__ import annotations

from pathlib import Path

import click

from flbench.core.errors import FlbenchError


@click.command("sweep")
@click.argument("spec_file", type=click.Path(dir_okay=False))
@click.option("--out", default="results/runs", show_default=True, help="directory for the records")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="skip cells whose config hash already has its records")
@click.option("--shard", default=None, help="run only shard I of N (I/N, 1-based), e.g. for array jobs")
@click.option("--dry-run", is_flag=True, help="list the cells (hash, done or not) without running them")
def sweep_cmd(spec_file, out, resume, shard, dry_run) -> None:
    """Run a grid of cells from a YAML spec (yaml.safe_load; never executed as code)."""
    from flbench.experiments import sweep as sw
    from flbench.experiments.records import config_hash, is_done
    from flbench.pipeline.cell import check_cell, run_cell

    spec = sw.load_spec(spec_file)
    cells = [check_cell(c) for c in sw.expand(spec)]
    if shard:
        cells = sw.shard(cells, shard)
    if dry_run:
        for c in cells:
            h = config_hash(c)
            state = "done" if is_done(h, Path(out)) else "todo"
            click.echo(f"{h} {state} {c['model']} split={c['split']} defense={c['defense']} "
                       f"task={(c['task'] or {}).get('name')} attacks={','.join(c['attacks'])}")
        return
    if resume and Path(out).is_dir():
        from flbench.experiments.records import read_records
        from flbench.pipeline.cell import seed_attack_memo

        seed_attack_memo(read_records(Path(out)))
    summary = sw.run_sweep(cells, Path(out), lambda c: run_cell(c, progress=False), resume=resume, progress=True)
    failed = summary.get("failed") or []
    click.echo(f"[flbench] sweep {spec_file}: {summary.get('ran', 0)} cell(s) run, {summary.get('skipped', 0)} "
               f"skipped (done), {len(failed)} failed; records in {out}", err=True)
    if failed:
        first = failed[0]
        raise FlbenchError(f"{len(failed)} cell(s) failed (first: cell {first['config_hash']}: {first['error']}); "
                           "rerun the sweep to retry them")
