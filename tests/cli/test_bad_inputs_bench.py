"""`flbench bench`: bad inputs and bad --out paths end with exit status 2 and one line before the benchmark runs;
a finished result is never lost (a failed final write names the file that holds it)."""
from __future__ import annotations

import json

import pytest
from clihelp import one_line_error

I = ["bench", "inference", "--model", "tiny-llama", "--split", "1,1"]
TR = ["bench", "training", "--model", "tiny-llama", "--split", "1,1"]


@pytest.mark.parametrize("value", ["a,b", "0", "1,,4", "", "-1", "1," + "9" * 5000])
def test_batch_sizes(cli, value):
    line = one_line_error(cli, *I, "--batch-sizes", value)
    assert "'--batch-sizes'" in line and "comma-separated integers ≥ 1" in line and len(line) < 300


@pytest.mark.parametrize("argv,needle", [
    ([*I, "--prompt-tokens", "0"], "'--prompt-tokens': 0"),
    ([*I, "--new-tokens", "-1"], "'--new-tokens': -1"),
    ([*I, "--repeats", "0"], "'--repeats': 0"),
    ([*TR, "--batch", "0"], "'--batch': 0"),
    ([*TR, "--seq-len", "0"], "'--seq-len': 0"),
    ([*TR, "--steps", "0"], "'--steps': 0"),
    ([*I, "--prompt-tokens", "1000", "--new-tokens", "100"], "--prompt-tokens 1000 + --new-tokens 100: 1100 tokens"),
    ([*TR, "--seq-len", "5000"], "--seq-len 5000: 5000 tokens"),
    (["bench", "training", "--split", "9" * 5000 + ",1"], "--split '9999999999999999'…"),
])
def test_numbers(cli, argv, needle):
    assert needle in one_line_error(cli, *argv)


def test_out_paths(cli, tmp_path):
    line = one_line_error(cli, *I, "--out", str(tmp_path))
    assert f"--out {tmp_path}: is a directory" in line
    f = tmp_path / "r.json"
    f.write_text("{}")
    line = one_line_error(cli, *I, "--out", str(f))
    assert f"--out {f}: exists; pass --overwrite" in line
    line = one_line_error(cli, *TR, "--out", "/proc/flbench-test/r.json")
    assert "--out /proc/flbench-test/r.json: cannot write" in line
    assert f.read_text() == "{}"


def _strict(text: str):
    def refuse(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_result_written_atomically_and_never_lost(cli, tmp_path, monkeypatch):
    import tempfile

    import flbench.core.io as fio

    argv = [*TR, "--batch", "1", "--seq-len", "8", "--steps", "1"]
    out = tmp_path / "sub" / "training.json"
    code, stdout, err = cli(*argv, "--out", str(out), "--json")
    assert code == 0, err
    assert _strict(out.read_text())["command"].endswith(f"--out {out}")  # re-runnable, as one line
    assert _strict(stdout)["benchmark"] == "training"
    assert [p.name for p in out.parent.iterdir()] == ["training.json"]  # no temp file left

    kept_root = tmp_path / "kept"
    kept_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(kept_root))

    def replace(src, dst):  # the final rename fails after the benchmark ran
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fio.os, "replace", replace)
    code, stdout, err = cli(*argv, "--out", str(out), "--overwrite")
    assert code == 2 and stdout == ""
    last = err.strip().splitlines()[-1]
    kept = next(kept_root.iterdir())
    assert last == f"flbench: error: could not write {out}: No space left on device; the result is kept in {kept}"
    assert _strict(kept.read_text())["benchmark"] == "training"
