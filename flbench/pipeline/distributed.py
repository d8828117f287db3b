"""Split training with the parties as processes (`--transport distributed`): the server (rank 0) and each
client (rank c+1) run `run_party` in their own process and talk over `splits.distributed` (torch.distributed,
gloo). `launch_local` starts all of them on this machine (MASTER_ADDR=127.0.0.1, a free MASTER_PORT);
`flbench serve` / `flbench client --rank I` run one party each, across hosts.

A job is a plain dict every party must agree on (its fingerprint is checked in the handshake):
    model, split, wire_dtype, data_file | task (+ data_dir), train (TrainConfig fields), lora (LoraSpec
    fields), clients, strategy (inside train); and, for the clients only, defense (name, params, secure)
Each party writes what it owns into `parts_dir`: the server `trunk.safetensors` + `server.json` (wire
counters, report); client c `client{c}.head/tail.safetensors` + `client{c}.json` (losses, wire counters).
With server-hierarchical, sub-server s ≥ 1 writes `server{s}.json` (sub-server 0 saves the trunk: after the
final FedAvg every sub-server holds the same one). The server never sees the data: it needs only the number
of steps (and, server-hierarchical, its client's example count: its FedAvg weight).

The defense runs in each client process on its h_A edge, with that client's own noise stream
(`client_generator`); the in-process run gives each client the same streams (`seed_client_generators`), so
both transports draw the same noise.
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
TASK_SAMPLE_SEED = 0  # the shuffle before a job's task_limit (fixed: every run of a benchmark trains on the same N)


SHARED = ("kind", "model", "split", "clients", "train", "lora", "wire_dtype", "task", "mode", "dtype")  # what the handshake compares


def make_job(*, model: str, split: str, clients: int, train: dict, lora: dict, wire_dtype: str = "fp32",
             data_file: str | None = None, task: str | None = None, data_dir: str | None = None,
             defense: dict | None = None, task_limit: int | None = None, threads: int | None = None,
             grad_defense: dict | None = None, dtype: str = "fp32") -> dict:
    """The job's options. Where the data lives (data_file, data_dir) is each client's own business (it may
    differ between hosts; the server has no data): the handshake compares only `SHARED`."""
    if data_file is not None and task is not None:
        raise FlbenchError("give one of --data-file FILE or --task NAME, not both")
    return {"model": model, "split": split, "clients": int(clients), "train": dict(train), "lora": dict(lora),
            "wire_dtype": wire_dtype, "data_file": data_file, "task": task, "data_dir": data_dir,
            "defense": defense, "grad_defense": grad_defense, "task_limit": task_limit, "threads": threads,
            "dtype": dtype}


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
        limit = job.get("task_limit")  # a fixed subset (benchmarks): the first N after a seeded shuffle
        examples = task.load("train", job["data_dir"], limit, seed=None if limit is None else TASK_SAMPLE_SEED)
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
                      chat: bool = False, wire_dtype: str = "fp32", dtype: str = "fp32", defense: dict | None = None,
                      seed: int = 0) -> dict:
    """A generation job: one client (rank 1) generates through the server (rank 0); its h_A `defense`
    (`defense_job`) draws from client 0's stream of `seed`, i.e. the in-process generator of `seed`."""
    return {"kind": "generate", "model": model, "split": split, "clients": 1, "prompts": list(prompts),
            "max_new_tokens": int(max_new_tokens), "mode": mode, "chat": bool(chat), "wire_dtype": wire_dtype,
            "dtype": dtype, "defense": defense, "seed": int(seed)}


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
    defense, gen = job_defense(job.get("defense"), client_generator, job.get("seed", 0), 0)
    rt = SplitRuntime(loaded, spec, n_clients=1, wire_dtype=job["wire_dtype"], defense=defense, generator=gen)
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
            "seconds": res.seconds, "wire": res.wire, "error": None,
            **({"defense_stats": defense.stats()} if defense is not None else {})}


def is_hierarchical(job: dict) -> bool:
    return job.get("kind") != "generate" and job["train"].get("strategy") == "server-hierarchical"


