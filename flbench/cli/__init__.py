"""The `flbench` command line: one module per command; nothing below the CLI imports it."""
from flbench.cli.app import main

__all__ = ["main"]
