"""`flbench train`: bad inputs end with exit status 2 and one line naming them before any training; --out is
never half-written, --overwrite leaves no stale adapters, a failed write or a diverged run loses nothing silently."""
from __future__ import annotations

import errno
import json
import os

import pytest
from clihelp import one_line_error

T = ["train", "--model", "tiny-llama", "--split", "1,1"]


@pytest.fixture
def texts(tmp_path):
    p = tmp_path / "texts.txt"
    p.write_text("".join(f"Record {i}: Alice Smith, alice{i}@example.org, 555-01{i:02d}\n" for i in range(8)))
    return str(p)


def last_line_error(cli, *argv: str) -> str:
    """Errors after training started: the progress bar may precede the one error line on stderr."""
    code, out, err = cli(*argv)
    assert code == 2 and out == "", (code, err[-500:])
    last = err.strip().splitlines()[-1].split("\r")[-1]
    assert last.startswith("flbench: error: ") and "Traceback" not in err, err[-800:]
    return last


@pytest.mark.parametrize("opt,value,needle", [
    ("--lr", "inf", "'inf' is not a finite number"),
    ("--lr", "nan", "'nan' is not a finite number"),
    ("--lr", "-inf", "'-inf' is not a finite number"),
    ("--lr", "0", "0.0 is not in the range x>0"),
    ("--lr", "-1e-3", "-0.001 is not in the range x>0"),
    ("--lora-alpha", "-1", "-1.0 is not in the range x>0"),
    ("--lora-alpha", "nan", "'nan' is not a finite number"),
    ("--lora-rank", "0", "0 is not in the range x>=1"),
    ("--steps", "0", "0 is not in the range x>=1"),
    ("--batch-size", "-2", "-2 is not in the range x>=1"),
    ("--clients", "0", "0 is not in the range x>=1"),
    ("--max-length", "1", "1 is not in the range x>=2"),
])
def test_numbers_out_of_range(cli, tmp_path, texts, opt, value, needle):
    line = one_line_error(cli, *T, "--data-file", texts, "--out", str(tmp_path / "o"), opt, value)
    assert f"'{opt}'" in line and needle in line
    assert not (tmp_path / "o").exists()


def test_max_length_beyond_the_context(cli, tmp_path, texts):
    line = one_line_error(cli, *T, "--data-file", texts, "--out", str(tmp_path / "o"), "--max-length", "4096")
    assert "--max-length 4096" in line and "context of 1024" in line and "accepted 2..1024" in line


def test_out_is_an_existing_file(cli, tmp_path, texts):
    f = tmp_path / "f.txt"
    f.write_text("x")
    line = one_line_error(cli, *T, "--data-file", texts, "--out", str(f))
    assert f"--out {f}" in line and "not a directory" in line


def test_out_is_unwritable(cli, tmp_path, texts):
    line = one_line_error(cli, *T, "--data-file", texts, "--out", "/proc/flbench-test/out")
    assert "--out /proc/flbench-test/out" in line and "cannot write" in line


def test_out_non_empty_needs_overwrite_and_only_replaces_an_earlier_run(cli, tmp_path, texts):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    line = one_line_error(cli, *T, "--data-file", texts, "--out", str(d))
    assert f"--out {d}" in line and "--overwrite" in line
    line = one_line_error(cli, *T, "--data-file", texts, "--out", str(d), "--overwrite")
    assert "'notes.txt'" in line and "did not write" in line
    assert (d / "notes.txt").read_text() == "keep me"


def test_overwrite_leaves_no_stale_adapters(cli, tmp_path, texts):
    out = tmp_path / "run"
    common = [*T, "--data-file", texts, "--out", str(out), "--steps", "1", "--batch-size", "2"]
    code, _, err = cli(*common)
    assert code == 0, err
    assert (out / "client0.head.safetensors").is_file() and (out / "client0.tail.safetensors").is_file()
    code, _, err = cli(*common, "--train-parts", "trunk", "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["losses.jsonl", "run.json", "trunk.safetensors"]
    assert json.loads((out / "run.json").read_text())["lora"]["parts"] == ["trunk"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left


@pytest.mark.parametrize("argv,needle", [
    (["--data-dir", "/tmp"], "--data-dir /tmp has no effect with --data-file"),
    (["--centralized", "--wire-dtype", "fp32"], "--wire-dtype fp32 has no effect with --centralized"),
])
def test_ignored_options_are_errors(cli, tmp_path, texts, argv, needle):
    assert needle in one_line_error(cli, *T, "--data-file", texts, "--out", str(tmp_path / "o"), *argv)


@pytest.mark.parametrize("extra", [[], ["--centralized"]])
def test_divergence_stops_naming_the_step_and_saves_nothing(cli, tmp_path, texts, extra):
    out = tmp_path / "o"
    line = last_line_error(cli, *T, "--data-file", texts, "--out", str(out), "--lr", "1e37", "--steps", "6", *extra)
    assert "training diverged at step" in line and "nothing was saved" in line and "--lr" in line
    assert not out.exists()


def test_disk_full_after_training_keeps_the_run_and_names_it(cli, tmp_path, texts, monkeypatch):
    import tempfile

    import flbench.core.io as fio

    out = tmp_path / "o"
    kept_root = tmp_path / "kept"
    kept_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(kept_root))
    real_fsync = os.fsync

    def fsync(fd):  # the disk holding --out is full; the system temp directory is not
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path / ".o.")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(fio.os, "fsync", fsync)
    line = last_line_error(cli, *T, "--data-file", texts, "--out", str(out), "--steps", "1", "--batch-size", "2")
    assert f"could not write {out}: No space left on device; the result is kept in {kept_root}" in line
    kept = next(kept_root.iterdir())
    assert str(kept) in line
    assert {p.name for p in kept.iterdir()} >= {"run.json", "losses.jsonl", "trunk.safetensors"}
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]


def test_json_is_strict(cli, tmp_path, texts):
    code, out, err = cli(*T, "--data-file", texts, "--out", str(tmp_path / "o"), "--steps", "1", "--json")
    assert code == 0, err

    def refuse(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    obj = json.loads(out, parse_constant=refuse)
    assert obj["defense_stats"] is not None
    json.loads((tmp_path / "o" / "run.json").read_text(), parse_constant=refuse)
