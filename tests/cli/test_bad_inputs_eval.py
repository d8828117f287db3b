"""`flbench eval --checkpoint`: a malformed run.json or a corrupt adapter file ends with exit status 2 and one
line naming the file (checked before the model loads); adapters are read with safetensors only."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from clihelp import one_line_error

E = ["eval", "--task", "sst2"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real `flbench train --out` directory (tiny-llama, split 1,1, one step)."""
    from flbench.cli.app import main

    root = tmp_path_factory.mktemp("ck")
    (root / "t.txt").write_text("one two three four\nfive six seven eight\n")
    with pytest.raises(SystemExit) as e:
        main(["train", "--model", "tiny-llama", "--split", "1,1", "--data-file", str(root / "t.txt"), "--steps", "1",
              "--out", str(root / "ck")])
    assert e.value.code == 0
    return root / "ck"


@pytest.fixture
def ck(checkpoint, tmp_path):
    """A private copy to damage."""
    return shutil.copytree(checkpoint, tmp_path / "ck")


@pytest.mark.parametrize("edit,needle", [
    (lambda m: [1, 2, 3], "holds a JSON list"),
    (lambda m: "text", "holds a JSON str"),
    (lambda m: {k: v for k, v in m.items() if k != "lora"}, "lacks the 'lora' field"),
    (lambda m: {**m, "split": 11}, "'split' is 11; expected a \"P,Q\" string"),
    (lambda m: {**m, "split": "9" * 5000 + ",1"}, "split '9999999999999999'…"),
    (lambda m: {**m, "model": "tiny-llama"}, "'model' is 'tiny-llama'; expected an object"),
    (lambda m: {**m, "model": {"name": "tiny-llama"}}, "'weights_sha256' is None"),
    (lambda m: {**m, "lora": {**m["lora"], "rank": "8"}}, "'rank' is '8'"),
    (lambda m: {**m, "lora": {**m["lora"], "rank": True}}, "'rank' is True"),
    (lambda m: {**m, "lora": {**m["lora"], "rank": 0}}, "lora rank 0"),
    (lambda m: {**m, "lora": {**m["lora"], "alpha": -1}}, "lora alpha -1"),
    (lambda m: {**m, "lora": {**m["lora"], "parts": "trunk"}}, "'parts' is 'trunk'"),
    (lambda m: {**m, "lora": {**m["lora"], "parts": ["torso"]}}, "lora parts ['torso']"),
    (lambda m: {**m, "lora": {**m["lora"], "target_modules": []}}, "lora target_modules []"),
])
def test_malformed_run_json(cli, ck, edit, needle):
    meta = json.loads((ck / "run.json").read_text())
    (ck / "run.json").write_text(json.dumps(edit(meta)))
    line = one_line_error(cli, *E, "--checkpoint", str(ck))
    assert str(ck / "run.json") in line and needle in line


def test_run_json_not_json(cli, ck):
    (ck / "run.json").write_text('{"model": ')
    line = one_line_error(cli, *E, "--checkpoint", str(ck))
    assert str(ck / "run.json") in line and "not valid JSON" in line


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_adapter_file(cli, ck, damage):
    f = ck / "trunk.safetensors"
    data = f.read_bytes()
    f.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x80\x04pickle?" * 20, "empty": b""}[damage])
    line = one_line_error(cli, *E, "--checkpoint", str(ck))
    assert str(f) in line and "not a readable safetensors file" in line


def _apply(ck):
    from flbench.models import load_model
    from flbench.pipeline.utility import apply_checkpoint, read_checkpoint
    from splits import SplitRuntime, SplitSpec

    apply_checkpoint(SplitRuntime(load_model("tiny-llama"), SplitSpec(1, 1)), read_checkpoint(ck), ck)


def test_nan_adapter_is_refused(ck):
    from safetensors.torch import load_file, save_file

    from flbench.core.errors import FlbenchError

    f = ck / "trunk.safetensors"
    state = load_file(str(f))
    name = sorted(state)[0]
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(f))
    with pytest.raises(FlbenchError, match=f"trunk.safetensors: adapter weight {name} holds NaN/Inf"):
        _apply(ck)


def test_adapter_shapes_that_do_not_fit(ck):
    from safetensors.torch import load_file, save_file

    from flbench.core.errors import FlbenchError

    f = ck / "trunk.safetensors"
    save_file({k: torch.zeros(*(s + 1 for s in v.shape)) for k, v in load_file(str(f)).items()}, str(f))
    with pytest.raises(FlbenchError, match="trunk.safetensors: adapter shapes do not match the trunk part"):
        _apply(ck)


def test_missing_directory_and_missing_adapters(cli, ck, tmp_path):
    line = one_line_error(cli, *E, "--checkpoint", str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in line and "no such directory" in line
    for f in ck.glob("*.safetensors"):
        f.unlink()
    line = one_line_error(cli, *E, "--checkpoint", str(ck))
    assert str(ck) in line and "no client0.head/client0.tail/trunk .safetensors" in line


def test_wire_dtype_with_centralized(cli):
    line = one_line_error(cli, *E, "--model", "tiny-llama", "--centralized", "--wire-dtype", "bf16")
    assert "--wire-dtype bf16 has no effect with --centralized" in line


@pytest.mark.parametrize("opt", ["--limit", "--batch-size"])
def test_counts_must_be_positive(cli, opt):
    line = one_line_error(cli, *E, "--model", "tiny-llama", opt, "0")
    assert f"'{opt}': 0 is not in the range x>=1" in line
