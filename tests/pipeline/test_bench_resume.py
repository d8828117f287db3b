"""A benchmark's --resume (flbench.pipeline.bench.resumable_rows): the rows of the same measurement are kept;
a file of another measurement is refused rather than mixed in."""
from __future__ import annotations

import json

import pytest

from flbench.pipeline.bench import resumable_rows


def test_resume_keeps_rows_of_the_same_measurement_and_refuses_others(tmp_path):
    f = tmp_path / "b.json"
    assert resumable_rows(f, {"model": "m"}) == [] and resumable_rows(None, {"model": "m"}) == []
    f.write_text(json.dumps({"measurement": {"model": "m", "seed": 0}, "rows": [{"row": 1}]}))
    assert resumable_rows(f, {"model": "m", "seed": 0}) == [{"row": 1}]
    with pytest.raises(SystemExit, match="different measurement"):
        resumable_rows(f, {"model": "m", "seed": 1})
