"""The set-up scripts users run by hand: ``source scripts/env.sh`` happens in the user's own shell."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OPTIONS = "errexit nounset pipefail"


def _options_around_source(before: str, cwd: Path) -> list[str]:
    """The shell options before and after sourcing env.sh, and whether a failing command then kills it."""
    script = (
        f"{before}\n"
        f"shopt -po {OPTIONS}\n"
        f"source {REPO / 'scripts' / 'env.sh'} || echo 'source failed'\n"
        f"shopt -po {OPTIONS}\n"
        "ls /nonexistent-prod-system-path 2>/dev/null\n"
        'echo "alive $DAGSTER_HOME"\n'
    )
    fresh = {name: value for name, value in os.environ.items() if name != "DAGSTER_HOME"}  # a user's new shell
    done = subprocess.run(["bash", "-c", script], cwd=cwd, env=fresh, capture_output=True, text=True, timeout=120)
    return done.stdout.splitlines()


@pytest.mark.parametrize("before", ["set +euo pipefail", "set -u"])
def test_sourcing_env_sh_leaves_the_callers_shell_options_alone(before, tmp_path):
    lines = _options_around_source(before, tmp_path)
    options = [line for line in lines if line.startswith("set ")]
    assert options[:3] == options[3:], "sourcing scripts/env.sh changed the caller's shell options"
    # an interactive user's next failing command must not close their terminal
    assert lines[-1] == f"alive {REPO}", lines
    assert "source failed" not in lines
