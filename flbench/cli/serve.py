"""`flbench serve`: the server party of a distributed split training run (rank 0 of the process group);
`flbench client --rank I` runs each client. Every party takes the same job options; the server needs no
data. MASTER_ADDR / MASTER_PORT (the server's host and a free port) are read from the environment, as
torch.distributed does. `flbench train --transport distributed` starts all of them on this machine."""
from __future__ import annotations

import click

from flbench.cli.common import DEFAULT_MODEL, DEFAULT_SPLIT, DTYPE_HELP, POSITIVE_INT, FiniteFloatRange, emit, wire_options
from flbench.pipeline.config import FinetuneConfig, default
from splits.strategies import strategies

DISTRIBUTED_STRATEGIES = ("sequential", "client-batch", "server-hierarchical")
DEFAULT_TIMEOUT = 300.0


def job_options(f):
    """The options every party of a distributed run must share (checked in the handshake)."""
    opts = [
        click.option("--model", default=DEFAULT_MODEL, show_default=True, help="registry name, local directory or HF id"),
        click.option("--split", "split_text", default=DEFAULT_SPLIT, show_default=True,
                     help="P,Q: blocks in the client head and tail"),
        click.option("--clients", type=POSITIVE_INT, required=True, help="number of clients (world size − 1)"),
        click.option("--strategy", type=click.Choice(DISTRIBUTED_STRATEGIES), default="sequential", show_default=True,
                     help="server-hierarchical: K sub-servers (flbench serve --sub-server S) and K clients"),
        click.option("--sync-every", type=POSITIVE_INT, default=None,
                     help="server-hierarchical: FedAvg every N rounds [default: 1]"),
        click.option("--steps", type=POSITIVE_INT, default=default(FinetuneConfig, "steps"), show_default=True),
        click.option("--batch-size", type=POSITIVE_INT, default=default(FinetuneConfig, "batch_size"), show_default=True),
        click.option("--max-length", type=click.IntRange(min=2), default=default(FinetuneConfig, "max_length"),
                     show_default=True),
        click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=default(FinetuneConfig, "lr"),
                     show_default=True),
        click.option("--lora-rank", type=POSITIVE_INT, default=default(FinetuneConfig, "lora_rank"), show_default=True),
        click.option("--lora-alpha", type=FiniteFloatRange(min=0, min_open=True),
                     default=default(FinetuneConfig, "lora_alpha"), show_default=True),
        click.option("--train-parts", default="head,trunk,tail", show_default=True),
        click.option("--task", "task_name", default=None, help="the task the clients train on (if not --data-file)"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
                     help=DTYPE_HELP + " (every party the same)"),
        click.option("--timeout", type=FiniteFloatRange(min=0, min_open=True), default=DEFAULT_TIMEOUT,
                     show_default=True, help="seconds to wait for a peer (connecting, every message)"),
        click.option("--out", type=click.Path(file_okay=False), required=True,
                     help="directory for this party's adapters and report"),
    ]
    for o in reversed(opts):
        f = o(f)
    return wire_options(f)


def build_job(model, split_text, clients, strategy, steps, batch_size, max_length, lr, lora_rank, lora_alpha,
              train_parts, task_name, seed, wire_dtype, data_file=None, data_dir=None, sync_every=None,
              dtype="fp32") -> dict:
    from dataclasses import asdict

    from flbench.cli.common import parse_split_option
    from flbench.pipeline.distributed import make_job
    from flbench.pipeline.finetune import TrainConfig
    from splits.training import LoraSpec

    spec = parse_split_option(split_text)
    strategies.get(strategy)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, max_length=max_length, lr=lr, seed=seed, strategy=strategy,
                      sync_every=sync_every)
    lora = LoraSpec(rank=lora_rank, alpha=lora_alpha, parts=tuple(p.strip() for p in train_parts.split(",") if p.strip()))
    return make_job(model=model, split=str(spec), clients=clients, train=asdict(cfg), lora=asdict(lora),
                    wire_dtype=wire_dtype, data_file=data_file, task=task_name, data_dir=data_dir, dtype=dtype)


@click.command("serve")
@job_options
@click.option("--sub-server", type=click.IntRange(min=0), default=0, show_default=True,
              help="server-hierarchical: which sub-server trunk this process runs (0..K-1; 0 is rank 0, S ≥ 1 rank K+S)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def serve_cmd(model, split_text, clients, strategy, sync_every, steps, batch_size, max_length, lr, lora_rank,
              lora_alpha, train_parts, task_name, seed, dtype, timeout, out, wire_dtype, sub_server, as_json) -> None:
    """Run the server party (rank 0) of a distributed training run, or one sub-server of a server-hierarchical
    one; MASTER_ADDR/MASTER_PORT from the environment."""
    from flbench.core.errors import FlbenchError
    from flbench.pipeline.distributed import job_world_size, run_party
    from splits.distributed import sub_server_rank

    if sub_server and strategy != "server-hierarchical":
        raise FlbenchError(f"--sub-server {sub_server}: only server-hierarchical has sub-servers; with --strategy "
                           f"{strategy} there is one server (drop --sub-server)")
    if sub_server >= clients:
        raise FlbenchError(f"--sub-server {sub_server}: with --clients {clients} the sub-servers are 0..{clients - 1}")
    job = build_job(model, split_text, clients, strategy, steps, batch_size, max_length, lr, lora_rank, lora_alpha,
                    train_parts, task_name, seed, wire_dtype, sync_every=sync_every, dtype=dtype)
    report = run_party(sub_server_rank(sub_server, clients), job_world_size(job), job, out, timeout)

    def human(o):
        dropped = o["report"]["dropped"]
        click.echo(f"served {o['report']['rounds']} round(s) for {clients} client(s); wire {o['wire']['bytes_total']} B"
                   + (f"; dropped {', '.join(f'client {c} ({r})' for c, r in dropped.items())}" if dropped else "")
                   + f"; trunk adapters in {out}")

    emit(report, as_json, human)
