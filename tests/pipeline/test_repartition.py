"""Moving partition points (issue 11, item 5): a checkpoint trained at P,Q, moved to P',Q' (on disk with
`repartition`, or in memory when loaded at another split), gives the same logits as the original at the
original split; P,Q → P',Q' → P,Q gives back the very same adapter tensors."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from flbench.core.errors import FlbenchError
from flbench.pipeline.finetune import TrainConfig, model_meta, text_samples, train
from flbench.pipeline.repartition import lora_spec, repartition
from flbench.pipeline.utility import apply_checkpoint, read_checkpoint
from splits import SplitRuntime, SplitSpec
from splits.training import LoraSpec, centralized_twin

TEXTS = [f"Record: person {i} lives at {i * 7} Oak Street, phone 555-01{i:02d}" for i in range(8)]
ATOL = 1e-5


def _train(tiny, tmp_path, name, split, parts=("head", "trunk", "tail"), clients=1):
    rt = SplitRuntime(tiny, SplitSpec(*split), n_clients=clients)
    out = tmp_path / name
    samples = text_samples(tiny.tokenizer, TEXTS, 48)
    train(rt, samples, TrainConfig(steps=2, batch_size=2, lr=5e-2, seed=0), LoraSpec(rank=2, alpha=4, parts=parts),
          out, model_meta(tiny, rt, _NoDefense()), progress=False)
    return out


class _NoDefense:
    def describe(self):
        return {"name": "none"}


@pytest.fixture(scope="module")
def ck(tiny, tmp_path_factory):
    """2 split LoRA steps of tiny-llama (4 blocks) at 1,2 with adapters on every part."""
    return _train(tiny, tmp_path_factory.mktemp("rp"), "ck12", (1, 2))


@pytest.fixture(scope="module")
def batch(tiny):
    enc = tiny.tokenizer(["Record: person 3 lives", "phone 555-0104 at Oak Street, near"], padding=True,
                         return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _logits(tiny, ckpt, split, batch, client=0):
    rt = SplitRuntime(tiny, SplitSpec(*split), n_clients=client + 1)
    apply_checkpoint(rt, read_checkpoint(ckpt), ckpt)
    with torch.no_grad():
        return rt.forward(*batch, client=client), rt


def _masked_diff(a, b, mask):
    return float(((a - b).abs() * mask[..., None]).max())


def _tensors(d):
    return {f.name: load_file(str(f)) for f in sorted(d.glob("*.safetensors"))}


@pytest.mark.parametrize("dst", [(2, 1), (1, 1), (0, 0), (0, 3), (3, 0), (2, 0), (1, 2)])
def test_moved_checkpoint_gives_the_same_logits(tiny, ck, batch, tmp_path, dst):
    want, _ = _logits(tiny, ck, (1, 2), batch)
    out = tmp_path / "moved"
    s = repartition(ck, SplitSpec(*dst), out)
    assert s["from_split"] == "1,2" and s["split"] == f"{dst[0]},{dst[1]}" and s["adapted_blocks"] == [0, 1, 2, 3]
    meta = read_checkpoint(out)
    assert meta["split"] == s["split"] and meta["repartitioned"][-1]["from_split"] == "1,2"
    assert meta["lora"]["parts"] == [r for r, n in zip(("head", "trunk", "tail"), (dst[0], 4 - sum(dst), dst[1])) if n]
    got, rt = _logits(tiny, out, dst, batch)  # from disk
    assert _masked_diff(got, want, batch[1]) <= ATOL
    mem, _ = _logits(tiny, ck, dst, batch)  # in memory: the original checkpoint loaded at the new split
    assert _masked_diff(mem, want, batch[1]) <= ATOL
    twin = centralized_twin(rt, lora_spec(meta))
    with torch.no_grad():
        central = twin(input_ids=batch[0], attention_mask=batch[1]).logits
    assert _masked_diff(central, want, batch[1]) <= 1e-4  # split == unsplit tolerance of the project


@pytest.mark.parametrize("via", [(2, 1), (0, 0), (3, 0), (0, 3)])
def test_round_trip_gives_back_the_same_tensors(ck, tmp_path, via):
    mid, back = tmp_path / "mid", tmp_path / "back"
    repartition(ck, SplitSpec(*via), mid)
    repartition(mid, SplitSpec(1, 2), back)
    a, b = _tensors(ck), _tensors(back)
    assert a.keys() == b.keys()
    for f in a:
        assert a[f].keys() == b[f].keys(), f
        for k in a[f]:
            assert a[f][k].dtype == b[f][k].dtype and a[f][k].numpy().tobytes() == b[f][k].numpy().tobytes(), (f, k)
    assert [r["to_split"] for r in read_checkpoint(back)["repartitioned"]] == [f"{via[0]},{via[1]}", "1,2"]


def test_blocks_without_adapters_stay_without(tiny, batch, tmp_path):
    """Adapters on head and tail only (blocks 0 and 3): at 2,1 the head mixes an adapted and a plain block."""
    src = _train(tiny, tmp_path, "ht", (1, 1), parts=("head", "tail"))
    assert not (src / "trunk.safetensors").exists()
    want, _ = _logits(tiny, src, (1, 1), batch)
    out = tmp_path / "ht21"
    s = repartition(src, SplitSpec(2, 1), out)
    assert s["adapted_blocks"] == [0, 3] and not (out / "trunk.safetensors").exists()
    head = load_file(str(out / "client0.head.safetensors"))
    assert {k.split(".")[1] for k in head} == {"0"}  # block 1 (from the trunk) carries nothing
    got, rt = _logits(tiny, out, (2, 1), batch)
    assert _masked_diff(got, want, batch[1]) <= ATOL
    assert not any("lora_" in n for n, _ in rt.clients[0].head.layers[1].named_parameters())
    # moved back into the trunk: the trunk holds an adapter, the plain blocks still none
    out2 = tmp_path / "ht03"
    repartition(out, SplitSpec(0, 3), out2)
    assert read_checkpoint(out2)["lora"]["parts"] == ["trunk", "tail"]
    got2, _ = _logits(tiny, out2, (0, 3), batch)
    assert _masked_diff(got2, want, batch[1]) <= ATOL


def test_several_clients(tiny, batch, tmp_path):
    """Two clients (sequential, their own shards): heads and tails differ. Blocks moving out of the trunk go
    to every client; blocks moving into the one trunk need one client chosen."""
    src = _train(tiny, tmp_path, "two", (1, 1), clients=2)
    want = [_logits(tiny, src, (1, 1), batch, client=c)[0] for c in (0, 1)]
    assert _masked_diff(want[0], want[1], batch[1]) > 1e-4  # the clients really differ
    out = tmp_path / "two21"
    s = repartition(src, SplitSpec(2, 1), out)  # block 1: trunk → both heads
    assert s["clients"] == 2
    for c in (0, 1):
        got, _ = _logits(tiny, out, (2, 1), batch, client=c)
        assert _masked_diff(got, want[c], batch[1]) <= ATOL
    with pytest.raises(FlbenchError, match=r"block 0 moves from the clients into the server's one trunk.*--client"):
        repartition(src, SplitSpec(0, 1), tmp_path / "no")
    assert not (tmp_path / "no").exists()
    one = tmp_path / "c1"
    s = repartition(src, SplitSpec(0, 1), one, client=1)
    assert s["clients"] == 1 and read_checkpoint(one)["clients"] == 1
    assert sorted(p.name for p in one.glob("*.safetensors")) == ["client0.tail.safetensors", "trunk.safetensors"]
    got, _ = _logits(tiny, one, (0, 1), batch)
    assert _masked_diff(got, want[1], batch[1]) <= ATOL


def test_run_json_keeps_the_training_record(ck, tmp_path):
    out = tmp_path / "o"
    repartition(ck, SplitSpec(2, 1), out)
    a, b = json.loads((ck / "run.json").read_text()), json.loads((out / "run.json").read_text())
    assert {k: v for k, v in a.items() if k not in ("split", "lora", "out")} == \
           {k: v for k, v in b.items() if k not in ("split", "lora", "out", "repartitioned")}
    assert (out / "losses.jsonl").read_bytes() == (ck / "losses.jsonl").read_bytes()
