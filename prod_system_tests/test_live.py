"""Live sessions end to end: the local exchange replaying real candles, ingestion into the database,
paper_trading and prod sessions on 1-minute bars, on a clock 60 times faster than real time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from prod_system.core.clock import ScaledClock
from prod_system.core.config import build_config
from prod_system.core.exchange_client import binanceusdm_client
from prod_system.core.ingestion import Ingestor
from prod_system.core.live import LiveSession
from prod_system.core.log_dir import LogDir
from prod_system.core.market_db import MarketDatabase
from prod_system.exchange import LocalExchange
from prod_system_tests.conftest import UNIVERSE

SPEED = 60.0  # one market minute per real second
T = pd.Timestamp("2023-07-21T06:00:00Z")  # the exchange opens here; the database holds what came before
KEY_ENV, SECRET_ENV = "LIVE_TEST_API_KEY", "LIVE_TEST_API_SECRET"


class Market:
    """A running market: the exchange, the database with history, the ingestion, the shared clock."""

    def __init__(self, candles: pd.DataFrame, database_url: str):
        self.exchange = LocalExchange(candles[candles["bar_start"] >= T], clock="original", speed=SPEED)
        client = binanceusdm_client(self.exchange.url)
        self.clock = ScaledClock(pd.Timestamp(client.fetch_time(), unit="ms", tz="UTC"), SPEED)
        self.database_url = database_url
        db = MarketDatabase(database_url)
        history = candles[(candles["bar_start"] >= T - pd.Timedelta(hours=2)) & (candles["bar_start"] < T)]
        db.upsert(history[["asset", "bar_start", "open", "high", "low", "close", "volume"]], T)
        self.ingestor = Ingestor(db, UNIVERSE, self.clock, self.exchange.url)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.ingestor.run, args=(self.stop, pd.Timedelta(seconds=1)), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.ingestor.close()
        self.exchange.stop()


@pytest.fixture
def market(candles, tmp_path, monkeypatch) -> Iterator[Market]:
    running = Market(candles, f"sqlite:///{tmp_path / 'market.db'}")
    monkeypatch.setenv(KEY_ENV, running.exchange.api_key)
    monkeypatch.setenv(SECRET_ENV, running.exchange.api_secret)
    yield running
    running.close()


def live_config(market: Market, root: Path, mode: str, bars: int = 5, **overrides):
    start = market.clock.now().floor("1min")
    data = {
        "model": "C1b",
        "run_mode": mode,
        "bar": "1m",
        "start": start.isoformat(),
        "end": (start + pd.Timedelta(minutes=bars)).isoformat(),
        "market_data": {"source": market.database_url},
        "log_root": str(root),
        "live": {"data_timeout_seconds": 20, "poll_seconds": 0.01},
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


def test_paper_and_prod_sessions_trade_the_same_targets(market, tmp_path):
    """Both live modes on the same data at the same time: identical target positions; prod's orders
    reach the exchange, whose positions match the prod portfolio."""
    sessions = {
        mode: LiveSession(live_config(market, tmp_path, mode), market.clock) for mode in ("paper_trading", "prod")
    }
    outcomes = {}
    threads = [
        threading.Thread(target=lambda m=mode, s=session: outcomes.__setitem__(m, s.run()))
        for mode, session in sessions.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for mode, session in sessions.items():
        assert [o.status for o in outcomes[mode]] == ["traded"] * 5, [(o.status, o.reason) for o in outcomes[mode]]
        logs = LogDir(session.log_dir.path)
        assert len(logs.read_table("portfolio/statistics")) == 5
        assert (session.log_dir.path / "log.txt").read_text().count("bar ") >= 5
    paper = LogDir(sessions["paper_trading"].log_dir.path).read_table("target_positions")
    prod = LogDir(sessions["prod"].log_dir.path).read_table("target_positions")
    assert paper["target_shares"].notna().mean() > 0.9
    pd.testing.assert_frame_equal(paper, prod)
    # prod: every order's fills were counted; the exchange holds what the portfolio (plus the last
    # bar's fills, counted right after sending) holds
    logs = LogDir(sessions["prod"].log_dir.path)
    latency = logs.read_table("latency")
    assert latency["fills_recorded_at"].notna().all()
    assert ((latency["orders_submitted_at"] - latency["data_complete_at"]).dt.total_seconds() < 5 * SPEED).all()
    executions = logs.read_table("broker/executions")
    assert executions["client_order_id"].is_unique and set(executions["status"]) == {"closed"}


def test_late_data_skips_the_bar_and_the_next_goes_on(market, tmp_path):
    """The exchange's klines fail for a while: the bar whose candles never arrive in time is skipped,
    with the reason; the next bar trades from the true holdings."""
    config = live_config(
        market, tmp_path, "paper_trading", bars=4, live={"data_timeout_seconds": 10, "poll_seconds": 0.01}
    )
    first_bar = config.start + pd.Timedelta(minutes=1)
    outage = [{"endpoint": "GET /fapi/v1/klines", "kind": "server_error"}]
    session = LiveSession(config, market.clock)

    def on_bar(outcome):
        if outcome.bar_end == first_bar:
            market.exchange.set_faults(outage)  # the next bar's candles will not arrive
        elif outcome.status == "skipped":
            market.exchange.set_faults([])

    session.on_bar = on_bar
    outcomes = session.run()
    statuses = [o.status for o in outcomes]
    assert statuses[0] == "traded" and "skipped" in statuses and statuses[-1] == "traded", statuses
    skipped = LogDir(session.log_dir.path).read_table("skipped_bars")
    assert skipped["reason"].str.contains("no candle by").all()
