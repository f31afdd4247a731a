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


def _definition_names() -> dict[str, set[str]]:
    """What the code location defines, by kind, as the UI shows it."""
    import dagster

    from prod_system.definitions import defs

    repo = defs.get_repository_def()
    return {
        "definitions": {j.name for j in repo.get_all_jobs()}
        | {s.name for s in repo.schedule_defs}
        | {s.name for s in repo.sensor_defs},
        "checks": {key.name for key in repo.asset_graph.asset_check_keys},
        "assets": {"/".join(key.path) for key in repo.asset_graph.get_all_asset_keys()},
        "dagster_api": set(dir(dagster)),
    }


def _expand(template: str) -> re.Pattern:
    """`{model}_{mode}_bar_sensor` -> a pattern every concrete name of that template matches."""
    return re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^_/]+(?:_trading)?", re.escape(template)) + "$")


def _quoted(page: Path) -> list[tuple[str, str]]:
    """(sentence, token) for every backticked token of a page."""
    text = page.read_text()
    return [
        (sentence, token)
        for sentence in re.split(r"(?<=[.;:])\s", text)
        for token in re.findall(r"`([^`\n]+)`", sentence)
    ]


def test_dagster_names_quoted_in_the_docs_exist():
    """Jobs, schedules, sensors, asset checks and live asset keys named in the README and docs/ are the
    Definitions' own (a renamed schedule or a new check must be renamed or added in the docs too)."""
    names = _definition_names()
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    unknown, documented_checks = [], set()
    for page in pages:
        for sentence, token in _quoted(page):
            where = f"{page.relative_to(REPO)}: `{token}`"
            if re.fullmatch(r"[A-Za-z0-9{}_]+_(job|schedule|sensor|daily)", token):
                if token in names["dagster_api"]:
                    continue
                pattern = _expand(token)
                if not any(pattern.match(name) for name in names["definitions"]):
                    unknown.append(where)
            elif re.fullmatch(r"(C1b|C3a|\{model\}|market_data)/[A-Za-z0-9_{}/]+", token):
                pattern = _expand(token)
                if not any(pattern.match(name) for name in names["assets"]):
                    unknown.append(where)
            elif "check" in sentence and re.fullmatch(r"[a-z]+(_[a-z]+)+", token):
                if token in names["checks"]:
                    documented_checks.add(token)
                else:
                    unknown.append(where + " (called a check)")
    assert unknown == [], "names in the docs that the Definitions do not have"
    assert documented_checks == names["checks"], "asset checks the docs do not name"


def test_the_bundled_data_range_is_stated_alike_everywhere():
    """The README and `prod-system --help` give the bundled candles' real first and last day."""
    import pandas as pd

    from prod_system.cli import main

    opens = pd.concat(
        pd.read_csv(path, usecols=[0]).iloc[:, 0]
        for path in sorted((REPO / "prod_system/data/binance_futures_1m").glob("*.gz"))
    )
    opens = pd.to_datetime(opens, utc=True)
    stated = f"{opens.min():%Y-%m-%d} to {opens.max() + pd.Timedelta(minutes=1):%Y-%m-%d} UTC"
    assert stated in (REPO / "README.md").read_text()
    assert stated in main.help
