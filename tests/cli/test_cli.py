"""CLI contract: --json prints one object on stdout; user mistakes give one line on stderr and exit 2."""
from __future__ import annotations

import json

import pytest


def test_generate_json_contract(cli):
    code, out, err = cli("generate", "--model", "tiny-llama", "--split", "1,1", "--prompt", "hello",
                         "--prompt", "a longer prompt", "--max-new-tokens", "4", "--json")
    assert code == 0
    obj = json.loads(out)  # exactly one JSON object on stdout
    for key in ("texts", "token_ids", "new_tokens", "seconds", "tokens_per_s", "wire"):
        assert key in obj
    assert len(obj["token_ids"]) == 2 and all(1 <= len(t) <= 4 for t in obj["token_ids"])
    for key in ("bytes_total", "bytes_prefill", "bytes_per_decode_step", "messages"):
        assert key in obj["wire"]
    assert obj["wire"]["bytes_total"] == obj["wire"]["bytes_prefill"] + obj["wire"]["bytes_per_decode_step"] * obj["wire"]["decode_steps"]


def test_generate_modes_agree(cli):
    outs = {}
    for flag in ([], ["--no-kv-cache"], ["--centralized"]):
        code, out, _ = cli("generate", "--model", "tiny-llama", "--split", "2,1", "--prompt", "abc",
                           "--max-new-tokens", "6", "--json", *flag)
        assert code == 0
        outs[tuple(flag)] = json.loads(out)["token_ids"]
    assert outs[()] == outs[("--no-kv-cache",)] == outs[("--centralized",)]


@pytest.mark.parametrize("argv,needle", [
    (["generate", "--model", "tiny-llama", "--split", "3,1", "--prompt", "a"], "4 blocks"),
    (["generate", "--model", "tiny-llama", "--split", "-1,1", "--prompt", "a"], "-1,1"),
    (["generate", "--model", "tiny-llama", "--split", "1.5,1", "--prompt", "a"], "1.5,1"),
    (["generate", "--model", "no-such-model", "--prompt", "a"], "no-such-model"),
    (["generate", "--model", "tiny-llama", "--split", "1,1", "--prompt", "  "], "empty"),
    (["generate", "--model", "tiny-llama", "--split", "1,1", "--prompt", "a", "--max-new-tokens", "0"], "'--max-new-tokens': 0"),
    (["generate", "--model", "tiny-llama", "--split", "1,1", "--prompt", "a", "--max-new-tokens", "-3"], "'--max-new-tokens': -3"),
    (["generate", "--model", "tiny-llama", "--split", "1,1", "--prompt", "a", "--noise-sigma", "-1"], "sigma"),
    (["generate", "--model", "tiny-llama", "--split", "1,1", "--prompt", "a", "--defense", "nope"], "nope"),
    (["generate", "--model", "tiny-llama", "--split", "1,1", "--prompt", "a", "--wire-dtype", "fp8"], "fp8"),
    (["ls", "nothing"], "nothing"),
    (["train", "--model", "tiny-llama", "--split", "1,1", "--data-file", "/no/such/file", "--out", "/tmp/x"], "/no/such/file"),
])
def test_bad_input_is_one_line_exit_2(cli, argv, needle):
    code, out, err = cli(*argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flbench: error:") and needle in lines[0], err


def test_unwritable_out(cli, tmp_path):
    data = tmp_path / "d.txt"
    data.write_text("one line\nanother line\n")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = cli("train", "--model", "tiny-llama", "--split", "1,1", "--data-file", str(data),
                         "--out", str(blocker / "sub"), "--steps", "1")
    assert code == 2 and str(blocker / "sub") in err and "is not a directory" in err
    assert len(err.strip().splitlines()) == 1


def test_train_writes_adapters_per_part(cli, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"text": f"record number {i} says hello"}) for i in range(8)))
    out_dir = tmp_path / "run"
    code, out, err = cli("train", "--model", "tiny-llama", "--split", "1,1", "--data-file", str(data),
                         "--out", str(out_dir), "--steps", "3", "--batch-size", "2", "--noise-sigma", "0.05", "--json")
    assert code == 0
    obj = json.loads(out)
    assert obj["defense"]["name"] == "gaussian" and obj["wire"]["bytes_total"] > 0
    assert {p.name for p in out_dir.iterdir()} >= {"client0.head.safetensors", "client0.tail.safetensors",
                                                    "trunk.safetensors", "run.json", "losses.jsonl"}
    from safetensors.torch import load_file

    assert all("lora_" in k for k in load_file(str(out_dir / "trunk.safetensors")))


def test_ls_lists_registries(cli):
    for what, expected in (("models", "smollm2-135m"), ("defenses", "gaussian"), ("attacks", "learned-inversion")):
        code, out, _ = cli("ls", what)
        assert code == 0 and expected in out
