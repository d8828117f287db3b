"""Task tests never reach the Hugging Face hub: a missing local file fails at once (as on an offline machine)
unless a test monkeypatches `datasets.load_dataset` and `hub_offline_reason`."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
