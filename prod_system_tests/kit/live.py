"""Live sessions as the tests run them: a running market (the local exchange replaying real candles,
the market database and its ingestion, on a clock faster than real time), a live session's config on
it, the `prod-system run` command of a prod session, the check that the exchange holds what a session
recorded; and a one-bar paper session on a crafted database, its clock advancing as it is read."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pandas as pd

from prod_system.common.clock import ScaledClock
from prod_system.config import build_config
from prod_system.data.market_db import MarketDatabase
from prod_system.exchange import EngineConfig, LocalExchange
from prod_system.log_dir import LogDir
from prod_system.runs.ingestion import Ingestor
from prod_system.runs.live import LiveSession
from prod_system.trading.brokers.ccxt_client import binanceusdm_client
from prod_system_tests.kit.data import UNIVERSE
from prod_system_tests.kit.exchange import placed_ids

SPEED = 60.0  # one market minute per real second
# Real seconds a bar may wait for its candles: on a loaded 2-core machine an ingestion pass (eight
# HTTP requests, a database write) can take a second or two of real time, which at 60x is minutes of
# market time. Every real-clock session here waits this long, in real time, whatever its speed.
SLACK_SECONDS = 3.0


def data_timeout(speed: float = SPEED) -> float:
    """live.data_timeout_seconds (market time) that leaves SLACK_SECONDS of real time at ``speed``."""
    return SLACK_SECONDS * speed


T = pd.Timestamp("2023-07-21T06:00:00Z")  # the exchange opens here; the database holds what came before
KEY_ENV, SECRET_ENV = "LIVE_TEST_API_KEY", "LIVE_TEST_API_SECRET"


class Market:
    """A running market: the exchange, the database with history, the ingestion, the shared clock.

    ``opens``: when the exchange opens (T: the database holds the two hours before); ``engine``: its
    fees and funding (default: Binance's standard fee, the assumed funding rate).
    ``warm_start``: the exchange serves the day before T as closed history and the database starts
    empty, with no ingestion until ``warm_up(span)`` backfills ``span`` from the exchange (as `prod-system
    run` does before its first bar) and starts it."""

    def __init__(
        self,
        candles: pd.DataFrame,
        database_url: str,
        speed: float = SPEED,
        history: bool = True,
        warm_start: bool = False,
        opens: pd.Timestamp = T,
        engine: EngineConfig | None = None,
    ):
        self.speed = speed
        day = pd.Timedelta(days=1)
        if warm_start:
            served = candles[candles["bar_start"] >= opens - day]
            self.exchange = LocalExchange(served, clock="original", speed=speed, history=day, config=engine)
        else:
            served = candles[candles["bar_start"] >= opens]
            self.exchange = LocalExchange(served, clock="original", speed=speed, config=engine)
        client = binanceusdm_client(self.exchange.url)
        self.clock = ScaledClock(pd.Timestamp(client.fetch_time(), unit="ms", tz="UTC"), speed)
        self.database_url = database_url
        db = MarketDatabase(database_url)
        if history and not warm_start:  # else the database starts empty: the model has no warm-up
            self.exchange.seed_history(db, candles)
        self.ingestor = Ingestor(db, UNIVERSE, self.clock, self.exchange.url)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.ingestor.run, args=(self.stop, pd.Timedelta(seconds=1)), daemon=True)
        if not warm_start:
            self.thread.start()

    def warm_up(self, span: pd.Timedelta):
        """Backfill ``span`` before now from the exchange, then ingest every minute; the backfill's report."""
        report = self.ingestor.ingest_once(backfill=span)
        self.thread = threading.Thread(
            target=self.ingestor.run, args=(self.stop, pd.Timedelta(seconds=1), False), daemon=True
        )
        self.thread.start()
        return report

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():  # a warm start not warmed up never started it
            self.thread.join(timeout=10)
        self.ingestor.close()
        self.exchange.stop()


def live_config(market: Market, root: Path, mode: str, bars: int = 5, **overrides):
    """A C1b session of ``bars`` 1-minute bars from now on ``market``'s database, in ``mode``; in prod,
    its broker on the market's exchange with the keys in KEY_ENV/SECRET_ENV."""
    start = market.clock.now().floor("1min")
    data = {
        "model": "C1b",
        "run_mode": mode,
        "bar": "1m",
        "start": start.isoformat(),
        "end": (start + pd.Timedelta(minutes=bars)).isoformat(),
        "market_data": {"source": market.database_url},
        "log_root": str(root),
        "live": {"data_timeout_seconds": data_timeout(market.speed), "poll_seconds": 0.01},
        "profile_memory": False,
    }
    if mode == "prod":
        data["broker"] = {
            "kind": "ccxt",
            "exchange_url": market.exchange.url,
            "api_key_env": KEY_ENV,
            "api_secret_env": SECRET_ENV,
        }
    return build_config({**data, **overrides})


def prod_run(market: Market, root: Path, duration: str, *options: str) -> tuple[list[str], dict]:
    """`prod-system run` in prod on 1-minute bars against ``market`` at its speed (its database, no
    ingestion), and the environment holding the exchange's keys."""
    env = {**os.environ, "BINANCE_API_KEY": market.exchange.api_key, "BINANCE_API_SECRET": market.exchange.api_secret}
    command = [sys.executable, "-m", "prod_system.cli", "run", *options, "--model", "C1b", "--mode", "prod"]
    command += ["--duration", duration, "--bar", "1m", "--root", str(root), "--database", market.database_url]
    command += ["--exchange-url", market.exchange.url, "--speed", str(market.speed), "--no-ingest"]
    return command, env


def assert_exchange_holds_the_session(exchange: LocalExchange, log_dir: Path) -> tuple[list[str], set[str]]:
    """Every order on the exchange was decided and recorded by the session, and placed once; no fill
    lost: the portfolio (plus the fills counted but not yet applied) is what the exchange holds.
    Returns the orders on the exchange and the orders recorded."""
    on_exchange = placed_ids(exchange)
    recorded = set(LogDir(log_dir).read_table("orders")["client_order_id"])
    assert len(on_exchange) == len(set(on_exchange)) and set(on_exchange) <= recorded
    state = json.loads((log_dir / "state.json").read_text())
    held = pd.Series(state["shares"]).reindex(UNIVERSE, fill_value=0.0)
    for fill in state["unapplied_fills"]:
        held[fill["asset"]] += fill["shares"]
    account = next(iter(exchange.engine._accounts.values()))
    positions = {symbol.removesuffix("USDT"): float(p.amount) for symbol, p in account.positions.items()}
    assert held.round(9).to_dict() == pd.Series(positions).reindex(UNIVERSE, fill_value=0.0).round(9).to_dict()
    return on_exchange, recorded


# -- a one-bar paper session on a crafted database ----------------------------------------------------------

MINUTE = pd.Timedelta(minutes=1)
BAR_END = pd.Timestamp("2023-07-21T12:00:00Z")
TIMEOUT = 30  # live.data_timeout_seconds


class ReadAdvancingClock:
    """A test clock that moves ``step`` forward each time it is read (and jumps to what it is told to
    wait for): a session's wait for its candles reaches the bar's deadline after a few reads, without
    the test sleeping through real seconds."""

    def __init__(self, start: pd.Timestamp, step: pd.Timedelta):
        self._now, self.step = pd.Timestamp(start), step

    def now(self) -> pd.Timestamp:
        now = self._now
        self._now += self.step
        return now

    def wait_until(self, ts: pd.Timestamp) -> None:
        self._now = max(self._now, pd.Timestamp(ts))


def candles_of(candles: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The 1-minute candles with bar_end in (start, end], in the database's input columns."""
    rows = candles[(candles["bar_end"] > start) & (candles["bar_end"] <= end)]
    return rows[["asset", "bar_start", "open", "high", "low", "close", "volume"]].reset_index(drop=True)


def one_bar_session(root: Path, database_url: str) -> LiveSession:
    """A paper session of the one bar ending at BAR_END on ``database_url`` (trading the assets whose
    candles came by the deadline, TIMEOUT seconds after it), started 5 s before the bar's close on a
    ReadAdvancingClock that moves 1 s on each read."""
    config = build_config(
        {
            "model": "C1b",
            "run_mode": "paper_trading",
            "bar": "1m",
            "universe": UNIVERSE,
            "start": (BAR_END - MINUTE).isoformat(),
            "end": BAR_END.isoformat(),
            "market_data": {"source": database_url},
            "log_root": str(root),
            "live": {"data_timeout_seconds": TIMEOUT, "poll_seconds": 0.001, "on_missing": "trade_available"},
            "profile_memory": False,
        }
    )
    return LiveSession(config, ReadAdvancingClock(BAR_END - pd.Timedelta(seconds=5), pd.Timedelta(seconds=1)))
