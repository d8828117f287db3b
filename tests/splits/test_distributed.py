"""Parties as processes (`splits.distributed`, `flbench.pipeline.distributed`): with the same seed a run
with the server and two clients in their own processes (gloo, loopback) gives the same losses, the same
adapters and the same wire byte counters as the in-process run."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from flbench.pipeline.distributed import launch_local, make_job
from flbench.pipeline.finetune import TrainConfig, text_samples, train
from splits import SplitRuntime
from splits.partition import parse_split
from splits.training import LoraSpec

TEXTS = [f"record {i}: the patient named person{i} lives at {i * 7} main street and was seen on day {i % 5}."
         for i in range(12)]
TOL = 1e-5


@pytest.fixture
def data_file(tmp_path) -> Path:
    p = tmp_path / "train.txt"
    p.write_text("\n".join(TEXTS) + "\n")
    return p


def in_process(tiny, job: dict, out: Path) -> dict:
    cfg = TrainConfig(**job["train"])
    lora = LoraSpec(**{**job["lora"], "target_modules": tuple(job["lora"]["target_modules"]),
                       "parts": tuple(job["lora"]["parts"])})
    rt = SplitRuntime(tiny, parse_split(job["split"]), n_clients=job["clients"])
    samples = text_samples(tiny.tokenizer, TEXTS, cfg.max_length)
    summary = train(rt, samples, cfg, lora, out, {}, progress=False)
    return {"summary": summary, "bytes_by": dict(rt.wire.bytes_by)}


@pytest.mark.parametrize("strategy", ["sequential", "client-batch"])
def test_multi_process_equals_in_process(tiny, data_file, tmp_path, strategy):
    cfg = TrainConfig(steps=3, batch_size=2, max_length=24, lr=1e-2, seed=3, strategy=strategy)
    lora = LoraSpec(rank=2, alpha=4)
    job = make_job(model="tiny-llama", split="1,1", clients=2, train=asdict(cfg), lora=asdict(lora),
                   data_file=str(data_file))
    ref = in_process(tiny, job, tmp_path / "ref")
    got = launch_local(job, tmp_path / "parts", timeout=120)

    want = [json.loads(line) for line in (tmp_path / "ref" / "losses.jsonl").read_text().splitlines()]
    have = sorted((r for c in got["clients"] for r in c["losses"]), key=lambda r: (r["step"], r["client"]))
    assert [(r["step"], r["client"]) for r in have] == [(r["step"], r["client"]) for r in want]
    assert [r["loss"] for r in have] == pytest.approx([r["loss"] for r in want], abs=TOL)
    assert got["server"]["report"] == {"rounds": 3, "dropped": {}}

    # the same adapters for every part
    for name in ("trunk", "client0.head", "client0.tail", "client1.head", "client1.tail"):
        a, b = load_file(tmp_path / "ref" / f"{name}.safetensors"), load_file(tmp_path / "parts" / f"{name}.safetensors")
        assert a.keys() == b.keys() and a
        for k in a:
            assert torch.allclose(a[k], b[k], atol=TOL), (name, k)

    # the same bytes: the server counted every message once, each client its own link
    server = {tuple(k[:3]): k[3] for k in got["server"]["bytes_by"]}
    assert server == {k: v for k, v in ref["bytes_by"].items()}
    per_client = {}
    for c in got["clients"]:
        for *k, v in c["bytes_by"]:
            per_client[tuple(k)] = per_client.get(tuple(k), 0) + v
    assert per_client == server


def test_multi_process_generation_equals_in_process(tiny, tmp_path):
    from flbench.pipeline.distributed import make_generate_job
    from flbench.pipeline.generation import encode_prompts, run_generation

    prompts = ["hello there", "a b c"]
    ids, mask = encode_prompts(tiny.tokenizer, prompts)
    ref = run_generation(tiny, ids, mask, 6, "kv-cache", parse_split("1,1"))
    job = make_generate_job(model="tiny-llama", split="1,1", prompts=prompts, max_new_tokens=6)
    got = launch_local(job, tmp_path / "parts", timeout=120)
    client = got["clients"][0]
    assert client["token_ids"] == ref.token_ids
    assert client["wire"]["by_kind"] == ref.wire["by_kind"]
    assert got["server"]["wire"]["by_kind"] == ref.wire["by_kind"]
    assert got["server"]["report"]["dropped"] == {}
