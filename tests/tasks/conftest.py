"""Task tests never reach the Hugging Face hub: a missing local file fails at once (as on an offline machine)
unless a test monkeypatches `datasets.load_dataset` and `hub_offline_reason`."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def tiny_checkpoint(cli, tmp_path):
    """A `flbench train --out` directory: 2 split LoRA steps of tiny-llama at 1,1 on a small text file."""
    data = tmp_path / "train.txt"
    data.write_text("".join(f"Record: person {i} has e-mail p{i}@x.org\n" for i in range(8)))
    ck = tmp_path / "ck"
    code, _, err = cli("train", "--model", "tiny-llama", "--split", "1,1", "--data-file", str(data),
                       "--steps", "2", "--batch-size", "2", "--lr", "0.05", "--out", str(ck), "--json")
    assert code == 0, err
    return ck

