"""`flbench train --strategy/--clients/--sync-every/--non-iid`: nonsense ends with exit 2 and one line naming
it, before the model loads."""
from __future__ import annotations

import pytest
from clihelp import one_line_error

T = ["train", "--model", "tiny-llama", "--split", "1,1", "--steps", "1"]


@pytest.fixture
def texts(tmp_path):
    p = tmp_path / "texts.txt"
    p.write_text("".join(f"Record {i}: Alice Smith, alice{i}@example.org\n" for i in range(8)))
    return str(p)


@pytest.mark.parametrize("argv,needle", [
    (["--sync-every", "2"], "--sync-every 2 has no effect with --strategy sequential (only server-hierarchical averages)"),
    (["--strategy", "client-batch", "--clients", "2", "--sync-every", "3"],
     "--sync-every 3 has no effect with --strategy client-batch"),
    (["--sync-every", "0", "--strategy", "server-hierarchical"], "0 is not in the range x>=1"),
    (["--strategy", "nope"], "'nope' is not one of 'client-batch', 'sequential', 'server-hierarchical'"),
    (["--clients", "2", "--non-iid", "0.5"], "--non-iid 0.5 has no effect with --data-file (plain text has no class labels"),
    (["--clients", "9"], "--clients 9: only 8 training example(s); each client needs at least one"),
    (["--centralized", "--strategy", "client-batch"], "--strategy client-batch has no effect with --centralized"),
    (["--centralized", "--non-iid", "1"], "has no effect with --"),
])
def test_data_file_nonsense(cli, tmp_path, texts, argv, needle):
    line = one_line_error(cli, *T, "--data-file", texts, "--out", str(tmp_path / "o"), *argv)
    assert needle in line, line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--task", "sst2", "--non-iid", "0.5"], "--non-iid 0.5 has no effect with --clients 1 (one client holds all the data)"),
    (["--task", "sst2", "--clients", "2", "--non-iid", "0"], "0.0 is not in the range x>0"),
    (["--task", "sst2", "--clients", "2", "--non-iid", "inf"], "'inf' is not a finite number"),
    (["--task", "private-qa", "--clients", "2", "--non-iid", "0.5"],
     "--non-iid 0.5: task private-qa has no class labels to shard by"),
    (["--task", "sst2", "--clients", "3", "--non-iid", "1e-6"], "Dirichlet draws all left a client without examples"),
])
def test_task_nonsense(cli, tmp_path, argv, needle, monkeypatch):
    import flbench.models

    def no_model(*a, **k):
        raise AssertionError("the model must not load before the bad input is refused")

    monkeypatch.setattr(flbench.models, "load_model", no_model)
    line = one_line_error(cli, *T, "--out", str(tmp_path / "o"), *argv)
    assert needle in line, line
