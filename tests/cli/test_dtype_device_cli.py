"""--dtype / --device / --client-device / --server-device on every command that runs a model."""
from __future__ import annotations

import json

import pytest
import torch

from clihelp import one_line_error

COMMANDS = [
    ["generate", "--prompt", "hi"],
    ["train", "--data-file", "x.txt", "--steps", "1", "--out", "o"],
    ["eval", "--task", "sst2"],
    ["attack"],
    ["run", "--task", "sst2"],
    ["bench", "training"],
    ["bench", "inference"],
]


@pytest.fixture
def no_loading(monkeypatch):
    import flbench.models
    from flbench.pipeline import cell as cell_mod

    def never(*a, **k):
        raise AssertionError("the model must not load before the bad input is refused")

    monkeypatch.setattr(flbench.models, "load_model", never)
    monkeypatch.setattr(cell_mod, "cell_model", never)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
@pytest.mark.parametrize("flag", ["--device", "--client-device", "--server-device"])
def test_unavailable_cuda_is_one_line_before_loading(cli, tmp_path, monkeypatch, no_loading, argv, flag):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.txt").write_text("one text\nanother text\n")
    line = one_line_error(cli, *argv, "--model", "tiny-llama", flag, "cuda:0")
    assert f"{flag} 'cuda:0': CUDA is not available on this machine; available here: cpu" in line, line


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_bad_dtype_is_one_line(cli, tmp_path, monkeypatch, no_loading, argv):
    monkeypatch.chdir(tmp_path)
    line = one_line_error(cli, *argv, "--model", "tiny-llama", "--dtype", "int8")
    assert "--dtype" in line and "fp32" in line and "bf16" in line, line


def test_party_devices_have_no_effect_centralized(cli, no_loading):
    line = one_line_error(cli, "generate", "--model", "tiny-llama", "--prompt", "hi", "--centralized",
                          "--server-device", "cpu")
    assert "--server-device cpu has no effect with --centralized" in line, line


def test_generate_bf16_states_its_compute(cli):
    code, out, err = cli("generate", "--model", "tiny-llama", "--split", "1,1", "--prompt", "hello there",
                         "--max-new-tokens", "3", "--dtype", "bf16", "--client-device", "cpu", "--server-device",
                         "cpu", "--json")
    assert code == 0, err
    o = json.loads(out)
    assert o["compute"] == {"dtype": "bf16", "client_device": "cpu", "server_device": "cpu"}
    assert o["wire"]["dtype"] == "fp32"
    code, out, err = cli("generate", "--model", "tiny-llama", "--split", "1,1", "--prompt", "hello there", "--max-new-tokens", "3",
                         "--dtype", "bf16", "--centralized", "--json")
    assert code == 0, err
    assert json.loads(out)["compute"] == {"dtype": "bf16", "device": "cpu"}


def test_train_fp16_on_cpu_runs_and_records_compute(cli, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("\n".join(f"text number {i} about things" for i in range(8)) + "\n")
    code, out, err = cli("train", "--model", "tiny-llama", "--split", "1,1", "--data-file", str(f), "--steps", "2",
                         "--batch-size", "2", "--max-length", "16", "--dtype", "fp16", "--out", str(tmp_path / "o"),
                         "--json")
    assert code == 0, err
    o = json.loads(out)
    assert o["compute"]["dtype"] == "fp16"
    assert json.loads((tmp_path / "o" / "run.json").read_text())["compute"]["dtype"] == "fp16"


def test_run_config_dtype_in_hash_except_fp32():
    from flbench.pipeline.config import RunConfig, validate

    base = {"model": "tiny-llama", "task": "sst2"}
    fp32 = validate(RunConfig, base)
    assert "dtype" not in fp32.resolved()  # committed fp32 records keep their hashes
    assert validate(RunConfig, {**base, "dtype": "fp32"}).hash == fp32.hash
    bf16 = validate(RunConfig, {**base, "dtype": "bf16"})
    assert bf16.resolved()["dtype"] == "bf16" and bf16.hash != fp32.hash
