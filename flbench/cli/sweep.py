"""`flbench sweep`: a grid of cells from a YAML spec, every cell a typed RunConfig."""
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
@click.option("--cells", default=None,
              help="run only these cells, in this order: comma-separated config hashes (or unique prefixes, "
                   "at least 4 hex digits) as --dry-run lists them; their records are the full grid's")
@click.option("--dry-run", is_flag=True, help="list the cells (hash, done or not) without running them")
@click.option("--fit-cache", default=None, type=click.Path(file_okay=False),
              help="directory where learned attackers' fits are stored and reused by cells whose fit reads the "
                   "same public inputs (e.g. cells differing only in the gradient defense or fine-tuning), and "
                   "fine-tuned clients by cells whose fine-tuning is the same (e.g. differing only in the attacks "
                   "or the attacker), with their utility evaluation; a killed decoder fit resumes from its "
                   "checkpoint there")
def sweep_cmd(spec_file, out, resume, shard, cells, dry_run, fit_cache) -> None:
    """Run a grid of cells from a YAML spec (safe YAML; never executed as code).

    The whole spec is validated (every value of every axis, every cell) before the first cell runs; then each
    split is checked against its model's block count (the model is loaded once, as the first cell would)."""
    from flbench.core.io import check_output
    from flbench.experiments import sweep as sw

    if shard and cells:
        raise FlbenchError("--shard and --cells cannot be combined: --cells already names the cells to run")
    if shard:
        sw.parse_shard(shard)  # the options first: they are cheap to check
    out_dir = Path(out) if dry_run else check_output(out, kind="dir", existing_dir_ok=True)
    from attacks.fit_cache import open_fit_cache

    cache = None if dry_run else open_fit_cache(fit_cache)
    spec = sw.load_spec(spec_file)
    chosen, cells = cells, sw.expand(spec)
    if shard:
        cells = sw.shard(cells, shard)
    if chosen:
        cells = sw.select_cells(cells, chosen)
    if dry_run:
        done = sw.finished(out_dir)
        for c in cells:
            state = "done" if c.hash in done else "todo"
            click.echo(f"{c.hash} {state} {c.label()}")
        return
    from flbench.pipeline.cell import model_blocks, run_cell, seed_attack_memo

    done = sw.finished(out_dir) if resume else set()
    todo = [c for c in cells if c.hash not in done]
    sw.check_splits(spec, todo, model_blocks)
    if resume and out_dir.is_dir():
        from flbench.experiments.records import read_records

        seed_attack_memo(read_records(out_dir))
    summary = sw.run_sweep(cells, out_dir, lambda c: run_cell(c, progress=False, fit_cache=cache), resume=resume, progress=True)
    failed = summary.failed
    click.echo(f"[flbench] sweep {spec_file}: {summary.ran} cell(s) run, {summary.skipped} skipped (done), "
               f"{len(failed)} failed; records in {out}", err=True)
    if failed:
        first = failed[0]
        raise FlbenchError(f"{len(failed)} cell(s) failed (first: cell {first['config_hash']}: {first['error']}); "
                           "rerun the sweep to retry them")
