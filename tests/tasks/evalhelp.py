"""Shared helper for the eval CLI tests."""
from __future__ import annotations


def eval_both(cli, *argv: str) -> dict[bool, dict]:
    """`flbench eval ... --json` through the split (False) and with --centralized (True)."""
    import json

    outs = {}
    for flag in ([], ["--centralized"]):
        code, out, err = cli("eval", *argv, "--json", *flag)
        assert code == 0, err
        outs[bool(flag)] = json.loads(out)
    return outs
