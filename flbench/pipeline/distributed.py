"""Split training with the parties as processes (`--transport distributed`): the server (rank 0) and each
client (rank c+1) run `run_party` in their own process and talk over `splits.distributed` (torch.distributed,
gloo). `launch_local` starts all of them on this machine (MASTER_ADDR=127.0.0.1, a free MASTER_PORT);
`flbench serve` / `flbench client --rank I` run one party each, across hosts.

A job is a plain dict every party must agree on (its fingerprint is checked in the handshake):
    model, split, wire_dtype, data_file | task (+ data_dir), train (TrainConfig fields), lora (LoraSpec
    fields), clients, strategy (inside train)
Each party writes what it owns into `parts_dir`: the server `trunk.safetensors` + `server.json` (wire
counters, report); client c `client{c}.head/tail.safetensors` + `client{c}.json` (losses, wire counters).
The server never sees the data: it needs only the number of steps.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from flbench.core.errors import FlbenchError

TIMEOUT_ENV = "FLBENCH_DIST_TIMEOUT"


SHARED = ("kind", "model", "split", "clients", "train", "lora", "wire_dtype", "task", "mode")  # what the handshake compares


def make_job(*, model: str, split: str, clients: int, train: dict, lora: dict, wire_dtype: str = "fp32",
             data_file: str | None = None, task: str | None = None, data_dir: str | None = None) -> dict:
    """The job's options. Where the data lives (data_file, data_dir) is each client's own business (it may
    differ between hosts; the server has no data): the handshake compares only `SHARED`."""
    if data_file is not None and task is not None:
        raise FlbenchError("give one of --data-file FILE or --task NAME, not both")
    return {"model": model, "split": split, "clients": int(clients), "train": dict(train), "lora": dict(lora),
            "wire_dtype": wire_dtype, "data_file": data_file, "task": task, "data_dir": data_dir}


def _configs(job: dict):
    from flbench.pipeline.finetune import TrainConfig
    from splits.training import LoraSpec

    lora = dict(job["lora"])
    for k in ("target_modules", "parts"):
        if k in lora:
            lora[k] = tuple(lora[k])
    return TrainConfig(**job["train"]), LoraSpec(**lora)


def _client_stream(job: dict, loaded, cid: int):
    """Client `cid`'s batches: the same samples, shards and order as the in-process `finetune.train`."""
    from flbench.pipeline.finetune import batches, shard_samples, task_samples, text_samples
    from splits.shards import client_shards

    cfg, _ = _configs(job)
    max_length = cfg.max_length
    if (job["task"] is None) == (job["data_file"] is None):
        raise FlbenchError(f"client {cid}: give exactly one of --data-file FILE (plain text) or --task NAME")
    if job["task"] is not None:
        from flbench.tasks import get_task

        task = get_task(job["task"])
        examples = task.load("train", job["data_dir"])
        samples = task_samples(loaded.tokenizer, task, examples, max_length)
        shards = client_shards(len(examples), job["clients"], cfg.seed, cfg.non_iid, [ex.label for ex in examples])
    else:
        from flbench.data.files import load_data_file

        texts = [r.text for r in load_data_file(job["data_file"])]
        samples = text_samples(loaded.tokenizer, texts, max_length)
        shards = shard_samples(samples, job["clients"], cfg)
    return batches(loaded.tokenizer, [samples[i] for i in shards[cid]], cfg, cfg.steps), len(shards[cid])


def _save_adapters(path: Path, part) -> None:
    from safetensors.torch import save_file

    from splits.training import adapter_state

    state = {k: v.contiguous() for k, v in adapter_state(part).items()}
    if state:
        save_file(state, str(path), metadata={"format": "pt", "part": part.role, "first_block": str(part.first_block)})


def make_generate_job(*, model: str, split: str, prompts: list[str], max_new_tokens: int, mode: str = "kv-cache",
                      chat: bool = False, wire_dtype: str = "fp32") -> dict:
    """A generation job: one client (rank 1) generates through the server (rank 0)."""
    return {"kind": "generate", "model": model, "split": split, "clients": 1, "prompts": list(prompts),
            "max_new_tokens": int(max_new_tokens), "mode": mode, "chat": bool(chat), "wire_dtype": wire_dtype}


