"""The in-session check's cost: ``ExchangeBroker.check`` (the exchange's positions and open orders
against the portfolio) with 8 positions held, the real broker and ccxt client against the local
exchange on loopback (in this process, on the bundled candles). A prod session runs it every
``broker.check_every_bars`` bars, after the bar is recorded.

    python benchmarks/exchange_check.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from prod_system.common.clock import SimulatedClock
from prod_system.config import BrokerConfig, RiskConfig
from prod_system.data.market_data import select_window, write_snapshot
from prod_system.data.sources import load_source
from prod_system.exchange import LocalExchange
from prod_system.trading.brokers.exchange import ExchangeBroker
from prod_system.trading.portfolio import PortfolioState

BUNDLED = Path(__file__).resolve().parents[1] / "prod_system" / "data" / "binance_futures_1m"
UNIVERSE = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "DOT", "MATIC"]
START = pd.Timestamp("2023-07-21T00:05:10Z")
BAR = pd.Timedelta(minutes=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    raw = load_source(f"csv:{BUNDLED}", UNIVERSE, pd.Timedelta(seconds=10))
    candles = select_window(raw, pd.Timestamp("2023-07-20", tz="UTC"), pd.Timestamp("2023-07-23", tz="UTC"))
    with tempfile.TemporaryDirectory() as folder:
        snapshot = write_snapshot(candles, Path(folder) / "snapshot.parquet")
        with LocalExchange(f"parquet:{snapshot}") as exchange:
            exchange.set_time(START)
            config = BrokerConfig(kind="ccxt", exchange_url=exchange.url)
            broker = ExchangeBroker(
                config, RiskConfig(), UNIVERSE, SimulatedClock(START), BAR, (exchange.api_key, exchange.api_secret)
            )
            state = PortfolioState.empty(UNIVERSE, 1_000_000.0)
            broker.reconcile(state)
            closes = candles[candles["bar_end"] <= START].groupby("asset")["close"].last()
            orders = [
                {
                    "bar_end": START.floor(BAR),
                    "asset": asset,
                    "client_order_id": f"ps-bench-{asset}",
                    "side": "buy" if i % 2 == 0 else "sell",
                    "quantity": (1 if i % 2 == 0 else -1)
                    * round(10_000 / closes[asset], 0 if closes[asset] < 50 else 3),
                    "decision_price": float(closes[asset]),
                }
                for i, asset in enumerate(UNIVERSE)
            ]
            broker.submit(orders)
            held = state.shares.copy()
            for fill in broker.collect_fills(START.floor(BAR) + BAR):
                held[fill["asset"]] += fill["shares"]
            times, requests = [], broker.requests
            for _ in range(args.repeats):
                began = time.perf_counter()
                check = broker.check(held)
                times.append((time.perf_counter() - began) * 1e3)
                assert check.agrees, check.text()
            per_check = (broker.requests - requests) / args.repeats
            broker.close()
    times.sort()
    print(
        f"check, {sum(held != 0)} positions held, {args.repeats} repeats: median {statistics.median(times):.1f} ms, "
        f"p95 {times[int(0.95 * (len(times) - 1))]:.1f} ms, max {times[-1]:.1f} ms, {per_check:g} requests per check"
    )


if __name__ == "__main__":
    main()