def job_world_size(job: dict) -> int:
    """A server and K clients, or (server-hierarchical) K sub-servers and K clients."""
    from splits.distributed import world_size

    return world_size(int(job["clients"]), is_hierarchical(job))


def client_seed(seed: int, cid: int) -> int:
    """Client `cid`'s noise seed for run seed `seed`: client 0 draws from `seed` itself (a one-client run is
    unchanged), every other client from its own stream (splitmix64 of seed and client id), so a client's
    draws do not depend on the other clients' traffic, in process or in its own process."""
    if cid == 0:
        return int(seed) % 2**64
    z = (int(seed) + 0x9E3779B97F4A7C15 * (cid + 1)) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return z ^ (z >> 31)


def client_generator(seed: int | None, cid: int, secure: bool = False):
    """The generator of client `cid`'s h_A defense (`client_seed`), or one seeded from the OS with `secure`."""
    from defenses import make_generator

    return make_generator(None, secure=True) if secure else make_generator(client_seed(seed or 0, cid))


def client_grad_generator(seed: int | None, cid: int, secure: bool = False):
    """The generator of client `cid`'s gradient-edge defense: the gradient stream (`grad_seed`) of the client's
    own seed (`client_seed`; client 0 of any run: the one-client stream), or one seeded from the OS."""
    from defenses import make_generator
    from flbench.pipeline.gradient import grad_seed

    return make_generator(None, secure=True) if secure else make_generator(grad_seed(client_seed(seed or 0, cid)))


def seed_client_generators(rt, seed: int | None, secure: bool = False) -> None:
    """Give each client of an in-process runtime its own noise streams (`client_generator`, and
    `client_grad_generator` where a gradient defense sits), as each client process of the distributed
    transport has: both transports then draw the same noise."""
    for c in rt.clients:
        c.generator = client_generator(seed, c.cid, secure)
        if c.grad_defense is not None:
            c.grad_generator = client_grad_generator(seed, c.cid, secure)


def job_defense(spec: dict | None, stream, seed: int | None, cid: int):
    """A `defense_job` spec rebuilt in client `cid`'s process → (defense, its generator from `stream`:
    `client_generator` or `client_grad_generator`), or (None, None) without one."""
    if not spec:
        return None, None
    from defenses import make_defense

    return make_defense(spec["name"], **spec["params"]), stream(seed, cid, spec.get("secure", False))


def defense_job(defense, secure: bool = False) -> dict | None:
    """A client-side h_A defense as job data (name + parameters; the client process rebuilds it)."""
    if defense is None or getattr(defense, "name", "none") == "none":
        return None
    return {"name": defense.name, "params": defense.params(), "secure": bool(secure)}


def _wire_counts(wire) -> dict:
    return {"bytes_by": [[*k, v] for k, v in sorted(wire.bytes_by.items())]}


def merged_wire_stats(stats: list[dict]) -> dict:
    """Several server processes' `Wire.stats()` (the sub-servers') as one: counters added."""
    out = dict(stats[0])
    out["by_kind"] = {}
    for k in ("bytes_total", "messages", "mask_bytes_sent", "mask_bytes_full_equivalent", "mask_bytes_saved"):
        out[k] = sum(s[k] for s in stats)
    for s in stats:
        for k, v in s["by_kind"].items():
            out["by_kind"][k] = out["by_kind"].get(k, 0) + v
    out["by_kind"] = dict(sorted(out["by_kind"].items()))
    return out


def sync_round(r: int, cfg) -> bool:
    """server-hierarchical: FedAvg after round r (0-based) every --sync-every rounds and after the last one,
    as `HierarchicalTrainer.train_round` and `finish` do in process."""
    from splits.strategies import DEFAULT_SYNC_EVERY

    return (r + 1) % (cfg.sync_every or DEFAULT_SYNC_EVERY) == 0 or r + 1 == cfg.steps


