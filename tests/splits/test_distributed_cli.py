"""`flbench serve` + `flbench client --rank I` as separate processes (what one runs on separate hosts, here
on loopback with MASTER_ADDR/MASTER_PORT), and the `flbench train --transport` refusals."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from splits.distributed import free_port

COMMON = ["--model", "tiny-llama", "--split", "1,1", "--clients", "1", "--steps", "2", "--batch-size", "2",
          "--max-length", "16", "--seed", "1", "--timeout", "120"]


def losses(run_dir):
    """The per-step losses a training run wrote (losses.jsonl)."""
    return [json.loads(x)["loss"] for x in (run_dir / "losses.jsonl").read_text().splitlines()]


def test_serve_and_client_processes_train_like_in_process(tmp_path, cli):
    data = tmp_path / "train.txt"
    data.write_text("".join(f"a short training line number {i} for the split\n" for i in range(6)))
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    flbench = [sys.executable, "-m", "flbench.cli"]
    server = subprocess.Popen(flbench + ["serve", *COMMON, "--out", str(tmp_path / "srv"), "--json"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = subprocess.run(flbench + ["client", "--rank", "1", *COMMON, "--data-file", str(data), "--out",
                                       str(tmp_path / "cli"), "--json"], env=env, capture_output=True, text=True,
                            timeout=240)
    s_out, s_err = server.communicate(timeout=120)
    assert client.returncode == 0, client.stderr[-2000:]
    assert server.returncode == 0, s_err[-2000:]
    got_c, got_s = json.loads(client.stdout), json.loads(s_out)
    assert got_s["report"] == {"rounds": 2, "dropped": {}}
    assert got_s["wire"]["bytes_total"] == got_c["wire"]["bytes_total"] > 0

    code, out, err = cli("train", *[a for a in COMMON if a not in ("--timeout", "120")], "--data-file", str(data),
                         "--out", str(tmp_path / "ref"), "--json")
    assert code == 0, err
    ref = json.loads(out)
    want = [json.loads(x)["loss"] for x in (tmp_path / "ref" / "losses.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in got_c["losses"]] == pytest.approx(want, abs=1e-5)
    assert ref["wire"]["bytes_total"] == got_s["wire"]["bytes_total"]


def test_client_process_defenses_match_in_process(tmp_path, cli):
    """`flbench client --defense ... --grad-defense ...`: the client process applies its own defenses on both
    of its outgoing edges, drawing the streams of client 0 of --seed, so serve + client give the losses of
    the in-process `flbench train` with the same defenses; the record describes both defenses."""
    data = tmp_path / "train.txt"
    data.write_text("".join(f"a short training line number {i} for the split\n" for i in range(6)))
    defenses = ["--noise-sigma", "0.3", "--grad-defense", "grad-dp", "--grad-clip", "0.01",
                "--grad-noise-multiplier", "2"]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    flbench = [sys.executable, "-m", "flbench.cli"]
    server = subprocess.Popen(flbench + ["serve", *COMMON, "--out", str(tmp_path / "srv"), "--json"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = subprocess.run(flbench + ["client", "--rank", "1", *COMMON, *defenses, "--data-file", str(data),
                                       "--out", str(tmp_path / "cli"), "--json"], env=env, capture_output=True,
                            text=True, timeout=240)
    _, s_err = server.communicate(timeout=120)
    assert client.returncode == 0, client.stderr[-2000:]
    assert server.returncode == 0, s_err[-2000:]
    got = json.loads(client.stdout)
    assert got["defense_stats"]["unseeded_calls"] == 0 and got["grad_defense_stats"]["unseeded_calls"] == 0

    base = [a for a in COMMON if a not in ("--timeout", "120")] + ["--data-file", str(data), "--json"]
    want = {}
    for name, extra in (("defended", defenses), ("plain", [])):
        code, out, err = cli("train", *base, *extra, "--out", str(tmp_path / name))
        assert code == 0, err
        want[name] = losses(tmp_path / name)
    assert [r["loss"] for r in got["losses"]] == pytest.approx(want["defended"], abs=1e-5)
    assert want["defended"][1:] != pytest.approx(want["plain"][1:], abs=1e-5)  # the defenses changed training


def test_train_distributed_grad_defense_equals_in_process(tmp_path, cli):
    """`flbench train --transport distributed --grad-defense`: two client processes, each clipping and
    noising its own dL/dh_B from its own stream, train as the in-process run does (per-client streams there
    too); the run describes the gradient defense and each client's stats."""
    data = tmp_path / "train.txt"
    data.write_text("".join(f"another training line, number {i}, for two clients\n" for i in range(8)))
    args = ["train", "--model", "tiny-llama", "--split", "1,1", "--data-file", str(data), "--clients", "2",
            "--steps", "2", "--batch-size", "2", "--max-length", "16", "--lr", "0.01", "--seed", "3",
            "--grad-defense", "grad-dp", "--grad-clip", "0.01", "--grad-noise-multiplier", "2", "--json"]
    code, out, err = cli(*args, "--out", str(tmp_path / "ref"))
    assert code == 0, err
    ref = json.loads(out)
    code, out, err = cli(*args, "--out", str(tmp_path / "dist"), "--transport", "distributed", "--timeout", "120")
    assert code == 0, err
    got = json.loads(out)
    assert got["grad_defense"] == ref["grad_defense"] and got["grad_defense"]["name"] == "grad-dp"
    assert [c["unseeded_calls"] for c in got["grad_defense_stats"]["clients"]] == [0, 0]
    assert losses(tmp_path / "dist") == pytest.approx(losses(tmp_path / "ref"), abs=1e-5)


