"""server-hierarchical over the distributed transport: each (client, sub-server) pair in its own two
processes, FedAvg by gloo all_reduce within the sub-servers and within the clients. With the same seed it
gives the in-process HierarchicalTrainer's losses, FedAvg state, wire bytes and checkpoint; a defense runs in
each client process on its own noise stream, as each in-process client draws (seed_client_generators)."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from flbench.pipeline.distributed import assemble, defense_job, launch_local, make_job, seed_client_generators
from flbench.pipeline.finetune import TrainConfig, text_samples, train
from splits import SplitRuntime
from splits.distributed import role_of_rank, sub_server_rank, world_size
from splits.partition import parse_split
from splits.training import LoraSpec

TEXTS = [f"note {i}: client person{i} moved to {i * 11} oak road and called on day {i % 4} about the bill."
         for i in range(14)]
TOL = 1e-5
PARTS = ("trunk", "client0.head", "client0.tail", "client1.head", "client1.tail")


@pytest.fixture
def data_file(tmp_path) -> Path:
    p = tmp_path / "train.txt"
    p.write_text("\n".join(TEXTS) + "\n")
    return p


def _in_process(tiny, job: dict, out: Path, defense=None) -> dict:
    cfg = TrainConfig(**job["train"])
    lora = LoraSpec(**{**job["lora"], "target_modules": tuple(job["lora"]["target_modules"]),
                       "parts": tuple(job["lora"]["parts"])})
    rt = SplitRuntime(tiny, parse_split(job["split"]), n_clients=job["clients"], defense=defense)
    if defense is not None:
        seed_client_generators(rt, cfg.seed)
    samples = text_samples(tiny.tokenizer, TEXTS, cfg.max_length)
    return train(rt, samples, cfg, lora, out, {}, progress=False)


def _losses(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _same_checkpoint(a: Path, b: Path) -> None:
    for name in PARTS:
        x, y = load_file(a / f"{name}.safetensors"), load_file(b / f"{name}.safetensors")
        assert x.keys() == y.keys() and x
        for k in x:
            assert torch.allclose(x[k], y[k], atol=TOL), (name, k)
    assert sorted(p.name for p in b.glob("*.safetensors")) == sorted(f"{n}.safetensors" for n in PARTS)


def test_ranks():
    assert world_size(3, True) == 6 and world_size(3, False) == 4
    assert [role_of_rank(r, 3, True) for r in range(6)] == [
        ("server", 0), ("client", 0), ("client", 1), ("client", 2), ("server", 1), ("server", 2)]
    assert [sub_server_rank(s, 3) for s in range(3)] == [0, 4, 5]


def test_hierarchical_multi_process_equals_in_process(tiny, data_file, tmp_path):
    cfg = TrainConfig(steps=3, batch_size=2, max_length=24, lr=1e-2, seed=5, strategy="server-hierarchical",
                      sync_every=2)  # a sync after round 2 and the final one after round 3
    lora = LoraSpec(rank=2, alpha=4)
    job = make_job(model="tiny-llama", split="1,1", clients=2, train=asdict(cfg), lora=asdict(lora),
                   data_file=str(data_file))
    ref = _in_process(tiny, job, tmp_path / "ref")
    got = launch_local(job, tmp_path / "parts", timeout=120)
    run = assemble(tmp_path / "parts", tmp_path / "dist", job, {})

    want = _losses(tmp_path / "ref" / "losses.jsonl")
    have = _losses(tmp_path / "dist" / "losses.jsonl")
    assert [(r["step"], r["client"]) for r in have] == [(r["step"], r["client"]) for r in want]
    assert [r["loss"] for r in have] == pytest.approx([r["loss"] for r in want], abs=TOL)
    _same_checkpoint(tmp_path / "ref", tmp_path / "dist")

    # the pairs ran apart: two sub-server processes, each serving its own client only
    assert [s["sub_server"] for s in got["sub_servers"]] == [0, 1]
    assert [s["report"] for s in got["sub_servers"]] == [{"rounds": 3, "dropped": {}}] * 2
    assert [s["holds"] for s in got["sub_servers"]] == [["trunk"]] * 2  # never a client part
    assert run["strategy_state"] == ref["strategy_state"]  # syncs, FedAvg weights, aggregation bytes
    assert run["wire"] == ref["wire"]


def test_hierarchical_distributed_with_defense_equals_in_process(tiny, data_file, tmp_path):
    from defenses import make_defense

    cfg = TrainConfig(steps=2, batch_size=2, max_length=24, lr=1e-2, seed=7, strategy="server-hierarchical")
    lora = LoraSpec(rank=2, alpha=4)
    defense = make_defense("gaussian", sigma=0.5)
    job = make_job(model="tiny-llama", split="1,1", clients=2, train=asdict(cfg), lora=asdict(lora),
                   data_file=str(data_file), defense=defense_job(defense))
    _in_process(tiny, job, tmp_path / "ref", defense=make_defense("gaussian", sigma=0.5))
    got = launch_local(job, tmp_path / "parts", timeout=120)
    assemble(tmp_path / "parts", tmp_path / "dist", job, {})
    want = [r["loss"] for r in _losses(tmp_path / "ref" / "losses.jsonl")]
    have = [r["loss"] for r in _losses(tmp_path / "dist" / "losses.jsonl")]
    assert have == pytest.approx(want, abs=TOL)
    _same_checkpoint(tmp_path / "ref", tmp_path / "dist")
    assert all(c["defense_stats"]["unseeded_calls"] == 0 and c["defense_stats"] for c in got["clients"])

    # the noise matters: without it the losses differ
    plain = make_job(model="tiny-llama", split="1,1", clients=2, train=asdict(cfg), lora=asdict(lora),
                     data_file=str(data_file))
    _in_process(tiny, plain, tmp_path / "plain")
    assert [r["loss"] for r in _losses(tmp_path / "plain" / "losses.jsonl")][2:] != pytest.approx(want[2:], abs=TOL)


def test_cli_train_distributed_hierarchical_defense_equals_inprocess(cli, data_file, tmp_path):
    args = ["train", "--model", "tiny-llama", "--split", "1,1", "--data-file", str(data_file), "--clients", "2",
            "--strategy", "server-hierarchical", "--steps", "2", "--batch-size", "2", "--max-length", "16",
            "--lr", "0.01", "--seed", "3", "--noise-sigma", "0.3", "--json"]
    code, out, err = cli(*args, "--out", str(tmp_path / "ref"))
    assert code == 0, err
    ref = json.loads(out)
    code, out, err = cli(*args, "--out", str(tmp_path / "dist"), "--transport", "distributed", "--timeout", "120")
    assert code == 0, err
    got = json.loads(out)
    assert got["transport"] == "distributed" and got["strategy"] == "server-hierarchical"
    assert got["model"] == ref["model"]  # the model's identity: `flbench eval --checkpoint` takes this run
    want = [r["loss"] for r in _losses(tmp_path / "ref" / "losses.jsonl")]
    assert [r["loss"] for r in _losses(tmp_path / "dist" / "losses.jsonl")] == pytest.approx(want, abs=TOL)
    assert got["wire"]["bytes_total"] == ref["wire"]["bytes_total"]
    assert got["strategy_state"] == ref["strategy_state"]
    _same_checkpoint(tmp_path / "ref", tmp_path / "dist")


def _members(n: int, counts: list[int]):
    from splits.distributed import FedAvg

    torch.manual_seed(0)
    parts = [torch.nn.ModuleDict({"lora_A": torch.nn.Linear(3, 2, bias=False)}) for _ in range(n)]
    feds = []
    for c in counts:
        f = FedAvg(None, n, "clients", 1.0)
        f.weight = c / float(sum(counts))
        feds.append(f)
    return parts, feds


def test_fedavg_equals_in_process_weighted_average_and_drops_absent_members():
    counts = [3, 5, 4]
    parts, feds = _members(3, counts)
    before = [p["lora_A"].weight.detach().clone() for p in parts]
    total = sum(f.contribution([p]) for f, p in zip(feds, parts))
    for f, p in zip(feds, parts):
        f.apply([p], total)
    want = sum(c / 12.0 * b for c, b in zip(counts, before))  # HierarchicalTrainer.sync
    for p in parts:
        assert torch.allclose(p["lora_A"].weight, want, atol=1e-7)
    assert feds[0].syncs == 1 and feds[0].bytes == 2 * 6 * 4

    # member 1 is gone (its client was dropped): the others average without it, renormalized
    parts, feds = _members(3, counts)
    before = [p["lora_A"].weight.detach().clone() for p in parts]
    alive = [True, False, True]
    total = sum(f.contribution([p], a) for f, p, a in zip(feds, parts, alive))
    for f, p, a in zip(feds, parts, alive):
        f.apply([p], total, a)
    want = (3 * before[0] + 4 * before[2]) / 7
    assert torch.allclose(parts[0]["lora_A"].weight, want, atol=1e-6)
    assert torch.allclose(parts[2]["lora_A"].weight, want, atol=1e-6)
    assert torch.equal(parts[1]["lora_A"].weight, before[1])  # the absent member keeps its own
