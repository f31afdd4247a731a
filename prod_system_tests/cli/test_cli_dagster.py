"""What the CLI does through Dagster, seen from the terminal and from the instance the UI reads:
Ctrl-C during a Dagster simulation, the simulation as a run of the model's job with its tags and its
code location, and a live session's bars reported on the live asset."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, FloatMetadataValue

from prod_system.cli.launch import LiveBarReporter
from prod_system.common.clock import SimulatedClock
from prod_system.config import build_config
from prod_system.log_dir import LogDir
from prod_system.runs.live import BarOutcome, bar_key
from prod_system_tests.kit.live import Market

REPO = Path(__file__).resolve().parents[2]
WINDOW = ["--start", "2023-07-21T00:00:00Z", "--end", "2023-07-22T00:00:00Z"]
LOG_DIR = "C1b/simulation/manual/20230721_000000.20230722_000000/system_log_dir"


def home_with_the_repository_settings(path: Path) -> Path:
    """A DAGSTER_HOME like the repository's (its dagster.yaml), empty."""
    path.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", path / "dagster.yaml")
    return path


@pytest.fixture(scope="module")
def interrupted_then_rerun(tmp_path_factory, snapshot):
    """`prod-system simulate` (Dagster engine) interrupted like Ctrl-C in a terminal once its progress
    shows, then the same command again. Returns (interrupted, rerun, DAGSTER_HOME, root)."""
    base = tmp_path_factory.mktemp("interrupt")
    home, root = home_with_the_repository_settings(base / "home"), base / "root"
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    env.pop("PROD_SYSTEM_DEBUG", None)
    command = [sys.executable, "-m", "prod_system.cli", "simulate", "--model", "C1b"]
    command += ["--market-data", str(snapshot), *WINDOW, "--root", str(root)]
    # a terminal's Ctrl-C goes to the whole foreground process group: its own session stands for it
    process = subprocess.Popen(
        command, cwd=base, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    seen = []
    try:
        for line in process.stderr:
            seen.append(line)
            if line.split()[:1] == ["model"]:  # the model stage's first progress line: the run is under way
                os.killpg(process.pid, signal.SIGINT)
                break
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    interrupted = subprocess.CompletedProcess(command, process.returncode, out, "".join(seen) + err)
    rerun = subprocess.run(command, cwd=base, env=env, capture_output=True, text=True, timeout=300)
    return interrupted, rerun, home, root


def test_ctrl_c_during_a_dagster_simulation_is_one_line_exit_130_and_a_plain_rerun_works(interrupted_then_rerun):
    interrupted, rerun, _, root = interrupted_then_rerun
    assert interrupted.returncode == 130, interrupted.stderr[-3000:]
    lines = interrupted.stderr.splitlines()
    assert [line for line in lines if line.startswith("error:")] == ["error: interrupted"], interrupted.stderr[-3000:]
    assert len([line for line in lines if line.startswith("hint:")]) == 1
    for noise in ("Traceback", "KeyboardInterrupt", "DagsterExecutionInterruptedError", " - dagster - "):
        assert noise not in interrupted.stderr, interrupted.stderr[-3000:]
    # the interrupted window holds no finished run: the same command again goes through, no --overwrite
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "bars:        288" in rerun.stdout
    assert len(LogDir(root / LOG_DIR).read_table("portfolio/statistics")) == 288


def test_a_cli_simulation_is_a_run_of_the_models_job_in_the_code_location(interrupted_then_rerun, monkeypatch):
    """In the UI: the run of C1b_simulation_job (not __ephemeral_asset_job__), with the model, mode and
    root in its tags, and the code location of workspace.yaml as its origin (the Overview timeline
    shows only runs that have one)."""
    _, rerun, home, root = interrupted_then_rerun
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    run_id = next(line.split()[-1] for line in rerun.stdout.splitlines() if line.startswith("dagster run:"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        interrupted = [r for r in instance.get_runs() if r.run_id != run_id]
    assert run.job_name == "C1b_simulation_job" and run.status == DagsterRunStatus.SUCCESS
    assert run.tags["prod_system/model"] == "C1b"
    assert run.tags["prod_system/run_mode"] == "simulation"
    assert run.tags["prod_system/root"] == str(root.resolve())
    assert run.tags["dagster/asset_partition_range_start"] == run.tags["dagster/asset_partition_range_end"]
    (location,) = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"]
    assert run.remote_job_origin is not None
    assert run.remote_job_origin.location_name == location["python_module"]["location_name"]
    assert run.remote_job_origin.repository_origin.repository_name == "__repository__"
    assert run.remote_job_origin.job_name == "C1b_simulation_job"
    # the interrupted run is there too, under the same job, and not as a success
    assert [(r.job_name, r.status != DagsterRunStatus.SUCCESS) for r in interrupted] == [("C1b_simulation_job", True)]


def test_a_cli_live_session_reports_its_bars_on_the_live_asset(candles, tmp_path, monkeypatch):
    """`prod-system run` (paper trading, two 1-minute bars at 30x on the local exchange): each bar is a
    materialization of [C1b, paper_trading, bar] in the instance, partitioned by the bar, with its
    status, log dir and figures, as the Dagster-driven bars are."""
    speed = 30.0
    market = Market(candles, f"sqlite:///{tmp_path / 'market.db'}", speed=speed)
    home, root = home_with_the_repository_settings(tmp_path / "home"), tmp_path / "runs"
    command = [sys.executable, "-m", "prod_system.cli", "run", "--model", "C1b", "--duration", "2m", "--bar", "1m"]
    command += ["--root", str(root), "--database", market.database_url, "--exchange-url", market.exchange.url]
    command += ["--speed", str(speed), "--no-ingest"]
    try:
        done = subprocess.run(
            command, env={**os.environ, "DAGSTER_HOME": str(home)}, capture_output=True, text=True, timeout=300
        )
    finally:
        market.close()
    assert done.returncode == 0, done.stderr[-3000:]
    (session,) = root.glob("C1b/paper_trading/manual/*/system_log_dir")
    bars = [line.split()[1:3] for line in done.stderr.splitlines() if line.startswith("bar ")]
    assert len(bars) == 2, done.stderr
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as instance:
        records = instance.fetch_materializations(AssetKey(["C1b", "paper_trading", "bar"]), limit=10).records
        partitions = instance.get_dynamic_partitions("C1b_paper_trading_bars")
    reported = {r.asset_materialization.partition: r.asset_materialization.metadata for r in records}
    expected = {bar_key(pd.Timestamp(f"{day} {time.rstrip(':')}", tz="UTC")) for day, time in bars}
    assert set(reported) == expected and expected <= set(partitions)
    for metadata in reported.values():
        assert metadata["status"].value in ("traded", "skipped")
        assert metadata["log_dir"].value == str(session)
        assert isinstance(metadata["session_pnl"], FloatMetadataValue)  # and the bar's figures


def test_a_resumed_cli_session_s_reports_wait_for_its_first_tradable_bar(tmp_path, monkeypatch):
    """`prod-system run` resumed late goes through the closed bars at once (skipping them): their
    reports wait (the session job's ``BarReporter``), so the first bar it can still trade is not late;
    they go out in order once the session waits for a close, marked as the CLI's."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    start = pd.Timestamp("2023-07-21T00:00:00Z")
    config = build_config(
        {
            "model": "C1b",
            "universe": ["BTC", "ETH"],
            "start": start.isoformat(),
            "end": (start + pd.Timedelta(days=1)).isoformat(),
            "bar": "1m",
            "run_mode": "paper_trading",
            "log_root": str(tmp_path / "runs"),
            "market_data": {"source": "sqlite:///unused.db"},
        }
    )
    clock = SimulatedClock(start + pd.Timedelta(minutes=10, seconds=20))  # bar 00:10 closed 20 s ago
    bars = [start + pd.Timedelta(minutes=i) for i in range(1, 11)]
    report = LiveBarReporter(config, clock, pd.Timedelta(minutes=1))
    waiting = []
    for bar_end in bars[:-1]:
        report(BarOutcome(bar_end, "skipped", "the process was not running at the bar's close"))
        waiting.append(len(report.waiting))
    report(BarOutcome(bars[-1], "traded", orders=3))  # the session now waits for 00:11
    assert waiting == list(range(1, 10)) and report.waiting == []
    records = report.dagster().fetch_materializations(AssetKey(["C1b", "paper_trading", "bar"]), limit=20).records
    reported = [r.asset_materialization for r in reversed(records)]  # newest first
    assert [m.partition for m in reported] == [bar_key(b) for b in bars]
    assert {m.metadata["launched_by"].value for m in reported} == {"prod-system run"}
