"""Provenance of every output: versions, git commit (+ dirty flag) and date, written by one helper."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

# ---------------------------------------------------------------------------------------- provenance

def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(root: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def git_state() -> tuple[str | None, bool]:
    """(commit, dirty) of the git checkout that holds the imported flbench package; (None, False) otherwise.

    A copy installed into site-packages (even inside some repository's .venv) is not "a checkout": the
    package's own `__init__.py` must be tracked by the repository.
    """
    import flbench

    pkg = Path(flbench.__file__).resolve().parent
    root = pkg.parent
    if _git(root, "ls-files", "--error-unmatch", f"{pkg.name}/__init__.py") is None:
        return None, False
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        return None, False
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return commit, bool(status)


def provenance() -> dict:
    """Versions (flbench, torch, transformers, python), git commit + dirty flag, UTC ISO date."""
    import flbench

    commit, dirty = git_state()
    return {
        "versions": {
            "flbench": flbench.__version__,
            "torch": _version("torch"),
            "transformers": _version("transformers"),
            "python": sys.version.split()[0],
        },
        "commit": commit,
        "dirty": dirty,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
