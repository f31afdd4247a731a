"""The docs' examples run: the model of docs/adding_a_model.md is simulated and reconciled through the
CLI, and every relative link between the README and docs/ points at a file that exists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _code_block(path: Path, language: str) -> str:
    (block, *_) = re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)
    return block


def test_the_model_of_the_guide_simulates_and_reconciles(tmp_path):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "momentum.py").write_text(_code_block(REPO / "docs" / "adding_a_model.md", "python"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    window = ["--start", "2023-07-21T00:00:00Z", "--end", "2023-07-22T00:00:00Z", "--root", str(tmp_path / "OUT")]
    cli = [sys.executable, "-m", "prod_system.cli"]
    model = ["--model", "mypkg.momentum:build_dag"]
    simulated = subprocess.run([*cli, "simulate", *model, *window, "--engine", "core"], env=env, capture_output=True)
    assert simulated.returncode == 0, simulated.stderr.decode()
    reconciled = subprocess.run([*cli, "reconcile", *model, *window], env=env, capture_output=True)
    assert reconciled.returncode == 0, reconciled.stderr.decode()
    (log_dir,) = (tmp_path / "OUT").glob("*/simulation/manual/*/system_log_dir")
    assert "momentum" in log_dir.parts[-5]
    assert (log_dir / "portfolio" / "statistics").exists()


def test_relative_links_in_the_docs_resolve():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert broken == []
