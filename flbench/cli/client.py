"""`flbench client --rank I`: one client party (rank I = client I-1) of a distributed split training run."""
from __future__ import annotations

import click

from flbench.cli.common import emit, make_cli_defense, make_cli_grad_defense, party_defense_options, pop_grad_options
from flbench.cli.serve import build_job, job_options
from flbench.core.errors import FlbenchError


@click.command("client")
@click.option("--rank", type=click.IntRange(min=1), required=True, help="this client's rank (client c is rank c+1)")
@job_options
@click.option("--data-file", type=click.Path(dir_okay=False), default=None,
              help="this client's training text (one per line, or JSONL with 'text'); it keeps its shard only")
@click.option("--data-dir", default=None, help="local data directory for --task")
@party_defense_options
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def client_cmd(rank, model, split_text, clients, strategy, sync_every, steps, batch_size, max_length, lr, lora_rank,
               lora_alpha, train_parts, task_name, seed, dtype, timeout, out, wire_dtype, data_file, data_dir, as_json,
               **defense_opts) -> None:
    """Run one client party of a distributed training run; MASTER_ADDR/MASTER_PORT from the environment. Its
    defenses (--defense on the hidden states it sends, --grad-defense on the gradient its tail sends back) are
    its own: they draw from client (rank − 1)'s streams of --seed, as the same client of
    `flbench train --transport distributed` does."""
    from flbench.pipeline.distributed import defense_job, job_world_size, run_party

    if rank > clients:
        raise FlbenchError(f"--rank {rank}: with --clients {clients} the client ranks are 1..{clients} (0 is the server)")
    if (data_file is None) == (task_name is None):
        raise FlbenchError("give exactly one of --data-file FILE (plain text) or --task NAME (flbench ls tasks)")
    job = build_job(model, split_text, clients, strategy, steps, batch_size, max_length, lr, lora_rank, lora_alpha,
                    train_parts, task_name, seed, wire_dtype, data_file=data_file, data_dir=data_dir,
                    sync_every=sync_every, dtype=dtype)
    secure = bool(defense_opts.get("secure_noise"))
    grad_opts = pop_grad_options(defense_opts)
    defense, _ = make_cli_defense(seed=seed, **defense_opts)
    grad_defense, _ = make_cli_grad_defense(seed, secure, **grad_opts)
    job["defense"], job["grad_defense"] = defense_job(defense, secure), defense_job(grad_defense, secure)
    report = run_party(rank, job_world_size(job), job, out, timeout)
    if report["error"]:
        raise FlbenchError(report["error"])

    def human(o):
        ls = [r["loss"] for r in o["losses"]]
        click.echo(f"client {o['client']}: {len(ls)} step(s), loss {ls[0]:.3f} → {ls[-1]:.3f}; wire "
                   f"{o['wire']['bytes_total']} B; adapters in {out}")

    emit(report, as_json, human)
