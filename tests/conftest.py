"""Shared fixtures: the tiny random LLaMA (fast, no download) and the real default model (smollm2-135m).

Both are loaded once per session and never mutated by the tests (split runtimes deep-copy the blocks).
"""
from __future__ import annotations

import os

import pytest
import torch

# The test machines share few cores between several workers; OpenMP threads that spin-wait on a busy core
# make small-model forwards 10-20x slower and erratic. One thread is fastest and predictable here.
torch.set_num_threads(int(os.environ.get("FLBENCH_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def tiny():
    from flbench.models import load_model

    return load_model("tiny-llama", progress=False)


@pytest.fixture(scope="session")
def smol():
    from flbench.models import load_model

    return load_model("smollm2-135m", progress=False)


@pytest.fixture
def cli(capsys):
    """Run the `flbench` CLI in-process: cli(*argv) -> (exit code, stdout, stderr)."""
    from flbench.cli.app import main

    def run(*argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main(list(argv))
        out, err = capsys.readouterr()
        return exc.value.code, out, err

    return run
