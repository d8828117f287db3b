"""The one check every user-mistake test makes: exit 2, nothing on stdout, exactly one `flbench: error:` line."""
from __future__ import annotations


def one_line_error(cli, *argv: str) -> str:
    """Run the CLI (the `cli` fixture) and return its single error line, asserting the contract."""
    code, out, err = cli(*argv)
    lines = err.strip().splitlines()
    assert code == 2 and out == "", (code, out[:200], err[-500:])
    assert len(lines) == 1 and lines[0].startswith("flbench: error: "), err[-800:]
    return lines[0]
