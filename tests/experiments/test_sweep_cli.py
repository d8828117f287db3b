"""`flbench sweep` through the CLI: the whole spec (and every split against its model) is checked before the
first cell runs; mistakes are one line on stderr with exit status 2."""
from __future__ import annotations

import pytest
from fake_runner import fake_records

SPEC = """\
model: tiny-llama
splits: ["1,1"]
defenses: [none, {name: gaussian, relative: true, sigma: [0.5, 1]}]
attacks: [embedding-nn]
tasks: [{name: sst2, limit: 2}]
victims: {limit: 2}
"""


@pytest.fixture
def calls(monkeypatch):
    """The cells the sweep tried to run (the real runner is replaced: nothing may run in these tests)."""
    from flbench.pipeline import cell as cell_mod

    seen: list = []
    monkeypatch.setattr(cell_mod, "run_cell", lambda c, progress=True, fit_cache=None: seen.append(c) or fake_records(c))
    return seen


@pytest.mark.parametrize("old,new,needle", [
    ("sigma: [0.5, 1]", "sigma: [0.5, 1, -1]", "defenses[1].sigma: defense 'gaussian': sigma=-1"),
    ('splits: ["1,1"]', 'splits: ["1,1", "2,1", "3,3"]', "splits[2]: '3,3' does not fit model 'tiny-llama'"),
    ("tasks: [{name: sst2, limit: 2}]", "tasks: [sst2, rte, {name: sst2, limit: 0}]", "tasks[2].limit: 0 is not"),
    ("attacks: [embedding-nn]", "attacks: [embedding-nn, output-inversion, nope]", "attacks[2]: unknown attack"),
    ("victims: {limit: 2}", "victims: {limit: 2}\nattack_params: {embedding-nn: {chunk: abc}}",
     "attack_params.embedding-nn.chunk: attack 'embedding-nn': chunk='abc'"),
    ("victims: {limit: 2}", "victims: {limit: 2}\nvictims: {limit: 3}", "duplicate key 'victims'"),
])
def test_bad_value_anywhere_refuses_the_sweep_before_any_cell(cli, tmp_path, calls, old, new, needle):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.replace(old, new))
    out = tmp_path / "runs"
    code, stdout, err = cli("sweep", str(spec), "--out", str(out))
    assert code == 2 and stdout == "" and calls == []
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"flbench: error: {spec}: ") and needle in lines[0], err
    assert not out.exists() or not any(out.iterdir())


def test_out_must_be_a_writable_directory(cli, tmp_path, calls):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    f = tmp_path / "file"
    f.write_text("x")
    for out, needle in ((f, "is not a directory"), ("/proc/flbench-nope/runs", "cannot write")):
        code, _, err = cli("sweep", str(spec), "--out", str(out))
        assert code == 2 and "--out" in err and needle in err and len(err.strip().splitlines()) == 1, err
    assert calls == []


def test_dry_run_lists_every_cell_and_runs_none(cli, tmp_path, calls):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    code, out, err = cli("sweep", str(spec), "--out", str(tmp_path / "runs"), "--dry-run")
    assert code == 0, err
    rows = out.strip().splitlines()
    assert len(rows) == 3 and all(r.split()[1] == "todo" for r in rows) and calls == []
    code, out, err = cli("sweep", str(spec), "--out", str(tmp_path / "runs"), "--dry-run", "--shard", "2/2")
    assert code == 0 and len(out.strip().splitlines()) == 1


def test_cells_runs_the_named_cells_in_the_given_order(cli, tmp_path, calls):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    code, out, _ = cli("sweep", str(spec), "--out", str(tmp_path / "runs"), "--dry-run")
    grid = [r.split()[0] for r in out.strip().splitlines()]
    assert code == 0 and len(grid) == 3
    want = [grid[2], grid[0]]
    code, out, err = cli("sweep", str(spec), "--out", str(tmp_path / "runs"), "--dry-run",
                         "--cells", f"{want[0][:6]},{want[1]}")
    assert code == 0 and [r.split()[0] for r in out.strip().splitlines()] == want, err
    code, _, err = cli("sweep", str(spec), "--out", str(tmp_path / "runs"), "--cells", f"{want[0]},{want[1][:8]}")
    assert code == 0 and [c.hash for c in calls] == want, err  # only these, in this order
    from flbench.experiments.records import done_hashes
    assert done_hashes(tmp_path / "runs") == set(want)  # recorded under the full grid's hashes
    for args, needle in ((["--cells", "xyz1"], "--cells: 'xyz1' is not a cell hash"),
                         (["--cells", "0000000000000000"], "matches no cell of this spec"),
                         (["--cells", grid[0], "--shard", "1/2"], "--shard and --cells cannot be combined")):
        calls.clear()
        code, stdout, err = cli("sweep", str(spec), "--out", str(tmp_path / "runs2"), *args)
        assert code == 2 and calls == [] and len(err.strip().splitlines()) == 1 and needle in err, err