def _generate_party(rank: int, endpoint, job: dict, loaded, spec, crc: int, log) -> dict:
    from flbench.pipeline.generation import check_context, encode_prompts, run_generation
    from splits.distributed import ClientTransport, TrainingServer
    from splits.runtime import SplitRuntime

    if rank == 0:
        rt = SplitRuntime(loaded, spec, n_clients=int(job["clients"]), wire_dtype=job["wire_dtype"])
        rt.clients = []
        for p in rt.server.trunk.parameters():
            p.requires_grad_(False)
        endpoint.connect()
        try:
            srv = TrainingServer(rt.server, rt.wire, endpoint, None, int(job["clients"]), log)
            srv.handshake(crc)
            report = srv.serve_requests()
        finally:
            endpoint.close()
        return {"role": "server", "rank": 0, "report": report.as_dict(), "wire": rt.wire.stats()}
    ids, mask = encode_prompts(loaded.tokenizer, job["prompts"], job["chat"])
    check_context(loaded, mask, job["max_new_tokens"])
    rt = SplitRuntime(loaded, spec, n_clients=1, wire_dtype=job["wire_dtype"])
    rt.clients[0].cid = rank - 1
    rt.servers, rt.parts.trunk = [], None
    rt.transport = ClientTransport(rt.wire, endpoint)
    endpoint.connect()
    try:
        endpoint.hello(crc)
        res = run_generation(loaded, ids, mask, job["max_new_tokens"], job["mode"], spec, rt)
        endpoint.bye()
    finally:
        endpoint.close()
    return {"role": "client", "rank": rank, "client": rank - 1, "token_ids": res.token_ids,
            "seconds": res.seconds, "wire": res.wire, "error": None}


