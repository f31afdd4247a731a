"""Order latency: from the start of a bar's order placement to all its fills recorded.

The local exchange runs in its own process (``python -m prod_system.exchange``, manual clock, on the
bundled candles); the broker is the real ``ExchangeBroker`` with the real ccxt client over HTTP.
Each bar: one order per asset (8 assets, alternating buy and sell of about 10,000 USDT), then
``collect_fills``. Market orders: one order per asset, sent concurrently. TWAP: 5 waves per bar;
the replay clock jumps between waves, so the figure is the broker's own time (HTTP and
bookkeeping), without the waits across the bar.

    python benchmarks/broker_latency.py [--bars 60]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from prod_system.common.clock import SimulatedClock
from prod_system.config import BrokerConfig, RiskConfig
from prod_system.data.market_data import select_window, write_snapshot
from prod_system.data.sources import load_source
from prod_system.trading.brokers.exchange import ExchangeBroker
from prod_system.trading.portfolio import PortfolioState

BUNDLED = Path(__file__).resolve().parents[1] / "prod_system" / "data" / "binance_futures_1m"
UNIVERSE = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "DOT", "MATIC"]
KEY, SECRET = "bench-key", "bench-secret"
START = pd.Timestamp("2023-07-21T00:00:00Z")
BAR = pd.Timedelta(minutes=5)


class ExchangeClock(SimulatedClock):
    """The replay clock, moving the exchange's manual clock over HTTP."""

    def __init__(self, start: pd.Timestamp, url: str):
        super().__init__(start)
        self.url = url
        self._set(start)

    def wait_until(self, ts: pd.Timestamp) -> None:
        super().wait_until(ts)
        self._set(ts)

    def _set(self, ts: pd.Timestamp) -> None:
        body = json.dumps({"now_ms": ts.value // 1_000_000}).encode()
        request = urllib.request.Request(f"{self.url}/_control/clock", data=body, method="POST")
        request.add_header("X-MBX-APIKEY", KEY)
        request.add_header("Content-Type", "application/json")
        urllib.request.urlopen(request, timeout=5).close()


def start_exchange(snapshot: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "EXCHANGE_API_KEY": KEY, "EXCHANGE_API_SECRET": SECRET}
    command = [sys.executable, "-m", "prod_system.exchange", "--market-data", f"parquet:{snapshot}"]
    server = subprocess.Popen(
        [*command, "--port", str(port), "--clock", "manual", "--history", "0m"],  # the bars drive it from START
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/fapi/v1/time", timeout=1).close()
            return server, url
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError("the local exchange did not start")


def run(url: str, candles: pd.DataFrame, execution: str, bars: int) -> tuple[list[float], list[int]]:
    """``bars`` bars of orders for every asset through a fresh broker on a fresh (flat) exchange."""
    os.environ["BENCH_KEY"], os.environ["BENCH_SECRET"] = KEY, SECRET
    config = BrokerConfig(
        kind="ccxt", exchange_url=url, api_key_env="BENCH_KEY", api_secret_env="BENCH_SECRET", execution=execution
    )
    first = START + BAR
    clock = ExchangeClock(first + pd.Timedelta(seconds=10), url)
    broker = ExchangeBroker(config, RiskConfig(), UNIVERSE, clock, BAR)
    broker.reconcile(PortfolioState.empty(UNIVERSE, 1e6))
    close = candles.pivot(index="bar_end", columns="asset", values="close")
    seconds, requests = [], []
    for i in range(bars):
        bar_end = first + BAR * i
        clock.wait_until(bar_end + pd.Timedelta(seconds=10))
        prices = close.loc[:bar_end].iloc[-1]
        sign = 1 if i % 2 == 0 else -1
        orders = [
            {
                "bar_end": bar_end,
                "asset": asset,
                "client_order_id": f"ps-bench-{execution[:3]}-{bar_end:%y%m%d%H%M}-{asset}",
                "quantity": sign * float(np.floor(10_000 / prices[asset] / 0.001) * 0.001),
                "decision_price": float(prices[asset]),
            }
            for asset in UNIVERSE
        ]
        before = broker.requests
        began = time.perf_counter()
        broker.submit(orders)
        fills = broker.collect_fills(bar_end)
        seconds.append(time.perf_counter() - began)
        requests.append(broker.requests - before)
        assert len(fills) == len(orders) * (config.twap_waves if execution == "twap" else 1), len(fills)
    broker.close()
    return seconds, requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=60)
    options = parser.parse_args()
    candles = select_window(
        load_source(f"csv:{BUNDLED}", UNIVERSE, pd.Timedelta(seconds=10)),
        START - pd.Timedelta(hours=1),
        START + pd.Timedelta(days=1),
    )
    snapshot = write_snapshot(candles, Path(tempfile.mkdtemp()) / "snapshot.parquet")
    results = {}
    for name, execution in (("market", "market"), ("twap (5 waves)", "twap")):
        server, url = start_exchange(snapshot)
        try:
            results[name] = run(url, candles, execution, options.bars)
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"{len(UNIVERSE)} assets, {options.bars} bars each, exchange in its own process on loopback:")
    for name, (seconds, requests) in results.items():
        ms = np.array(seconds) * 1e3
        print(
            f"  {name:15s} placement -> fills recorded: median {statistics.median(ms):6.1f} ms, "
            f"p95 {np.percentile(ms, 95):6.1f} ms, max {ms.max():6.1f} ms; requests per bar: "
            f"median {statistics.median(requests):.0f}"
        )


if __name__ == "__main__":
    main()
