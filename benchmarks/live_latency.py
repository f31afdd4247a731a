"""Live latency per bar, on the real clock: bar close -> data complete in the database -> predictions
-> orders submitted -> fills recorded; and what a Dagster run adds around one bar.

The local exchange replays real candles shifted to now (1-minute bars); ingestion runs in process
(one pass a second after each minute closes, the default); a prod session (orders through ccxt to
the exchange) and a paper session trade the same bars side by side. Then one bar is run through
Dagster (the per-bar asset, materialized in process) to time the run's own overhead.

    python benchmarks/live_latency.py [--bars 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import DagsterInstance, materialize

from prod_system.common.clock import RealClock
from prod_system.config import build_config
from prod_system.data.market_db import MarketDatabase
from prod_system.data.sources import load_source
from prod_system.definitions import build_definitions
from prod_system.defs.live import bar_partitions, build_live_assets
from prod_system.defs.resources import LogDirResource, SystemResource
from prod_system.defs.resources.live import LiveResource
from prod_system.exchange import LocalExchange
from prod_system.log_dir import LogDir
from prod_system.runs.ingestion import Ingestor
from prod_system.runs.live import LiveSession, bar_key

BUNDLED = Path(__file__).resolve().parents[1] / "prod_system" / "data" / "binance_futures_1m"
UNIVERSE = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "DOT", "MATIC"]
T = pd.Timestamp("2023-07-21T06:00:00Z")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=5)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="live_latency_"))
    candles = load_source(f"csv:{BUNDLED}", UNIVERSE, pd.Timedelta(seconds=10))
    with LocalExchange(candles[candles["bar_start"] >= T], clock="shifted") as exchange:
        database = f"sqlite:///{work / 'market.db'}"
        db = MarketDatabase(database)
        exchange.seed_history(db, candles)
        clock = RealClock()
        ingestor = Ingestor(db, UNIVERSE, clock, exchange.url)
        stop = threading.Event()
        threading.Thread(target=ingestor.run, args=(stop,), daemon=True).start()
        os.environ["BENCH_KEY"], os.environ["BENCH_SECRET"] = exchange.api_key, exchange.api_secret
        start = clock.now().floor("1min")
        sessions = {}
        for mode in ("paper_trading", "prod"):
            broker = {"kind": "mocked"}
            if mode == "prod":
                broker = {
                    "kind": "ccxt",
                    "exchange_url": exchange.url,
                    "api_key_env": "BENCH_KEY",
                    "api_secret_env": "BENCH_SECRET",
                }
            config = build_config(
                {
                    "model": "C1b",
                    "run_mode": mode,
                    "bar": "1m",
                    "start": start,
                    "end": start + pd.Timedelta(minutes=options.bars),
                    "market_data": {"source": database},
                    "log_root": str(work / "runs"),
                    "broker": broker,
                    "profile_memory": False,
                }
            )
            sessions[mode] = LiveSession(config, clock)
        threads = [threading.Thread(target=s.run) for s in sessions.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        # one more bar through Dagster, in process: the run's cost around the same core work
        resources = {
            "live": LiveResource(database=database, exchange_url=exchange.url, bar="1m"),
            "system": SystemResource(profile_memory=False),
            "log_dir": LogDirResource(root=str(work / "dagster_runs")),
        }
        instance = DagsterInstance.ephemeral()
        bar_end = clock.now().floor("1min") + pd.Timedelta(minutes=1)
        clock.wait_until(bar_end + pd.Timedelta(seconds=2))
        instance.add_dynamic_partitions(bar_partitions("C1b", "paper_trading").name, [bar_key(bar_end)])
        began = time.perf_counter()
        result = materialize(
            [build_live_assets("C1b", "paper_trading")],
            partition_key=bar_key(bar_end),
            instance=instance,
            resources=resources,
        )
        dagster_seconds = time.perf_counter() - began
        # the day's session as one Dagster run (the daily schedule's job), for a few bars
        defs = build_definitions(["C1b"], resources=resources, investor_model="C1b")
        defs.resolve_job_def("C1b_paper_trading_session_job").execute_in_process(
            run_config={"ops": {"C1b_paper_trading_session": {"config": {"stop_after_minutes": options.bars}}}},
            instance=instance,
        )
        stop.set()
        ingestor.close()
    print(f"C1b, {len(UNIVERSE)} assets, 1-minute bars on the real clock, {options.bars} bars per mode:")
    (scheduled,) = list((work / "dagster_runs").glob("C1b/paper_trading/scheduled/*/system_log_dir"))
    logs = {f"{mode} (CLI)": session.log_dir.path for mode, session in sessions.items()}
    logs["paper_trading (Dagster session job, bars after the per-bar run)"] = scheduled
    for mode, path in logs.items():
        latency = LogDir(path).read_table("latency")
        close = latency["bar_end"]
        parts = {
            "data complete": latency["data_complete_at"] - close,
            "predictions": latency["predictions_at"] - close,
            "orders submitted": latency["orders_submitted_at"] - close,
            "fills recorded": latency["fills_recorded_at"] - close,
        }
        print(f"  {mode}:")
        for name, delta in parts.items():
            seconds = delta.dt.total_seconds().dropna().to_numpy()
            if len(seconds):
                median, p95 = np.median(seconds), np.percentile(seconds, 95)
                print(f"    bar close -> {name:17s} median {median:6.3f} s, p95 {p95:6.3f} s")
        complete_to_orders = (latency["orders_submitted_at"] - latency["data_complete_at"]).dt.total_seconds()
        print(f"    data complete -> orders submitted: median {complete_to_orders.median():.3f} s")
    (event,) = result.get_asset_materialization_events()
    inside = event.materialization.metadata["orders_submitted_seconds_after_close"].value
    print(
        f"  one bar as a Dagster run (in process, ephemeral instance): {dagster_seconds:.2f} s for the run; "
        f"orders submitted {inside:.2f} s after the close"
    )


if __name__ == "__main__":
    main()
