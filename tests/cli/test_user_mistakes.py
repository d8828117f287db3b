"""Every user mistake, across every command, ends the same way: exit status 2, exactly one line on stderr
(`flbench: error: ...`) that names the bad value, nothing on stdout, no traceback, no hang, no output file.

The table below is the audit of issue 9 ("tried as a new user would"), kept as a regression test. Each case is
run in-process on the tiny random LLaMA with a 60 s alarm (a hang fails the case instead of the suite).
"""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

T = ["--model", "tiny-llama"]
BIG = "9" * 5000


def _setup_files(root: Path) -> dict[str, str]:
    """Files the cases point at (created per test in tmp_path)."""
    (root / "existing.txt").write_text("x\n")
    (root / "nonempty").mkdir()
    (root / "nonempty" / "keep.txt").write_text("x")
    (root / "texts.txt").write_text("Alice Smith lives at 12 Oak Road.\nBob's phone is 555-0100.\n")
    (root / "empty.txt").write_text("")
    # a checkpoint whose run.json is a list, and one whose adapters are truncated
    (root / "ckpt_list").mkdir()
    (root / "ckpt_list" / "run.json").write_text("[1, 2, 3]")
    (root / "ckpt_badjson").mkdir()
    (root / "ckpt_badjson" / "run.json").write_text("{not json")
    # records directories: a record of the wrong shape, a corrupt record, an empty directory
    (root / "rec_shape").mkdir()
    (root / "rec_shape" / "0123456789abcdef__none.json").write_text(json.dumps({"schema": 1}))
    (root / "rec_list").mkdir()
    (root / "rec_list" / "0123456789abcdef__none.json").write_text("[1]")
    (root / "rec_corrupt").mkdir()
    (root / "rec_corrupt" / "0123456789abcdef__none.json").write_text("{")
    (root / "rec_empty").mkdir()
    # sweep specs
    (root / "dup.yaml").write_text("name: a\nname: b\nmodel: tiny-llama\nsplits: ['1,1']\ntasks: [sst2]\n")
    bomb = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 10):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        bomb.append(f"{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
    bomb.append("model: *j")
    (root / "bomb.yaml").write_text("\n".join(bomb) + "\n")
    (root / "badsigma.yaml").write_text(
        "model: tiny-llama\nsplits: ['1,1']\ndefenses: [{name: gaussian, sigma: [0.5, 1, -2]}]\n"
        "attacks: [embedding-nn]\n")
    (root / "badsplit.yaml").write_text("model: tiny-llama\nsplits: ['1,1', '9x9']\nattacks: [embedding-nn]\n")
    (root / "badmodel.yaml").write_text("model: [tiny-llama, no-such-model]\nsplits: ['1,1']\nattacks: [embedding-nn]\n")
    (root / "badkey.yaml").write_text("model: tiny-llama\nsplits: ['1,1']\nattacks: [embedding-nn]\nbogus: 1\n")
    (root / "notmap.yaml").write_text("- 1\n- 2\n")
    (root / "badyaml.yaml").write_text("model: [unclosed\n")
    return {k: str(root / k) for k in ("existing.txt", "nonempty", "texts.txt", "empty.txt", "ckpt_list", "ckpt_badjson",
                                       "rec_shape", "rec_list", "rec_corrupt", "rec_empty", "dup.yaml", "bomb.yaml",
                                       "badsigma.yaml", "badsplit.yaml", "badmodel.yaml", "badkey.yaml",
                                       "notmap.yaml", "badyaml.yaml")}


# (id, argv with {placeholders} for files, needle that the one line must contain)
CASES = [
    # --- generate
    ("gen-split-5000-digits", ["generate", *T, "--split", f"{BIG},1", "--prompt", "a"], "--split"),
    ("gen-split-letters", ["generate", *T, "--split", "a,b", "--prompt", "a"], "a,b"),
    ("gen-split-three", ["generate", *T, "--split", "1,1,1", "--prompt", "a"], "1,1,1"),
    ("gen-split-too-deep", ["generate", *T, "--split", "3,1", "--prompt", "a"], "3,1"),
    ("gen-max-new-tokens-huge", ["generate", *T, "--split", "1,1", "--prompt", "a", "--max-new-tokens", "1000000000"],
     "1000000000"),
    ("gen-max-new-tokens-0", ["generate", *T, "--split", "1,1", "--prompt", "a", "--max-new-tokens", "0"], "0"),
    ("gen-prompt-too-long", ["generate", *T, "--split", "1,1", "--prompt", "word " * 3000, "--max-new-tokens", "2"],
     "context"),
    ("gen-wire-dtype-bad", ["generate", *T, "--prompt", "a", "--wire-dtype", "fp8"], "fp8"),
    ("gen-wire-dtype-centralized", ["generate", *T, "--prompt", "a", "--centralized", "--wire-dtype", "bf16"],
     "--wire-dtype"),
    ("gen-centralized-naive", ["generate", *T, "--prompt", "a", "--centralized", "--no-kv-cache"], "--no-kv-cache"),
    ("gen-sigma-negative", ["generate", *T, "--prompt", "a", "--noise-sigma", "-1"], "-1"),
    ("gen-sigma-nan", ["generate", *T, "--prompt", "a", "--noise-sigma", "nan"], "nan"),
    ("gen-sigma-inf", ["generate", *T, "--prompt", "a", "--noise-sigma", "inf"], "inf"),
    ("gen-defense-unknown", ["generate", *T, "--prompt", "a", "--defense", "nope"], "nope"),
    ("gen-dp-no-params", ["generate", *T, "--prompt", "a", "--defense", "dp-forward"], "dp-forward"),
    ("gen-dp-clip-without-dp", ["generate", *T, "--prompt", "a", "--dp-clip", "1"], "--dp-clip"),
    ("gen-sigma-with-dp", ["generate", *T, "--prompt", "a", "--defense", "dp-forward", "--dp-clip", "1",
                           "--noise-multiplier", "1", "--noise-sigma", "1"], "--noise-sigma"),
    ("gen-seed-and-secure", ["generate", *T, "--prompt", "a", "--noise-sigma", "1", "--seed", "3", "--secure-noise"],
     "--seed"),
    ("gen-seed-negative", ["generate", *T, "--prompt", "a", "--noise-sigma", "1", "--seed", "-1"], "-1"),
    ("gen-model-unknown", ["generate", "--model", "no-such-model", "--prompt", "a"], "no-such-model"),
    ("gen-model-missing-dir", ["generate", "--model", "/nonexistent/model/dir", "--prompt", "a"], "/nonexistent"),
    # --- train
    ("train-lr-inf", ["train", *T, "--split", "1,1", "--data-file", "{texts.txt}", "--out", "{out}", "--lr", "inf"], "inf"),
    ("train-lr-nan", ["train", *T, "--split", "1,1", "--data-file", "{texts.txt}", "--out", "{out}", "--lr", "nan"], "nan"),
    ("train-lr-zero", ["train", *T, "--split", "1,1", "--data-file", "{texts.txt}", "--out", "{out}", "--lr", "0"], "0"),
    ("train-steps-0", ["train", *T, "--split", "1,1", "--data-file", "{texts.txt}", "--out", "{out}", "--steps", "0"], "0"),
    ("train-lora-alpha-neg", ["train", *T, "--split", "1,1", "--data-file", "{texts.txt}", "--out", "{out}",
                              "--lora-alpha", "-4"], "-4"),
    ("train-lora-rank-0", ["train", *T, "--split", "1,1", "--data-file", "{texts.txt}", "--out", "{out}",
                           "--lora-rank", "0"], "0"),
    ("train-parts-bad", ["train", *T, "--split", "1,1", "--data-file", "{texts.txt}", "--out", "{out}",
                         "--train-parts", "head,foo"], "foo"),
    ("train-out-file", ["train", *T, "--split", "1,1", "--data-file", "{texts.txt}", "--out", "{existing.txt}"],
     "existing.txt"),
    ("train-out-nonempty", ["train", *T, "--split", "1,1", "--data-file", "{texts.txt}", "--out", "{nonempty}"],
     "nonempty"),
    ("train-out-unwritable", ["train", *T, "--split", "1,1", "--data-file", "{texts.txt}", "--out", "/proc/flbench/x"],
     "/proc/flbench/x"),
    ("train-data-missing", ["train", *T, "--split", "1,1", "--data-file", "/nonexistent.txt", "--out", "{out}"],
     "/nonexistent.txt"),
    ("train-data-empty", ["train", *T, "--split", "1,1", "--data-file", "{empty.txt}", "--out", "{out}"], "empty.txt"),
    ("train-task-and-file", ["train", *T, "--split", "1,1", "--data-file", "{texts.txt}", "--task", "sst2",
                             "--out", "{out}"], "--task"),
    ("train-neither", ["train", *T, "--split", "1,1", "--out", "{out}"], "--task"),
    ("train-task-unknown", ["train", *T, "--split", "1,1", "--task", "nope", "--out", "{out}"], "nope"),
    ("train-max-length-0", ["train", *T, "--split", "1,1", "--data-file", "{texts.txt}", "--out", "{out}",
                            "--max-length", "0"], "0"),
    ("train-max-length-over-context", ["train", *T, "--split", "1,1", "--data-file", "{texts.txt}", "--out", "{out}",
                                       "--max-length", "100000"], "100000"),
    ("train-centralized-noise", ["train", *T, "--split", "1,1", "--data-file", "{texts.txt}", "--out", "{out}",
                                 "--centralized", "--noise-sigma", "1"], "--centralized"),
    ("train-clients-0", ["train", *T, "--split", "1,1", "--data-file", "{texts.txt}", "--out", "{out}",
                         "--clients", "0"], "0"),
    ("train-wire-dtype-centralized", ["train", *T, "--split", "1,1", "--data-file", "{texts.txt}", "--out", "{out}",
                                      "--centralized", "--wire-dtype", "fp16"], "--wire-dtype"),
    ("train-data-dir-with-file", ["train", *T, "--split", "1,1", "--data-file", "{texts.txt}", "--out", "{out}",
                                  "--data-dir", "{nonempty}"], "--data-dir"),
    # --- eval
    ("eval-task-unknown", ["eval", *T, "--task", "nope"], "nope"),
    ("eval-limit-0", ["eval", *T, "--task", "sst2", "--limit", "0"], "0"),
    ("eval-batch-0", ["eval", *T, "--task", "sst2", "--batch-size", "0"], "0"),
    ("eval-ckpt-missing", ["eval", "--task", "sst2", "--checkpoint", "/nonexistent/ckpt"], "/nonexistent/ckpt"),
    ("eval-ckpt-list", ["eval", "--task", "sst2", "--checkpoint", "{ckpt_list}"], "run.json"),
    ("eval-ckpt-badjson", ["eval", "--task", "sst2", "--checkpoint", "{ckpt_badjson}"], "run.json"),
    ("eval-centralized-noise", ["eval", *T, "--task", "sst2", "--centralized", "--noise-sigma", "1"], "--centralized"),
    ("eval-wire-dtype-centralized", ["eval", *T, "--task", "sst2", "--centralized", "--wire-dtype", "bf16"],
     "--wire-dtype"),
    # --- attack
    ("attack-unknown", ["attack", *T, "--split", "1,1", "--attack", "nope"], "nope"),
    ("attack-param-abc", ["attack", *T, "--split", "1,1", "--attack", "embedding-nn", "--attack-param", "chunk=abc"],
     "abc"),
    ("attack-param-zero", ["attack", *T, "--split", "1,1", "--attack", "embedding-nn", "--attack-param", "chunk=0"],
     "chunk"),
    ("attack-param-negative", ["attack", *T, "--split", "1,1", "--attack", "embedding-nn",
                               "--attack-param", "chunk=-5"], "-5"),
    ("attack-param-unknown", ["attack", *T, "--split", "1,1", "--attack", "embedding-nn", "--attack-param", "foo=4"],
     "foo"),
    ("attack-param-no-equals", ["attack", *T, "--split", "1,1", "--attack-param", "steps"], "steps"),
    ("attack-aux-empty", ["attack", *T, "--split", "1,1", "--aux-data", ""], "--aux-data"),
    ("attack-aux-private", ["attack", *T, "--split", "1,1", "--aux-data", "private-records"], "private-records"),
    ("attack-aux-unknown", ["attack", *T, "--split", "1,1", "--aux-data", "nope"], "nope"),
    ("attack-data-unknown", ["attack", *T, "--split", "1,1", "--data", "nope"], "nope"),
    ("attack-data-and-file", ["attack", *T, "--split", "1,1", "--data", "enron", "--data-file", "{texts.txt}"], "--data"),
    ("attack-data-file-missing", ["attack", *T, "--split", "1,1", "--data-file", "/nonexistent.txt"], "/nonexistent.txt"),
    ("attack-limit-0", ["attack", *T, "--split", "1,1", "--limit", "0"], "0"),
    ("attack-aux-limit-0", ["attack", *T, "--split", "1,1", "--aux-limit", "0"], "0"),
    ("attack-max-length-0", ["attack", *T, "--split", "1,1", "--max-length", "0"], "0"),
    # --- run
    ("run-nothing", ["run", *T, "--split", "1,1", "--out", "{out}"], "--task"),
    ("run-task-unknown", ["run", *T, "--task", "nope", "--out", "{out}"], "nope"),
    ("run-attack-unknown", ["run", *T, "--attack", "nope", "--out", "{out}"], "nope"),
    ("run-finetune-0", ["run", *T, "--task", "sst2", "--finetune-steps", "0", "--out", "{out}"], "0"),
    ("run-finetune-no-task", ["run", *T, "--attack", "embedding-nn", "--finetune-steps", "3", "--out", "{out}"],
     "--finetune-steps"),
    ("run-centralized-attack", ["run", *T, "--centralized", "--attack", "embedding-nn", "--out", "{out}"],
     "--centralized"),
    ("run-out-file", ["run", *T, "--attack", "embedding-nn", "--out", "{existing.txt}"], "existing.txt"),
    ("run-out-unwritable", ["run", *T, "--attack", "embedding-nn", "--out", "/proc/flbench/runs"], "/proc/flbench/runs"),
    ("run-secure-noise", ["run", *T, "--attack", "embedding-nn", "--noise-sigma", "1", "--secure-noise",
                          "--out", "{out}"], "--secure-noise"),
    ("run-attack-param-other", ["run", *T, "--attack", "embedding-nn", "--attack-param", "learned-inversion.steps=3",
                                "--out", "{out}"], "learned-inversion"),
    ("run-split-5000-digits", ["run", *T, "--split", f"1,{BIG}", "--attack", "embedding-nn", "--out", "{out}"],
     "--split"),
    # --- sweep
    ("sweep-missing", ["sweep", "/nonexistent.yaml"], "/nonexistent.yaml"),
    ("sweep-dup-keys", ["sweep", "{dup.yaml}", "--out", "{out}"], "name"),
    ("sweep-alias-bomb", ["sweep", "{bomb.yaml}", "--out", "{out}"], "bomb.yaml"),
    ("sweep-bad-sigma", ["sweep", "{badsigma.yaml}", "--out", "{out}"], "-2"),
    ("sweep-bad-split", ["sweep", "{badsplit.yaml}", "--out", "{out}"], "9x9"),
    ("sweep-bad-model", ["sweep", "{badmodel.yaml}", "--out", "{out}"], "no-such-model"),
    ("sweep-bad-key", ["sweep", "{badkey.yaml}", "--out", "{out}"], "bogus"),
    ("sweep-not-mapping", ["sweep", "{notmap.yaml}", "--out", "{out}"], "notmap.yaml"),
    ("sweep-bad-yaml", ["sweep", "{badyaml.yaml}", "--out", "{out}"], "badyaml.yaml"),
    ("sweep-shard-bad", ["sweep", "{badkey.yaml}", "--shard", "3/2", "--out", "{out}"], "3/2"),
    ("sweep-out-file", ["sweep", "{badsigma.yaml}", "--out", "{existing.txt}"], "existing.txt"),
    # --- leaderboard / plot
    ("lb-records-missing", ["leaderboard", "--records", "/nonexistent/runs", "--stdout"], "/nonexistent/runs"),
    ("lb-records-empty", ["leaderboard", "--records", "{rec_empty}", "--stdout"], "rec_empty"),
    ("lb-record-shape", ["leaderboard", "--records", "{rec_shape}", "--stdout"], "0123456789abcdef__none.json"),
    ("lb-record-list", ["leaderboard", "--records", "{rec_list}", "--stdout"], "0123456789abcdef__none.json"),
    ("lb-record-corrupt", ["leaderboard", "--records", "{rec_corrupt}", "--stdout"], "0123456789abcdef__none.json"),
    ("lb-format-bad", ["leaderboard", "--format", "xml", "--stdout"], "xml"),
    ("lb-out-dir", ["leaderboard", "--out", "{nonempty}"], "nonempty"),
    ("lb-out-unwritable", ["leaderboard", "--out", "/proc/flbench/lb.csv"], "/proc/flbench/lb.csv"),
    ("lb-attack-unknown", ["leaderboard", "--attack", "nope", "--stdout"], "nope"),
    ("plot-records-empty", ["plot", "--records", "{rec_empty}", "--out", "{out}"], "rec_empty"),
    ("plot-out-file", ["plot", "--out", "{existing.txt}"], "existing.txt"),
    ("plot-out-unwritable", ["plot", "--out", "/proc/flbench/plots"], "/proc/flbench/plots"),
    # --- bench
    ("bench-batch-sizes-abc", ["bench", "inference", *T, "--batch-sizes", "a,b"], "a,b"),
    ("bench-batch-sizes-0", ["bench", "inference", *T, "--batch-sizes", "0"], "0"),
    ("bench-new-tokens-huge", ["bench", "inference", *T, "--new-tokens", "100000"], "100000"),
    ("bench-out-dir", ["bench", "inference", *T, "--out", "{nonempty}"], "nonempty"),
    ("bench-out-unwritable", ["bench", "training", *T, "--out", "/proc/flbench/t.json"], "/proc/flbench/t.json"),
    ("bench-training-batch-0", ["bench", "training", *T, "--batch", "0"], "0"),
    # --- ls
    ("ls-unknown", ["ls", "nope"], "nope"),
]


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


@pytest.mark.parametrize("argv,needle", [pytest.param(a, n, id=i) for i, a, n in CASES])
def test_user_mistake_is_one_line_exit_2(cli, tmp_path, argv, needle):
    files = _setup_files(tmp_path)
    out_dir = tmp_path / "out"
    files["out"] = str(out_dir)
    argv = [files[a[1:-1]] if a.startswith("{") and a.endswith("}") else a for a in argv]
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    try:
        code, out, err = cli(*argv)
    except _Hang:
        pytest.fail("hung for 60 s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}; stderr: {err[-500:]}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {err[-800:]}"
    assert lines[0].startswith("flbench: error: "), lines[0]
    assert needle in lines[0], f"{needle!r} not named in: {lines[0]}"
    assert out == "", f"stdout not empty: {out[:200]}"
    assert not (out_dir.exists() and any(out_dir.iterdir())), "an output was written for a refused command"