def test_train_distributed_bf16_equals_in_process(tmp_path, cli):
    """--dtype over processes: every party computes in bf16 (the handshake compares it) and the losses are the
    in-process bf16 run's; they differ from fp32's (the dtype reached the parties)."""
    data = tmp_path / "train.txt"
    data.write_text("".join(f"a short training line number {i} for the split\n" for i in range(6)))
    args = ["train", *[a for a in COMMON if a not in ("--timeout", "120")], "--data-file", str(data), "--json"]
    for name, extra in (("ref", ["--dtype", "bf16"]), ("dist", ["--dtype", "bf16", "--transport", "distributed"]),
                        ("fp32", [])):
        code, out, err = cli(*args, *extra, "--out", str(tmp_path / name))
        assert code == 0, err
    assert losses(tmp_path / "dist") == pytest.approx(losses(tmp_path / "ref"), abs=1e-6)
    assert losses(tmp_path / "dist") != pytest.approx(losses(tmp_path / "fp32"), abs=1e-6)


def test_generate_distributed_with_defense_equals_in_process(cli):
    """`flbench generate --transport distributed --noise-sigma`: the client process noises the h_A it sends
    from the generator of --seed, so the tokens are the in-process run's; the stats are the client's."""
    args = ["generate", "--model", "tiny-llama", "--split", "1,1", "--prompt", "hello there", "--max-new-tokens", "5",
            "--noise-sigma", "2", "--seed", "4", "--json"]
    got = {}
    for name, extra in (("ref", []), ("dist", ["--transport", "distributed", "--timeout", "120"])):
        code, out, err = cli(*args, *extra)
        assert code == 0, err
        got[name] = json.loads(out)
    assert got["dist"]["token_ids"] == got["ref"]["token_ids"]
    assert got["dist"]["defense_stats"]["calls"] == got["ref"]["defense_stats"]["calls"] > 0
    code, out, err = cli(*args[:-5], "--json")  # no noise: other tokens (the noise reached the wire)
    assert code == 0, err
    assert json.loads(out)["token_ids"] != got["ref"]["token_ids"]


def test_distributed_places_parties_on_the_cpu_only():
    from flbench.core.errors import FlbenchError
    from flbench.pipeline.distributed import _cpu_only

    _cpu_only({"device": "cpu", "client_device": "cpu", "server_device": "cpu"})
    with pytest.raises(FlbenchError, match=r"--server-device cuda:0: --transport distributed .*accepted: cpu"):
        _cpu_only({"device": "cpu", "client_device": "cpu", "server_device": "cuda:0"})


@pytest.mark.parametrize("extra,match", [
    (["--timeout", "5"], "--timeout"),
])
def test_train_transport_refusals(tmp_path, cli, extra, match):
    data = tmp_path / "t.txt"
    data.write_text("one line of text\nanother line of text\n")
    code, out, err = cli("train", "--model", "tiny-llama", "--split", "1,1", "--data-file", str(data), "--out",
                         str(tmp_path / "o"), *extra)
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1, err


def test_client_rank_beyond_clients(cli, tmp_path):
    code, _, err = cli("client", "--rank", "3", "--clients", "2", "--data-file", "x.txt", "--out", str(tmp_path))
    assert code == 2 and "--rank 3" in err


def test_serve_sub_servers_and_clients_run_server_hierarchical_like_in_process(tmp_path, cli):
    """server-hierarchical across hosts: `flbench serve --sub-server S` for each trunk and `flbench client --rank
    I` for each client (4 processes on loopback); the clients' losses are the in-process run's."""
    data = tmp_path / "train.txt"
    data.write_text("".join(f"a short training line number {i} for the split\n" for i in range(8)))
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    flbench = [sys.executable, "-m", "flbench.cli"]
    common = [a if a != "1" or i != COMMON.index("--clients") + 1 else "2" for i, a in enumerate(COMMON)]
    common += ["--strategy", "server-hierarchical", "--sync-every", "1"]
    servers = [subprocess.Popen(flbench + ["serve", *common, "--sub-server", str(s), "--out", str(tmp_path / f"srv{s}"),
                                           "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for s in (0, 1)]
    clients = [subprocess.Popen(flbench + ["client", "--rank", str(r), *common, "--data-file", str(data), "--out",
                                           str(tmp_path / f"cli{r}"), "--json"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for r in (1, 2)]
    outs = [p.communicate(timeout=240) for p in servers + clients]
    for p, (o, e) in zip(servers + clients, outs):
        assert p.returncode == 0, e[-2000:]
    got = [json.loads(o) for o, _ in outs]
    assert all(g["report"]["rounds"] == 2 for g in got[:2])
    code, out, err = cli("train", *[a for a in common if a not in ("--timeout", "120")], "--data-file", str(data),
                         "--out", str(tmp_path / "ref"), "--json")
    assert code == 0, err
    ref = [json.loads(x) for x in (tmp_path / "ref" / "losses.jsonl").read_text().splitlines()]
    for c, g in enumerate(got[2:]):
        want = [r["loss"] for r in ref if r["client"] == c]
        assert [r["loss"] for r in g["losses"]] == pytest.approx(want, abs=1e-5)


def test_sub_server_refusals(cli, tmp_path):
    code, _, err = cli("serve", "--clients", "2", "--sub-server", "1", "--out", str(tmp_path))
    assert code == 2 and "--sub-server 1: only server-hierarchical" in err
    code, _, err = cli("serve", "--clients", "2", "--strategy", "server-hierarchical", "--sub-server", "2",
                       "--out", str(tmp_path))
    assert code == 2 and "sub-servers are 0..1" in err
