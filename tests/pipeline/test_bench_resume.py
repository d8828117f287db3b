"""A benchmark's --resume (flbench.pipeline.bench.resumed): the rows of the same measurement are kept;
a file of another measurement is refused rather than mixed in."""
from __future__ import annotations

import json

import pytest

from flbench.pipeline.bench import resumed


def test_resume_keeps_rows_of_the_same_measurement_and_refuses_others(tmp_path):
    f = tmp_path / "b.json"
    assert resumed(f, {"model": "m"}, True) == {} and resumed(None, {"model": "m"}, True) == {}
    f.write_text(json.dumps({"measurement": {"model": "m", "seed": 0}, "rows": [{"row": 1}]}))
    assert resumed(f, {"model": "m", "seed": 0}, True, key="measurement")["rows"] == [{"row": 1}]
    assert resumed(f, {"model": "m", "seed": 0}, False, key="measurement") == {}  # no --resume: start afresh
    with pytest.raises(SystemExit, match="another measurement"):
        resumed(f, {"model": "m", "seed": 1}, True, key="measurement")


def test_recorded_commands_name_paths_inside_the_checkout_relatively(tmp_path):
    from flbench.pipeline.bench import portable_argv

    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    out = repo / "results" / "bench" / "x.json"
    argv = ["python", "benchmarks/b.py", "--out", str(out), "--cache", str(tmp_path / "elsewhere"), "--n", "3"]
    assert portable_argv(argv, str(out)) == ["python", "benchmarks/b.py", "--out", "results/bench/x.json",
                                             "--cache", str(tmp_path / "elsewhere"), "--n", "3"]
    assert portable_argv(argv, None) == argv
    assert portable_argv(argv, str(tmp_path / "no-repo" / "x.json")) == argv  # no checkout above: unchanged
