"""The command line as a person runs it: `python -m prod_system.cli` in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`prod-system ARGS...` run from ``cwd`` (the repository by default), its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "prod_system.cli", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