def _server_party(sid: int, endpoint, job: dict, loaded, spec, crc: int, cfg, lora, log, parts_dir: Path) -> dict:
    """The server (or, server-hierarchical, sub-server `sid`): the trunk only, never a client part."""
    from splits.distributed import FedAvg, TrainingServer, client_rank, make_groups, recv_count
    from splits.runtime import SplitRuntime
    from splits.training import SequentialTrainer

    n = int(job["clients"])
    hier = is_hierarchical(job)
    rt = SplitRuntime(loaded, spec, n_clients=1, wire_dtype=job["wire_dtype"])
    rt.clients = []  # the server process holds the trunk only (not even the public head/tail blocks)
    rt.parts.heads, rt.parts.tails = [], []
    rt.server.clients = (sid,) if hier else tuple(range(n))
    trainer = SequentialTrainer(rt, lora, lr=cfg.lr, seed=cfg.seed)
    endpoint.serving = True
    endpoint.connect()
    fed = None
    try:
        groups = make_groups(n, endpoint.timeout) if hier else None
        srv = TrainingServer(rt.server, rt.wire, endpoint, trainer.optimizers.get("server"), n, log,
                             clients=[sid] if hier else None)
        srv.handshake(crc)
        if hier:
            fed = FedAvg(groups.servers, n, "sub-servers", endpoint.timeout)
            count = 0
            if srv.alive:
                try:
                    count = recv_count(endpoint, client_rank(sid))
                except FlbenchError as e:
                    srv._drop(sid, e)
            fed.set_count(count)

        def sync_after(r: int) -> None:  # server-hierarchical: FedAvg of the sub-servers' trunks
            if fed is not None and sync_round(r, cfg):
                fed.sync([rt.server.trunk], alive=bool(srv.alive))
        t0 = time.perf_counter()
        report = srv.serve(cfg.strategy, cfg.steps, sync_after if hier else None)
        train_seconds = time.perf_counter() - t0
    finally:
        endpoint.close()
    if sid == 0:  # after the final FedAvg every sub-server holds the same trunk: sub-server 0 saves it
        _save_adapters(parts_dir / "trunk.safetensors", rt.server.trunk)
    return {"role": "server", "rank": endpoint.rank, "sub_server": sid, "model": loaded.identity,
            "holds": sorted(rt.modules()),
            "train_seconds": round(train_seconds, 4), "report": report.as_dict(),
            "wire": rt.wire.stats(), **_wire_counts(rt.wire),
            **({"fedavg": {"syncs": fed.syncs, "bytes": fed.bytes, "weight": fed.weight}} if fed else {})}


def _client_party(cid: int, endpoint, job: dict, loaded, spec, crc: int, cfg, lora, log, parts_dir: Path) -> dict:
    """Client `cid`: its head and tail, its shard of the data, its defense on the h_A edge."""
    import torch

    from splits.distributed import (
        SERVER_RANK,
        ClientTransport,
        DroppedError,
        FedAvg,
        PeerError,
        make_groups,
        send_count,
        sub_server_rank,
    )
    from splits.runtime import SplitRuntime
    from splits.training import SequentialTrainer

    n = int(job["clients"])
    hier = is_hierarchical(job)
    stream, n_examples = _client_stream(job, loaded, cid)
    server = sub_server_rank(cid, n) if hier else SERVER_RANK
    if hier:
        endpoint.names[server] = f"sub-server {cid} (rank {server})"
    defense, gen = job_defense(job.get("defense"), client_generator, cfg.seed, cid)
    grad_defense, grad_gen = job_defense(job.get("grad_defense"), client_grad_generator, cfg.seed, cid)
    rt = SplitRuntime(loaded, spec, n_clients=1, wire_dtype=job["wire_dtype"], defense=defense, generator=gen,
                      grad_defense=grad_defense, grad_generator=grad_gen)
    rt.clients[0].cid = cid
    rt.servers = []  # the trunk runs in the server's process
    rt.parts.trunk = None
    rt.transport = ClientTransport(rt.wire, endpoint, server)
    trainer = SequentialTrainer(rt, lora, lr=cfg.lr, seed=cfg.seed)
    endpoint.connect()
    losses = []
    error = None
    fed = None
    train_seconds = None
    try:
        groups = make_groups(n, endpoint.timeout) if hier else None
        endpoint.hello(crc, server)
        if hier:
            fed = FedAvg(groups.clients, n, "clients", endpoint.timeout)
            send_count(endpoint, server, n_examples)
            fed.set_count(n_examples)
        t0 = time.perf_counter()
        for step in range(cfg.steps):
            if error is None:
                try:
                    b = next(stream)
                    loss = trainer.step(b["input_ids"], b["attention_mask"], b.get("labels"), client=0)
                    if not torch.isfinite(torch.tensor(loss)):
                        raise FlbenchError(f"client {cid}: training diverged at step {step + 1} (loss {loss})")
                    terms = trainer.last_terms.get(0, {})
                    losses.append({"step": step, "client": cid, "loss": loss, **terms})
                except FlbenchError as e:
                    error = str(e)
                    log(f"client {cid}: {e}")
                    if not isinstance(e, (DroppedError, PeerError)):
                        _goodbye(endpoint, server)  # its server stops waiting for it
                    if not hier:
                        break
            if hier and sync_round(step, cfg):
                fed.sync([rt.clients[0].head, rt.clients[0].tail], alive=error is None)
        train_seconds = time.perf_counter() - t0
    except FlbenchError as e:
        error = error or str(e)
        log(f"client {cid}: {e}")
    finally:
        endpoint.close()
    _save_adapters(parts_dir / f"client{cid}.head.safetensors", rt.clients[0].head)
    _save_adapters(parts_dir / f"client{cid}.tail.safetensors", rt.clients[0].tail)
    return {"role": "client", "rank": endpoint.rank, "client": cid, "examples": n_examples, "losses": losses,
            "train_seconds": None if train_seconds is None else round(train_seconds, 4), "error": error,
            "wire": rt.wire.stats(), **_wire_counts(rt.wire),
            **({"defense_stats": defense.stats()} if defense is not None else {}),
            **({"grad_defense_stats": grad_defense.stats()} if grad_defense is not None else {}),
            **({"fedavg": {"syncs": fed.syncs, "bytes": fed.bytes, "weight": fed.weight}} if fed else {})}


