"""`flbench repartition` and `flbench plan` on the command line; user mistakes are one line, exit 2, before work."""
from __future__ import annotations

import json

import pytest

from clihelp import one_line_error


@pytest.fixture(scope="module")
def ck(tmp_path_factory):
    """2 split LoRA steps of tiny-llama at 1,2 (one client) and at 1,1 (two clients)."""
    from flbench.cli.app import main

    d = tmp_path_factory.mktemp("rpcli")
    data = d / "train.txt"
    data.write_text("".join(f"Record: person {i} has e-mail p{i}@x.org\n" for i in range(8)))
    out = {}
    for name, split, clients in (("one", "1,2", "1"), ("two", "1,1", "2")):
        with pytest.raises(SystemExit) as e:
            main(["train", "--model", "tiny-llama", "--split", split, "--data-file", str(data), "--clients", clients,
                  "--steps", "2", "--batch-size", "2", "--lr", "0.05", "--out", str(d / name)])
        assert e.value.code == 0
        out[name] = d / name
    return out


def test_repartition_json_and_eval_at_the_new_split(cli, ck, tmp_path):
    out = tmp_path / "moved"
    code, o, err = cli("repartition", "--checkpoint", str(ck["one"]), "--split", "2,1", "--out", str(out), "--json")
    assert code == 0, err[-800:]
    r = json.loads(o)
    assert r["from_split"] == "1,2" and r["split"] == "2,1" and r["blocks"] == {"head": "0..1", "trunk": "2..2",
                                                                                "tail": "3..3"}
    assert r["files"] == {"client0.head": 8, "client0.tail": 4, "trunk": 4}
    code, o, err = cli("repartition", "--checkpoint", str(out), "--split", "1,2", "--out", str(out), "--overwrite")
    assert code == 2 and "is the --checkpoint itself" in err
    code, o, err = cli("repartition", "--checkpoint", str(out), "--split", "0,0", "--out", str(tmp_path / "z"))
    assert code == 0 and "→" in o and "trunk.safetensors: 16 tensors" in o


@pytest.mark.parametrize("argv,needle", [
    (["--split", "3,1"], "--split 3,1: the trunk must keep at least one block, so P + Q ≤ 3"),
    (["--split", "two"], "--split 'two': expected two integers P,Q"),
    (["--split", "1,1", "--client", "3"], "--client 3: the checkpoint holds client(s) 0; accepted 0..0"),
])
def test_repartition_bad_values(cli, ck, tmp_path, argv, needle):
    line = one_line_error(cli, "repartition", "--checkpoint", str(ck["one"]), "--out", str(tmp_path / "o"), *argv)
    assert needle in line
    assert not (tmp_path / "o").exists()


def test_repartition_bad_places(cli, ck, tmp_path):
    line = one_line_error(cli, "repartition", "--checkpoint", str(tmp_path / "nope"), "--split", "1,1", "--out",
                          str(tmp_path / "o"))
    assert "no such directory" in line
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    line = one_line_error(cli, "repartition", "--checkpoint", str(ck["one"]), "--split", "1,1", "--out", str(busy))
    assert str(busy) in line and "--overwrite" in line


def test_repartition_clients_that_differ(cli, ck, tmp_path):
    line = one_line_error(cli, "repartition", "--checkpoint", str(ck["two"]), "--split", "0,1", "--out",
                          str(tmp_path / "o"))
    assert "block 0 moves from the clients into the server's one trunk" in line and "--client I" in line
    code, o, err = cli("repartition", "--checkpoint", str(ck["two"]), "--split", "0,1", "--client", "1",
                       "--out", str(tmp_path / "o"), "--json")
    assert code == 0 and json.loads(o)["clients"] == 1


def test_eval_refuses_an_impossible_split_before_loading(cli, ck):
    line = one_line_error(cli, "eval", "--task", "copa", "--checkpoint", str(ck["one"]), "--split", "2,2")
    assert "--split 2,2: the trunk must keep at least one block" in line
    line = one_line_error(cli, "eval", "--task", "copa", "--checkpoint", str(ck["two"]), "--split", "1,0")
    assert "block 3 moves from the clients" in line


def test_plan_cli(cli):
    code, o, err = cli("plan", "--model", "tiny-llama", "--splits", "1,1", "2,1", "--seq-len", "16", "--json")
    assert code == 0, err[-800:]
    p = json.loads(o)
    assert [(r["split"], r["party"]) for r in p["rows"]][:3] == [("1,1", "head"), ("1,1", "trunk"), ("1,1", "tail")]
    assert len(p["rows"]) == 6 and p["wire"]["decode_step_bytes"] == 2 * (32 + 4) + 2 * 64 * 4
    code, o, err = cli("plan", "--model", "tiny-llama", "--splits", "1,1", "--dtype", "bf16")
    assert code == 0 and "| 1,1     | trunk (server) |" in o and "decode B/step" in o


@pytest.mark.parametrize("argv,needle", [
    (["--splits", "1,1", "3,1"], "--split 3,1: the trunk must keep at least one block"),
    (["--splits", "1;1"], "--splits '1;1': expected two integers P,Q"),
    (["--splits", "1,1", "1,1"], "--splits 1,1: given twice"),
    (["--splits", "1,1", "--seq-len", "5000"], "--seq-len 5000: longer than the model's context of 1024"),
    (["--splits", "1,1", "--dtype", "fp8"], "--dtype"),
    (["--splits", "1,1", "--batch", "0"], "--batch"),
])
def test_plan_bad_values(cli, argv, needle):
    assert needle in one_line_error(cli, "plan", "--model", "tiny-llama", *argv)
