"""Load: a live paper-trading session of 40 assets on 1-minute bars, on the real clock, against the local
exchange with 200 ms added to every request; ingestion in process. Reports the per-bar latency
distribution and whether any bar was skipped for lack of time.

The 40 assets are the 8 bundled real ones and 4 copies of each under new names (prices scaled by
1.01 to 1.04, so that the copies differ). The exchange replays them shifted to now; the market
database (SQLite) holds the two hours before; C1b decides every bar.

    python benchmarks/live_load.py [--bars 30] [--assets 40] [--latency-ms 200]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from prod_system.common.clock import RealClock
from prod_system.config import build_config
from prod_system.data.instruments import InstrumentTable, bundled_instruments
from prod_system.data.market_db import MarketDatabase
from prod_system.data.sources import load_source
from prod_system.exchange import LocalExchange
from prod_system.log_dir import LogDir
from prod_system.runs.ingestion import Ingestor
from prod_system.runs.live import LiveSession

BUNDLED = Path(__file__).resolve().parents[1] / "prod_system" / "data" / "binance_futures_1m"
REAL = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "DOT", "MATIC"]
T = pd.Timestamp("2023-07-21T06:00:00Z")


def universe_of(size: int) -> dict[str, tuple[str, float]]:
    """New asset name -> (real asset, price factor)."""
    names = {}
    for copy in range(size // len(REAL) + 1):
        for asset in REAL:
            if len(names) < size:
                names[asset if copy == 0 else f"{asset}X{copy}"] = (asset, 1 + copy / 100)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=30)
    parser.add_argument("--assets", type=int, default=40)
    parser.add_argument("--latency-ms", type=int, default=200)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="live_load_"))
    names = universe_of(options.assets)
    bundled = bundled_instruments()
    real = load_source(f"csv:{BUNDLED}", REAL, pd.Timedelta(seconds=10))
    real = real[(real["bar_start"] >= T - pd.Timedelta(hours=2)) & (real["bar_start"] < T + pd.Timedelta(hours=3))]
    copies = []
    for name, (asset, factor) in names.items():
        rows = real[real["asset"] == asset].assign(asset=name)
        rows[["open", "high", "low", "close"]] *= factor
        copies.append(rows)
    candles = pd.concat(copies, ignore_index=True)
    latency = [{"endpoint": "*", "kind": "latency", "delay_ms": options.latency_ms}]
    rules = InstrumentTable(  # a copy's exchange rules are its real asset's
        {name: replace(bundled.rules[asset], asset=name, symbol=f"{name}USDT") for name, (asset, _) in names.items()},
        source="the bundled rules, each copy under its real asset's",
        brackets=bundled.brackets,
    )
    served = candles[candles["bar_start"] >= T]
    with LocalExchange(served, clock="shifted", faults=latency, instruments=rules) as exchange:
        database = f"sqlite:///{work / 'market.db'}"
        db = MarketDatabase(database)
        exchange.seed_history(db, candles)  # the two hours before T
        clock = RealClock()
        ingestor = Ingestor(db, list(names), clock, exchange.url)
        passes: list[float] = []

        def ingest(stop: threading.Event) -> None:
            while not stop.is_set():
                began = time.perf_counter()
                try:
                    ingestor.ingest_once()
                    passes.append(time.perf_counter() - began)
                except Exception as error:  # reported, retried at the next minute, as Ingestor.run does
                    print(f"ingestion pass failed: {error}")
                next_minute = clock.now().floor("1min") + pd.Timedelta(minutes=1, seconds=1)
                while not stop.is_set() and clock.now() < next_minute:
                    stop.wait(0.05)

        stop = threading.Event()
        threading.Thread(target=ingest, args=(stop,), daemon=True).start()
        start = clock.now().floor("1min")
        config = build_config(
            {
                "model": "C1b",
                "run_mode": "paper_trading",
                "bar": "1m",
                "universe": list(names),
                "start": start,
                "end": start + pd.Timedelta(minutes=options.bars),
                "market_data": {"source": database},
                "portfolio": {
                    "instruments": {
                        name: bundled.rules[asset].instrument().model_dump() for name, (asset, _) in names.items()
                    }
                },
                "log_root": str(work / "runs"),
                "profile_memory": False,
            }
        )
        print(
            f"{len(names)} assets, {options.bars} bars of 1 minute from {start}, +{options.latency_ms} ms per request"
        )
        outcomes = LiveSession(config, clock).run()
        stop.set()
        requests = exchange.request_counts()
        ingestor.close()
    (log_dir,) = list((work / "runs").glob("C1b/paper_trading/manual/*/system_log_dir"))
    table = LogDir(log_dir).read_table("latency")
    skipped = [o for o in outcomes if o.status != "traded"]
    close = table["bar_end"]
    print(f"bars traded: {len(outcomes) - len(skipped)} of {len(outcomes)}; skipped: {len(skipped)}")
    for outcome in skipped:
        print(f"  skipped {outcome.bar_end}: {outcome.reason}")
    print(
        f"ingestion pass ({len(names)} assets, concurrent requests): median {np.median(passes):.2f} s, "
        f"max {max(passes):.2f} s over {len(passes)} passes; requests to the exchange: {sum(requests.values())}"
    )
    print()
    print("| per bar, seconds after the bar's close | median | p95 | max |")
    print("|---|---|---|---|")
    for name, column in [
        ("every candle in the database", "data_complete_at"),
        ("predictions", "predictions_at"),
        ("orders submitted", "orders_submitted_at"),
    ]:
        seconds = (table[column] - close).dt.total_seconds().to_numpy()
        print(f"| {name} | {np.median(seconds):.2f} | {np.percentile(seconds, 95):.2f} | {seconds.max():.2f} |")
    work_seconds = (table["orders_submitted_at"] - table["data_complete_at"]).dt.total_seconds().to_numpy()
    print(
        f"| data complete -> orders submitted | {np.median(work_seconds):.2f} | "
        f"{np.percentile(work_seconds, 95):.2f} | {work_seconds.max():.2f} |"
    )
    print(f"\nlog dir: {log_dir}")


if __name__ == "__main__":
    main()
