"""Markdown tables through pandas (`DataFrame.to_markdown`, i.e. tabulate's GitHub format): the one
renderer behind `flbench leaderboard --format md` and the README tables of `benchmarks/report.py`.

Cells are formatted by the caller (or with `cell()`) and passed as text; tabulate never re-parses them
(`disable_numparse`), so a number is printed exactly as formatted. A "|" inside a cell is escaped.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

MISSING = "–"


def cell(v: Any, digits: int = 3) -> str:
    """One value as table text: missing/NaN → "–", booleans → "✓"/"", ±inf → "∞"/"-∞", integral numbers
    below 10^6 without decimals, other numbers with `digits` significant digits."""
    import numpy as np
    import pandas as pd

    if v is None or v is pd.NA:
        return MISSING
    if isinstance(v, (bool, np.bool_)):
        return "✓" if v else ""
    if isinstance(v, str):
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return MISSING
    if math.isinf(f):
        return "∞" if f > 0 else "-∞"
    if f.is_integer() and abs(f) < 1e6:
        return str(int(f))
    return f"{f:.{digits}g}"


def markdown_table(rows: Iterable[Mapping[str, Any]] | Any, columns: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table (ending in a newline) of `rows`: a DataFrame, or dicts of column → text.
    Non-string cells are formatted with `cell()`."""
    import pandas as pd

    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=columns)
    if columns is not None:
        df = df[list(columns)]
    text = df.apply(lambda col: col.map(lambda v: (v if isinstance(v, str) else cell(v)).replace("|", "\\|")))
    return text.to_markdown(index=False, tablefmt="github", disable_numparse=True) + "\n"
