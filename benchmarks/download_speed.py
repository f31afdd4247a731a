"""History download from the exchange: `prod-system dump-market-data --source exchange:URL` of 30 days x 20
assets of 1-minute candles from `prod-system exchange-sim` (its own process, on loopback, --history 30d so
the 30 days before start-up are closed). Reports the wall time of the dump process and its requests per
second; checks the snapshot holds every candle of the window once.

The 20 assets are the 8 bundled ones and copies under new names (with the bundled exchange rules of the
asset they copy), their candles a seeded random walk: the exchange serves what it replays, whatever the
prices, and 30 days are more than the bundled 3.

    python benchmarks/download_speed.py [--days 30] [--assets 20]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from prod_system.data.instruments import SNAPSHOT_KEY, InstrumentTable, bundled_instruments
from prod_system.data.market_data import read_snapshot, write_snapshot
from prod_system.trading.brokers.ccxt_client import binanceusdm_client

REAL = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "DOT", "MATIC"]
START = pd.Timestamp("2024-01-01T00:00:00Z")


def names_of(size: int) -> dict[str, str]:
    """New asset name -> the real asset whose rules it trades under."""
    names = {}
    for copy in range(size // len(REAL) + 1):
        for asset in REAL:
            if len(names) < size:
                names[asset if copy == 0 else f"{asset}X{copy}"] = asset
    return names


def random_walk(names: list[str], minutes: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    frames = []
    opens = pd.date_range(START, periods=minutes, freq="1min")
    for asset in names:
        close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, minutes)))
        open_ = np.concatenate([[100.0], close[:-1]])
        spread = np.abs(rng.normal(0, 5e-4, minutes)) * close
        frame = pd.DataFrame(
            {
                "asset": asset,
                "bar_start": opens,
                "open": open_.round(4),
                "high": (np.maximum(open_, close) + spread).round(4),
                "low": (np.minimum(open_, close) - spread).round(4),
                "close": close.round(4),
                "volume": rng.uniform(1, 1000, minutes).round(3),
            }
        )
        frames.append(frame)
    candles = pd.concat(frames, ignore_index=True)
    candles["bar_end"] = candles["bar_start"] + pd.Timedelta(minutes=1)
    candles["knowledge_ts"] = candles["bar_end"] + pd.Timedelta(seconds=10)
    return candles


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--assets", type=int, default=20)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="download_speed_"))
    names = names_of(options.assets)
    bundled = bundled_instruments()
    rules = InstrumentTable(
        {name: replace(bundled.rules[asset], asset=name, symbol=f"{name}USDT") for name, asset in names.items()},
        source="the bundled rules, each copy under its real asset's",
        brackets=bundled.brackets,
    )
    snapshot = work / "served.parquet"
    candles = random_walk(list(names), (options.days + 1) * 1440)  # the history, and a day to replay
    write_snapshot(candles, snapshot, {SNAPSHOT_KEY: rules.to_json()})
    env = {**os.environ, "EXCHANGE_API_KEY": "bench-key", "EXCHANGE_API_SECRET": "bench-secret"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "prod_system.cli"]
    serve = ["exchange-sim", "--market-data", str(snapshot), "--port", str(port), "--history", f"{options.days}d"]
    server = subprocess.Popen(
        [*command, *serve],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                now = pd.Timestamp(binanceusdm_client(url).fetch_time(), unit="ms", tz="UTC")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        end = now.floor("1min")
        start = end - pd.Timedelta(days=options.days)
        out = work / "history.parquet"
        dump = [*command, "dump-market-data", "--source", f"exchange:{url}", "--universe", ",".join(names)]
        dump += ["--start", start.isoformat(), "--end", end.isoformat(), "--out", str(out)]
        began = time.perf_counter()
        done = subprocess.run(dump, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - began
    finally:
        server.terminate()
        server.wait(timeout=30)
    if done.returncode:
        raise SystemExit(done.stderr)
    line = next(line for line in done.stderr.splitlines() if line.startswith("downloaded"))
    got = read_snapshot(out)
    expected = options.days * 1440 * len(names)
    duplicates = int(got.duplicated(["asset", "bar_start"]).sum())
    print(line)
    print(
        f"{options.days} days x {len(names)} assets: {len(got):,} candles (expected {expected:,}, "
        f"{duplicates} duplicates) in {seconds:.1f} s end to end (the dump process, start to snapshot written)"
    )


if __name__ == "__main__":
    main()