def _goodbye(endpoint, server: int) -> None:
    """Tell this client's server it stops (without waiting: the server may be busy, e.g. in a FedAvg)."""
    import torch

    from splits.distributed import BYE

    try:
        endpoint._notices.append(endpoint._isend_tensor(torch.tensor([BYE], dtype=torch.int64), server))
    except RuntimeError:
        pass


def run_party(rank: int, world_size: int, job: dict, parts_dir: str | Path, timeout: float | None = None,
              log=None) -> dict:
    """Run one party of a distributed job (training, or `kind` "generate") to the end; returns (and
    writes) its report."""
    from flbench.models import load_model
    from splits.distributed import DEFAULT_TIMEOUT, Endpoint, job_crc, master_address, role_of_rank
    from splits.partition import parse_split

    log = log or (lambda s: print(s, file=sys.stderr))
    timeout = float(timeout if timeout is not None else os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    n = int(job["clients"])
    want = job_world_size(job)
    if world_size != want:
        parties = f"{n} sub-servers and {n} clients" if is_hierarchical(job) else f"a server and {n} clients"
        raise FlbenchError(f"world size {world_size} does not match --clients {n} ({parties}: {want})")
    endpoint = Endpoint(rank, world_size, timeout)  # checks rank and timeout before any work
    master_address()  # and MASTER_ADDR / MASTER_PORT
    if job.get("kind") != "generate":
        cfg, lora = _configs(job)
    parts_dir = Path(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_model(job["model"], progress=False, dtype=job.get("dtype") or "fp32")
    spec = parse_split(job["split"])
    spec.validate(len(loaded.model.model.layers))
    crc = job_crc({k: job.get(k) for k in SHARED})
    t0 = time.perf_counter()
    if job.get("kind") == "generate":
        out = _generate_party(rank, endpoint, job, loaded, spec, crc, log)
        name = "server.json" if rank == 0 else f"client{rank - 1}.json"
        (parts_dir / name).write_text(json.dumps(out, indent=1))
        return out
    role, idx = role_of_rank(rank, n, is_hierarchical(job))
    if role == "server":
        out = _server_party(idx, endpoint, job, loaded, spec, crc, cfg, lora, log, parts_dir)
        name = "server.json" if idx == 0 else f"server{idx}.json"
    else:
        out = _client_party(idx, endpoint, job, loaded, spec, crc, cfg, lora, log, parts_dir)
        name = f"client{idx}.json"
    out["seconds"] = round(time.perf_counter() - t0, 3)
    (parts_dir / name).write_text(json.dumps(out, indent=1))
    return out


def _entry(i: int, world_size: int, job: dict, parts_dir: str, timeout: float | None) -> None:
    """torch.multiprocessing entry: a user mistake is written to party{i}.error and exits 2."""
    import torch

    torch.set_num_threads(int(job.get("threads") or os.environ.get("OMP_NUM_THREADS", "1")))
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
    world = job_world_size(job)
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
    return collect(parts_dir, int(job["clients"]), is_hierarchical(job))


def collect(parts_dir: str | Path, n_clients: int, hierarchical: bool = False) -> dict:
    """The parties' reports: {"server", "clients"} (+ "sub_servers", all K of them, with server-hierarchical)."""
    parts_dir = Path(parts_dir)
    got = {"server": json.loads((parts_dir / "server.json").read_text()),
           "clients": [json.loads((parts_dir / f"client{c}.json").read_text()) for c in range(n_clients)]}
    if hierarchical:
        got["sub_servers"] = [got["server"]] + [json.loads((parts_dir / f"server{s}.json").read_text())
                                                for s in range(1, n_clients)]
    return got


def _strategy_state(job: dict, got: dict) -> dict:
    """What the in-process trainer's `describe()` says, from the parties' reports (server-hierarchical)."""
    if not is_hierarchical(job):
        return {}
    from splits.strategies import DEFAULT_SYNC_EVERY

    return {"sync_every": job["train"].get("sync_every") or DEFAULT_SYNC_EVERY,
            "syncs": got["server"]["fedavg"]["syncs"],
            "fedavg_weights": [c["fedavg"]["weight"] for c in got["clients"]],
            "aggregation_bytes": {"clients": sum(c["fedavg"]["bytes"] for c in got["clients"]),
                                  "sub_servers": sum(s["fedavg"]["bytes"] for s in got["sub_servers"])}}


def assemble(parts_dir: str | Path, out: Path, job: dict, meta: dict, overwrite: bool = False) -> dict:
    """The parties' outputs as one training run in `out` (the files and run.json of an in-process run)."""
    from flbench.core.canonical import strict_json
    from flbench.core.io import atomic_write_dir

    parts_dir = Path(parts_dir)
    n = int(job["clients"])
    hier = is_hierarchical(job)
    got = collect(parts_dir, n, hier)
    errors = [c["error"] for c in got["clients"] if c.get("error")]
    losses = sorted((r for c in got["clients"] for r in c["losses"]), key=lambda r: (r["step"], r["client"]))
    if not losses:
        raise FlbenchError(f"distributed training produced no step ({'; '.join(errors) or 'no client trained'})")
    files = {p.name: p.read_bytes() for p in sorted(parts_dir.glob("*.safetensors"))}
    files["losses.jsonl"] = "".join(strict_json(r) + "\n" for r in losses).encode()
    servers = got["sub_servers"] if hier else [got["server"]]
    wire = merged_wire_stats([s["wire"] for s in servers])
    window = max(1, len(losses) // 10)
    summary = {
        **meta, **({"model": got["server"]["model"]} if not isinstance(meta.get("model"), dict) else {}),
        "mode": "split", "transport": "distributed", "train": job["train"], "lora": job["lora"],
        "strategy": job["train"]["strategy"], "strategy_state": _strategy_state(job, got), "clients": n,
        "samples": None, "shards": {"sizes": [c["examples"] for c in got["clients"]]},
        "first_loss": losses[0]["loss"], "final_loss": losses[-1]["loss"],
        "final_loss_mean_last10pct": sum(r["loss"] for r in losses[-window:]) / window,
        "seconds": max([s["seconds"] for s in servers] + [c["seconds"] for c in got["clients"]]),
        # the training loops alone (after every party joined and greeted; to the last FedAvg)
        "train_seconds": max([s["train_seconds"] for s in servers] + [c["train_seconds"] or 0 for c in got["clients"]]),
        "wire": wire, "distributed": {"server": got["server"]["report"],
                                      **({"sub_servers": [s["report"] for s in servers]} if hier else {}),
                                      "client_errors": {str(c["client"]): c["error"] for c in got["clients"] if c["error"]}},
        "out": str(out),
    }
    for key in ("defense_stats", "grad_defense_stats"):
        stats = [c[key] for c in got["clients"] if key in c]
        if stats:  # each client's own defense (one client: its stats, as in process)
            summary[key] = stats[0] if n == 1 else {"clients": stats}
    files["run.json"] = (strict_json(summary, indent=2, default=str) + "\n").encode()
    atomic_write_dir(out, files, overwrite=overwrite)
    return summary


def train_distributed(*, model: str, spec, clients: int, cfg, lora, wire_dtype: str, data_file: str | None,
                      task: str | None, data_dir: str | None, out_dir: Path, overwrite: bool = False,
                      timeout: float | None = None, centralized: bool = False, defense=None, dtype: str = "fp32",
                      devices: dict | None = None, secure_noise: bool = False, grad_defense=None) -> dict:
    """`flbench train --transport distributed`: refuse what the distributed transport does not do yet, start
    the parties as local processes, and write their outputs to `out_dir` as one run. `defense` runs in each
    client process on its h_A edge, drawing from that client's own stream (`client_generator`), and
    `grad_defense` on its dL/dh_B edge (`client_grad_generator`)."""
    import tempfile
    from dataclasses import asdict

    if centralized:
        raise FlbenchError("--transport distributed with --centralized: the unsplit reference has no parties; drop one")
    _cpu_only(devices)
    job = make_job(model=model, split=str(spec), clients=clients, train=asdict(cfg), lora=asdict(lora),
                   wire_dtype=wire_dtype, data_file=None if data_file is None else str(Path(data_file).resolve()),
                   task=task, data_dir=data_dir, defense=defense_job(defense, secure_noise),
                   grad_defense=defense_job(grad_defense, secure_noise), dtype=dtype)
    with tempfile.TemporaryDirectory(prefix="flbench-dist-") as tmp:
        launch_local(job, tmp, timeout)
        meta = {"model": model, "split": str(spec), "data": {"task": task, "data_file": data_file, "data_dir": data_dir},
                **({"defense": defense.describe()} if defense is not None else {}),
                **({"grad_defense": grad_defense.describe()} if grad_defense is not None else {})}
        return assemble(tmp, out_dir, job, meta, overwrite=overwrite)


def generate_distributed(*, model: str, spec, prompts: list[str], max_new_tokens: int, mode: str, chat: bool,
                         wire_dtype: str, timeout: float | None = None, defense=None, dtype: str = "fp32",
                         devices: dict | None = None, seed: int = 0, secure_noise: bool = False):
    """`flbench generate --transport distributed`: the server and the client as local processes, the client
    applying `defense` to the h_A it sends (its generator: `seed`'s, as in process). → (GenerateResult, the
    client process's defense stats or None)."""
    import tempfile

    from flbench.pipeline.generation import GenerateResult

    if mode == "centralized":
        raise FlbenchError("--transport distributed with --centralized: the unsplit model has no parties; drop one")
    _cpu_only(devices)
    job = make_generate_job(model=model, split=str(spec), prompts=prompts, max_new_tokens=max_new_tokens, mode=mode,
                            chat=chat, wire_dtype=wire_dtype, dtype=dtype, defense=defense_job(defense, secure_noise),
                            seed=seed)
    with tempfile.TemporaryDirectory(prefix="flbench-dist-") as tmp:
        got = launch_local(job, tmp, timeout)
    c = got["clients"][0]
    return GenerateResult(mode, c["token_ids"], c["seconds"], c["wire"]), c.get("defense_stats")


def _cpu_only(devices: dict | None) -> None:
    """The distributed transport places every party on the CPU (tensors cross gloo from host memory); a
    GPU party needs the in-process transport for now."""
    bad = {k: v for k, v in (devices or {}).items() if v not in (None, "cpu")}
    if bad:
        k, v = sorted(bad.items())[0]
        raise FlbenchError(f"--{k.replace('_', '-')} {v}: --transport distributed places every party on the CPU "
                           "(accepted: cpu); use --transport inprocess for a GPU party")
