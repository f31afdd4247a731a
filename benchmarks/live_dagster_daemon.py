"""Live bars through the real Dagster daemon: the ingestion schedule (every minute) and the paper
bar sensor, runs launched by the daemon's queue, against the local exchange replaying real candles
shifted to now, on 1-minute bars. Reports per bar: bar close -> candles complete in the database ->
run started (Dagster's share) -> orders submitted. With the sensor's pre-launch (default 30 s) the
run starts before the close and waits; ``--prelaunch 0`` requests it once the candles are in.

    python benchmarks/live_dagster_daemon.py [--minutes 5] [--prelaunch SECONDS ...]   # e.g. --prelaunch 30 0
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from prod_system.data.market_db import MarketDatabase
from prod_system.data.sources import load_source
from prod_system.exchange import LocalExchange
from prod_system.log_dir import LogDir

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "prod_system" / "data" / "binance_futures_1m"
UNIVERSE = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "DOT", "MATIC"]
T = pd.Timestamp("2023-07-21T06:00:00Z")
INSTANCE = {
    "telemetry": {"enabled": False},
    "run_coordinator": {
        "module": "dagster.core.run_coordinator",
        "class": "QueuedRunCoordinator",
        "config": {"dequeue_interval_seconds": 1},
    },
    "run_launcher": {"module": "dagster.core.launcher", "class": "DefaultRunLauncher"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=5)
    parser.add_argument(
        "--prelaunch", type=float, nargs="+", default=[30.0], help="prelaunch_seconds; several: in turn"
    )
    options = parser.parse_args()
    for prelaunch in options.prelaunch:
        measure(options.minutes, prelaunch)


def measure(minutes: int, prelaunch: float) -> None:
    """One daemon, one fresh instance and market, ``minutes`` of 1-minute bars; prints the latencies."""
    work = Path(tempfile.mkdtemp(prefix="live_daemon_"))
    home = work / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(INSTANCE))
    candles = load_source(f"csv:{BUNDLED}", UNIVERSE, pd.Timedelta(seconds=10))
    with LocalExchange(candles[candles["bar_start"] >= T], clock="shifted") as exchange:
        database = f"sqlite:///{work / 'market.db'}"
        db = MarketDatabase(database)
        exchange.seed_history(db, candles)
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "PROD_SYSTEM_MODELS": "C1b",
            "PROD_SYSTEM_INVESTOR_MODEL": "C1b",
            "PROD_SYSTEM_DATABASE": database,
            "PROD_SYSTEM_EXCHANGE_URL": exchange.url,
            "PROD_SYSTEM_LIVE_BAR": "1m",
            "PROD_SYSTEM_PRELAUNCH_SECONDS": str(prelaunch),
            "PROD_SYSTEM_ROOT": str(work / "runs"),
        }
        dagster = [sys.executable, "-m", "dagster"]
        target = ["-m", "prod_system.definitions"]
        for kind, name in (("schedule", "market_data_ingestion_schedule"), ("sensor", "C1b_paper_trading_bar_sensor")):
            subprocess.run([*dagster, kind, "start", name, *target], env=env, check=True, capture_output=True, cwd=REPO)
        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", *target],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(minutes * 60 + 20)
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)
    os.environ["DAGSTER_HOME"] = str(home)
    instance = DagsterInstance.get()
    runs = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
    started = {}
    for run in runs:
        key = run.tags.get("dagster/partition")
        stats = instance.get_run_stats(run.run_id)
        if key and stats.start_time:
            started[key] = pd.Timestamp(stats.start_time, unit="s", tz="UTC")
    (log_dir,) = list((work / "runs").glob("C1b/paper_trading/scheduled/*/system_log_dir"))
    latency = LogDir(log_dir).read_table("latency")
    close = latency["bar_end"]
    launched = close.map(lambda bar: started.get(bar.strftime("%Y-%m-%d-%H:%M")))
    candles_known = MarketDatabase(database).snapshot(UNIVERSE, close.min() - pd.Timedelta(minutes=1), close.max())
    complete = candles_known.groupby("bar_end")["knowledge_ts"].max()  # when the bar's last candle was written
    parts = {
        "bar close -> candles complete (ingestion schedule)": close.map(complete) - close,
        "bar close -> run started (sensor + queue + launch)": pd.to_datetime(launched, utc=True) - close,
        "bar close -> orders submitted": latency["orders_submitted_at"] - close,
        "candles complete -> orders submitted": latency["orders_submitted_at"] - close.map(complete),
    }
    print(
        f"C1b paper trading through the Dagster daemon, {len(latency)} bars of 1 minute (8 assets), "
        f"pre-launch {prelaunch:g} s:"
    )
    for name, delta in parts.items():
        seconds = delta.dt.total_seconds().dropna().to_numpy()
        if len(seconds):
            print(f"  {name:52s} median {np.median(seconds):5.2f} s, p95 {np.percentile(seconds, 95):5.2f} s")
    per_bar = pd.DataFrame({name: delta.dt.total_seconds().round(2) for name, delta in parts.items()})
    per_bar.index = close.dt.strftime("%H:%M")
    per_bar.columns = ["candles complete", "run started", "orders submitted", "complete -> orders"]
    print("  per bar, seconds after the close:")
    print(textwrap.indent(per_bar.to_string(), "    "))
    ingest_runs = [r for r in runs if r.job_name == "market_data_ingestion_job"]
    print(f"  ingestion runs: {len(ingest_runs)}; bar runs: {len(started)}")


if __name__ == "__main__":
    main()