def run_party(rank: int, world_size: int, job: dict, parts_dir: str | Path, timeout: float | None = None,
              log=None) -> dict:
    """Run one party of a distributed job (training, or `kind` "generate") to the end; returns (and
    writes) its report."""
    import torch

    from flbench.models import load_model
    from splits.distributed import DEFAULT_TIMEOUT, ClientTransport, Endpoint, TrainingServer, job_crc, master_address
    from splits.partition import parse_split
    from splits.runtime import SplitRuntime
    from splits.training import SequentialTrainer

    log = log or (lambda s: print(s, file=sys.stderr))
    timeout = float(timeout if timeout is not None else os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    n = int(job["clients"])
    if world_size != n + 1:
        raise FlbenchError(f"world size {world_size} does not match --clients {n} (a server and {n} clients: {n + 1})")
    endpoint = Endpoint(rank, world_size, timeout)  # checks rank and timeout before any work
    master_address()  # and MASTER_ADDR / MASTER_PORT
    if job.get("kind") != "generate":
        cfg, lora = _configs(job)
    parts_dir = Path(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_model(job["model"], progress=False)
    spec = parse_split(job["split"])
    spec.validate(len(loaded.model.model.layers))
    crc = job_crc({k: job.get(k) for k in SHARED})
    t0 = time.perf_counter()
    if job.get("kind") == "generate":
        out = _generate_party(rank, endpoint, job, loaded, spec, crc, log)
        name = "server.json" if rank == 0 else f"client{rank - 1}.json"
        (parts_dir / name).write_text(json.dumps(out, indent=1))
        return out
    if rank == 0:
        rt = SplitRuntime(loaded, spec, n_clients=n, wire_dtype=job["wire_dtype"])
        rt.clients = []  # the server process holds the trunk only
        trainer = SequentialTrainer(rt, lora, lr=cfg.lr, seed=cfg.seed)
        endpoint.connect()
        try:
            srv = TrainingServer(rt.server, rt.wire, endpoint, trainer.optimizers.get("server"), n, log)
            srv.handshake(crc)
            report = srv.serve(cfg.strategy, cfg.steps)
        finally:
            endpoint.close()
        _save_adapters(parts_dir / "trunk.safetensors", rt.server.trunk)
        out = {"role": "server", "rank": 0, "report": report.as_dict(), "wire": rt.wire.stats(),
               "bytes_by": [[*k, v] for k, v in sorted(rt.wire.bytes_by.items())],
               "seconds": round(time.perf_counter() - t0, 3)}
        name = "server.json"
    else:
        cid = rank - 1
        stream, n_examples = _client_stream(job, loaded, cid)
        if cfg.strategy not in ("sequential", "client-batch"):
            raise FlbenchError(f"--strategy {cfg.strategy} with --transport distributed: accepted sequential, "
                               "client-batch (server-hierarchical runs in process only for now)")
        rt = SplitRuntime(loaded, spec, n_clients=1, wire_dtype=job["wire_dtype"])
        rt.clients[0].cid = cid
        rt.servers = []  # the trunk runs in the server's process
        rt.parts.trunk = None
        rt.transport = ClientTransport(rt.wire, endpoint)
        trainer = SequentialTrainer(rt, lora, lr=cfg.lr, seed=cfg.seed)
        endpoint.connect()
        losses = []
        error = None
        try:
            endpoint.hello(crc)
            for step in range(cfg.steps):
                b = next(stream)
                loss = trainer.step(b["input_ids"], b["attention_mask"], b.get("labels"), client=0)
                if not torch.isfinite(torch.tensor(loss)):
                    raise FlbenchError(f"client {cid}: training diverged at step {step + 1} (loss {loss})")
                losses.append({"step": step, "client": cid, "loss": loss})
        except FlbenchError as e:
            error = str(e)
            log(f"client {cid}: {e}")
        finally:
            endpoint.close()
        _save_adapters(parts_dir / f"client{cid}.head.safetensors", rt.clients[0].head)
        _save_adapters(parts_dir / f"client{cid}.tail.safetensors", rt.clients[0].tail)
        out = {"role": "client", "rank": rank, "client": cid, "examples": n_examples, "losses": losses,
               "error": error, "wire": rt.wire.stats(),
               "bytes_by": [[*k, v] for k, v in sorted(rt.wire.bytes_by.items())],
               "seconds": round(time.perf_counter() - t0, 3)}
        name = f"client{cid}.json"
    (parts_dir / name).write_text(json.dumps(out, indent=1))
    return out


def _entry(i: int, world_size: int, job: dict, parts_dir: str, timeout: float | None) -> None:
    """torch.multiprocessing entry: a user mistake is written to party{i}.error and exits 2."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    try:
        run_party(i, world_size, job, parts_dir, timeout)
    except FlbenchError as e:
        Path(parts_dir, f"party{i}.error").write_text(" ".join(str(e).split()))
        sys.exit(2)
    except BaseException:
        Path(parts_dir, f"party{i}.error").write_text(traceback.format_exc().strip().splitlines()[-1])
        raise


def launch_local(job: dict, parts_dir: str | Path, timeout: float | None = None) -> dict:
    """Start the server and every client as local processes (loopback) and wait for all of them.
    Returns {"server": ..., "clients": [...]} (the parties' reports)."""
    import torch.multiprocessing as mp

    from splits.distributed import free_port

    parts_dir = Path(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    world = int(job["clients"]) + 1
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)  # our own one-line error instead
    try:
        mp.start_processes(_entry, args=(world, job, str(parts_dir), timeout), nprocs=world, join=True,
                           start_method="spawn")
    except Exception as e:  # noqa: BLE001 - ProcessExitedException / ProcessRaisedException
        by_msg: dict[str, list[str]] = {}
        for p in sorted(parts_dir.glob("party*.error")):
            by_msg.setdefault(p.read_text(), []).append(p.stem.replace("party", "rank "))
        detail = ("; ".join(f"{', '.join(who)}: {m}" for m, who in by_msg.items())
                  or (str(e).strip().splitlines() or [type(e).__name__])[0])
        raise FlbenchError(f"distributed training failed ({detail})") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return collect(parts_dir, world - 1)


def collect(parts_dir: str | Path, n_clients: int) -> dict:
    parts_dir = Path(parts_dir)
    return {"server": json.loads((parts_dir / "server.json").read_text()),
            "clients": [json.loads((parts_dir / f"client{c}.json").read_text()) for c in range(n_clients)]}


def assemble(parts_dir: str | Path, out: Path, job: dict, meta: dict, overwrite: bool = False) -> dict:
    """The parties' outputs as one training run in `out` (the files and run.json of an in-process run)."""
    from flbench.core.canonical import strict_json
    from flbench.core.io import atomic_write_dir

    parts_dir = Path(parts_dir)
    n = int(job["clients"])
    got = collect(parts_dir, n)
    errors = [c["error"] for c in got["clients"] if c.get("error")]
    losses = sorted((r for c in got["clients"] for r in c["losses"]), key=lambda r: (r["step"], r["client"]))
    if not losses:
        raise FlbenchError(f"distributed training produced no step ({'; '.join(errors) or 'no client trained'})")
    files = {p.name: p.read_bytes() for p in sorted(parts_dir.glob("*.safetensors"))}
    files["losses.jsonl"] = "".join(strict_json(r) + "\n" for r in losses).encode()
    wire = got["server"]["wire"]
    window = max(1, len(losses) // 10)
    summary = {
        **meta, "mode": "split", "transport": "distributed", "train": job["train"], "lora": job["lora"],
        "strategy": job["train"]["strategy"], "strategy_state": {}, "clients": n,
        "samples": None, "shards": {"sizes": [c["examples"] for c in got["clients"]]},
        "first_loss": losses[0]["loss"], "final_loss": losses[-1]["loss"],
        "final_loss_mean_last10pct": sum(r["loss"] for r in losses[-window:]) / window,
        "seconds": max([got["server"]["seconds"]] + [c["seconds"] for c in got["clients"]]),
        "wire": wire, "distributed": {"server": got["server"]["report"],
                                      "client_errors": {str(c["client"]): c["error"] for c in got["clients"] if c["error"]}},
        "out": str(out),
    }
    files["run.json"] = (strict_json(summary, indent=2, default=str) + "\n").encode()
    atomic_write_dir(out, files, overwrite=overwrite)
    return summary


def train_distributed(*, model: str, spec, clients: int, cfg, lora, wire_dtype: str, data_file: str | None,
                      task: str | None, data_dir: str | None, out_dir: Path, overwrite: bool = False,
                      timeout: float | None = None, centralized: bool = False, defense=None, dtype: str = "fp32",
                      devices: dict | None = None) -> dict:
    """`flbench train --transport distributed`: refuse what the distributed transport does not do yet, start
    the parties as local processes, and write their outputs to `out_dir` as one run."""
    import tempfile
    from dataclasses import asdict

    if centralized:
        raise FlbenchError("--transport distributed with --centralized: the unsplit reference has no parties; drop one")
    if cfg.strategy not in ("sequential", "client-batch"):
        raise FlbenchError(f"--strategy {cfg.strategy} with --transport distributed: accepted sequential, client-batch "
                           "(server-hierarchical runs in process only for now)")
    if defense is not None and getattr(defense, "name", "none") != "none":
        raise FlbenchError("--transport distributed runs without a --defense for now; drop --defense or use "
                           "--transport inprocess")
    if dtype != "fp32" or any(v not in (None, "cpu") for v in (devices or {}).values()):
        raise FlbenchError("--transport distributed runs fp32 on the CPU for now; drop --dtype/--device or use "
                           "--transport inprocess")
    job = make_job(model=model, split=str(spec), clients=clients, train=asdict(cfg), lora=asdict(lora),
                   wire_dtype=wire_dtype, data_file=None if data_file is None else str(Path(data_file).resolve()),
                   task=task, data_dir=data_dir)
    with tempfile.TemporaryDirectory(prefix="flbench-dist-") as tmp:
        launch_local(job, tmp, timeout)
        meta = {"model": model, "split": str(spec), "data": {"task": task, "data_file": data_file, "data_dir": data_dir}}
        return assemble(tmp, out_dir, job, meta, overwrite=overwrite)


def generate_distributed(*, model: str, spec, prompts: list[str], max_new_tokens: int, mode: str, chat: bool,
                         wire_dtype: str, timeout: float | None = None, defense=None, dtype: str = "fp32",
                         devices: dict | None = None):
    """`flbench generate --transport distributed`: the server and the client as local processes."""
    import tempfile

    from flbench.pipeline.generation import GenerateResult

    if mode == "centralized":
        raise FlbenchError("--transport distributed with --centralized: the unsplit model has no parties; drop one")
    if defense is not None and getattr(defense, "name", "none") != "none":
        raise FlbenchError("--transport distributed runs without a --defense for now; drop --defense or use "
                           "--transport inprocess")
    if dtype != "fp32" or any(v not in (None, "cpu") for v in (devices or {}).values()):
        raise FlbenchError("--transport distributed runs fp32 on the CPU for now; drop --dtype/--device or use "
                           "--transport inprocess")
    job = make_generate_job(model=model, split=str(spec), prompts=prompts, max_new_tokens=max_new_tokens, mode=mode,
                            chat=chat, wire_dtype=wire_dtype)
    with tempfile.TemporaryDirectory(prefix="flbench-dist-") as tmp:
        got = launch_local(job, tmp, timeout)
    c = got["clients"][0]
    return GenerateResult(mode, c["token_ids"], c["seconds"], c["wire"])
