"""`flbench bench training --strategies ...`: one pass over the same task examples per (strategy, K),
server-hierarchical with its parties as processes, centralized beside them, in one run (tiny-llama; the
structure and sanity of the result only, never timing thresholds); --resume keeps finished rows; bad input
is one line with exit status 2."""
from __future__ import annotations

import json
import math

import pytest
from clihelp import one_line_error

TR = ["bench", "training", "--model", "tiny-llama", "--split", "1,1"]
RUN = [*TR, "--strategies", "sequential,client-batch,server-hierarchical", "--clients", "2", "--examples", "8",
       "--batch", "2", "--seq-len", "32", "--eval-limit", "6", "--timeout", "120"]


def test_strategies_one_run(cli, tmp_path):
    out = tmp_path / "strategies.json"
    code, stdout, err = cli(*RUN, "--json", "--out", str(out))
    assert code == 0, err[-2000:]
    res = json.loads(stdout)
    assert json.loads(out.read_text()) == res
    assert res["benchmark"] == "training_strategies" and res["setting"]["examples"] == 8
    assert res["machine"]["cpu_count"] >= 1 and res["command"].startswith("flbench bench training")
    assert "--strategies sequential,client-batch,server-hierarchical" in res["command"]
    assert "--steps" not in res["command"] and "--dtype" not in res["command"]
    rows = {(r["strategy"], r["clients"]): r for r in res["results"]}
    assert list(rows) == [("centralized", 1), ("sequential", 2), ("client-batch", 2), ("server-hierarchical", 2)]
    assert rows["server-hierarchical", 2]["transport"] == "distributed"
    assert rows["server-hierarchical", 2]["processes"] == 4
    assert rows["sequential", 2]["transport"] == rows["client-batch", 2]["transport"] == "inprocess"
    for r in res["results"]:
        assert r["seconds_per_pass"] > 0 and r["examples_seen"] == 8
        assert all(math.isfinite(r[k]) for k in ("first_loss", "final_loss", "final_loss_mean_last10pct"))
        assert r["metric"]["task"] == "sst2" and r["metric"]["n"] == 6 and 0 <= r["metric"]["value"] <= 1
        assert r["ratio_to_centralized"] > 0
        if r["strategy"] == "centralized":
            assert r["wire_bytes_per_example"] == 0 and r["ratio_to_sequential"] is None
        else:
            assert r["wire_bytes_per_example"] > 0 and r["ratio_to_sequential"] > 0
    assert rows["sequential", 2]["ratio_to_sequential"] == 1.0
    # the same data crosses the wire whatever the strategy
    assert len({r["wire_bytes_per_example"] for r in res["results"] if r["strategy"] != "centralized"}) == 1
    assert rows["server-hierarchical", 2]["strategy_state"]["syncs"] == 2  # 2 rounds, FedAvg after each

    # --resume: a finished run is kept as it is (nothing trains again)
    code, stdout, err = cli(*RUN, "--json", "--out", str(out), "--resume")
    assert code == 0, err[-2000:]
    again = json.loads(stdout)
    assert [r["seconds_per_pass"] for r in again["results"]] == [r["seconds_per_pass"] for r in res["results"]]
    # another setting in the same file: refused in one line
    line = one_line_error(cli, *RUN[:-2], "--examples", "16", "--out", str(out), "--resume")
    assert "--resume" in line and "another measurement" in line


def test_strategies_transport_choice(cli, tmp_path):
    """--transport distributed runs every strategy's parties as processes (a server and K clients, or 2K),
    --transport inprocess runs them all here; the same strategy trains the same losses either way."""
    run = [*TR, "--strategies", "sequential,client-batch,server-hierarchical", "--clients", "2", "--examples", "4",
           "--batch", "1", "--seq-len", "32", "--eval-limit", "2", "--timeout", "120", "--json"]
    got = {}
    for transport in ("inprocess", "distributed"):
        code, stdout, err = cli(*run, "--transport", transport)
        assert code == 0, err[-2000:]
        res = json.loads(stdout)
        assert res["setting"]["transport"] == transport
        got[transport] = {(r["strategy"], r["clients"]): r for r in res["results"]}
    dist, inp = got["distributed"], got["inprocess"]
    assert [dist[k]["processes"] for k in (("sequential", 2), ("client-batch", 2), ("server-hierarchical", 2))] == [3, 3, 4]
    assert {r["transport"] for k, r in inp.items()} == {"inprocess"} and dist["centralized", 1]["transport"] == "inprocess"
    for key, r in inp.items():
        assert dist[key]["final_loss"] == pytest.approx(r["final_loss"], abs=1e-5), key
        assert dist[key]["wire_bytes_per_example"] == r["wire_bytes_per_example"]


def test_strategies_in_bf16(cli, tmp_path):
    """--dtype reaches every party (server-hierarchical's processes too) and the resume key."""
    out = tmp_path / "bf16.json"
    run = [*TR, "--strategies", "server-hierarchical", "--clients", "2", "--examples", "4", "--batch", "1",
           "--seq-len", "32", "--eval-limit", "2", "--timeout", "120", "--dtype", "bf16"]
    code, stdout, err = cli(*run, "--json", "--out", str(out))
    assert code == 0, err[-2000:]
    res = json.loads(stdout)
    assert res["setting"]["dtype"] == "bf16" and "--dtype bf16" in res["command"]
    assert all(math.isfinite(r["final_loss"]) for r in res["results"])
    line = one_line_error(cli, *run[:-2], "--out", str(out), "--resume")  # fp32 is another measurement
    assert "another measurement" in line


@pytest.mark.parametrize("extra,needle", [
    (["--strategies", "sequential,bogus"],
     "--strategies bogus: accepted comma-separated names among client-batch, sequential, server-hierarchical"),
    (["--strategies", ","], "--strategies ''"),
    (["--strategies", "sequential", "--clients", "2,0"], "'--clients'"),
    (["--strategies", "sequential", "--clients", "2,4", "--examples", "12", "--batch", "2"],
     "--examples 12: must be a multiple of"),
    (["--strategies", "sequential", "--steps", "3"], "--steps 3 has no effect with --strategies"),
    (["--strategies", "sequential", "--device", "cuda"], "--strategies runs every party on the CPU"),
    (["--strategies", "sequential", "--task", "nope"], "unknown task 'nope'"),
    (["--strategies", "sequential", "--resume"], "--resume needs --out"),
    (["--examples", "8"], "--examples 8 has no effect with the one-step comparison"),
    (["--transport", "distributed"], "--transport distributed has no effect with the one-step comparison"),
    (["--strategies", "sequential", "--eval-limit", "0"], "'--eval-limit': 0"),
])
def test_bad_strategy_inputs(cli, extra, needle):
    assert needle in one_line_error(cli, *TR, *extra)
