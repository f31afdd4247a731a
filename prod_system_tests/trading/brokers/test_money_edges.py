"""Edges that would lose money quietly (issue 13, item 4): a candle revised after a live bar's
deadline, the exchange's trade list past one page, two processes driving one session."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal

import ccxt
import pandas as pd
import pytest

from prod_system.common.clock import SimulatedClock
from prod_system.config import load_config
from prod_system.data.market_db import MarketDatabase
from prod_system.exchange import LocalExchange
from prod_system.log_dir import LogDir
from prod_system.trading.brokers.ccxt_client import binanceusdm_client, symbol_of
from prod_system.trading.portfolio import PortfolioState
from prod_system_tests.kit.data import UNIVERSE
from prod_system_tests.kit.exchange import BAR, DELAY, KEY_ENV, SECRET_ENV, START, make_broker, order, placed_ids
from prod_system_tests.kit.live import (
    BAR_END,
    MINUTE,
    TIMEOUT,
    Market,
    assert_exchange_holds_the_session,
    candles_of,
    one_bar_session,
    prod_run,
)

# -- (c) a candle revised after the bar's deadline ------------------------------------------------------

DEADLINE = BAR_END + pd.Timedelta(seconds=TIMEOUT)
LATE = "MATIC"  # no candle of the bar by its deadline: the session waits until then
REVISED = "BTC"  # its bar candle revised just after the deadline


def test_a_candle_revised_after_the_deadline_does_not_change_the_decision(candles, tmp_path):
    """A live bar decided after its deadline (it waited for MATIC's candle, which never came) decides on
    what was known at the deadline: BTC's bar candle, revised to a very different close just after the
    deadline (the clock has passed the revision when the bar is decided), changes neither the targets
    nor the decision prices: the same as the same session without the revision."""
    db_url = f"sqlite:///{tmp_path / 'market.db'}"
    db = MarketDatabase(db_url)
    history = candles_of(candles, BAR_END - pd.Timedelta(hours=2), BAR_END - MINUTE)
    db.upsert(history, BAR_END - MINUTE + pd.Timedelta(seconds=5))
    last = candles_of(candles, BAR_END - MINUTE, BAR_END)
    assert set(last["asset"]) == set(UNIVERSE)
    db.upsert(last[last["asset"] != LATE], BAR_END + pd.Timedelta(seconds=5))

    baseline = one_bar_session(tmp_path / "baseline", db_url)
    assert [o.status for o in baseline.run()] == ["traded"]

    revision = last[last["asset"] == REVISED].copy()
    original_close = float(revision["close"].iloc[0])
    revision["close"] = original_close * 1.5
    revision["high"] = revision[["high", "close"]].max(axis=1)
    assert db.upsert(revision, DEADLINE + pd.Timedelta(milliseconds=500)).revised == 1

    revised = one_bar_session(tmp_path / "revised", db_url)
    outcomes = revised.run()
    assert [o.status for o in outcomes] == ["traded"], [(o.status, o.reason) for o in outcomes]
    latency = outcomes[0].latency
    # the bar waited to its deadline, and was decided with the clock past the revision
    assert latency["data_complete_at"] >= DEADLINE and latency["predictions_at"] > DEADLINE + pd.Timedelta(seconds=1)
    assert latency["missing_assets"] == LATE
    # the revision is in the database, visible to a read as of the decision time, not as of the deadline
    window = (BAR_END - MINUTE, BAR_END)
    now_view = db.snapshot([REVISED], *window, now=latency["predictions_at"])
    deadline_view = db.snapshot([REVISED], *window, now=DEADLINE)
    assert now_view["close"].tolist() == [original_close * 1.5]
    assert deadline_view["close"].tolist() == [original_close]
    db.close()

    base_logs, logs = LogDir(baseline.log_dir.path), LogDir(revised.log_dir.path)
    targets = logs.read_table("target_positions")
    assert targets.set_index("asset").loc[REVISED, "target_shares"] != 0  # BTC is decided on, not skipped
    pd.testing.assert_frame_equal(targets, base_logs.read_table("target_positions"))
    for table in ("orders", "dag/node_outputs"):
        columns = ["bar_end", "asset", "decision_price", "quantity"] if table == "orders" else None
        got, expected = logs.read_table(table), base_logs.read_table(table)
        if columns:
            got, expected = got[columns], expected[columns]
        pd.testing.assert_frame_equal(got, expected)
    orders = logs.read_table("orders").set_index("asset")
    assert orders.loc[REVISED, "decision_price"] == original_close


# -- (b) the exchange's trade list past one page ---------------------------------------------------------

NOW = START + BAR + DELAY


@pytest.fixture
def exchange(snapshot, monkeypatch) -> Iterator[LocalExchange]:
    with LocalExchange(f"parquet:{snapshot}") as local:  # a manual clock
        local.set_time(NOW)
        monkeypatch.setenv(KEY_ENV, local.api_key)
        monkeypatch.setenv(SECRET_ENV, local.api_secret)
        yield local


def _foreign_trades(exchange: LocalExchange, symbol: str, count: int) -> None:
    """``count`` trades of ``symbol`` in the same account that are not the broker's (another desk, a
    hand-placed order): small market orders, buys and sells in turn (no net position), placed in the
    exchange's own engine at the manual clock's current millisecond."""
    for i in range(count):
        exchange.engine.place_order(
            exchange.api_key, symbol, "BUY" if i % 2 == 0 else "SELL", "MARKET", Decimal("0.001")
        )


def _trades(exchange: LocalExchange, symbol: str) -> list:
    return [t for t in next(iter(exchange.engine._accounts.values())).trades if t.symbol == symbol]


def test_fills_are_complete_past_a_thousand_trades_of_a_symbol(exchange, candles):
    """ccxt's fetch_my_trades returns at most 1,000 trades a call. The account holds 1,201 BTC trades
    since the broker's first order, all in one millisecond: the broker's first order is the first of
    them (page 1), its next orders come after 1,200 trades of another desk (page 2). collect_fills
    reports every fill of the broker's orders, in full, once; never another desk's trade."""
    broker = make_broker(exchange, clock=SimulatedClock(NOW), timeout_seconds=5)
    empty = PortfolioState.empty(UNIVERSE, 1_000_000.0)
    broker.reconcile(empty)
    btc = float(candles.query("asset == 'BTC' and bar_end <= @NOW").sort_values("bar_end")["close"].iloc[-1])
    first = START + BAR
    broker.submit([order("BTC", 0.5, btc, bar_end=first)])
    _foreign_trades(exchange, "BTCUSDT", 1200)
    second = [order("BTC", -0.2, btc, bar_end=first + BAR), order("ETH", 3.0, 1890.0, bar_end=first + BAR)]
    broker.submit(second)
    btc_trades = _trades(exchange, "BTCUSDT")
    assert len(btc_trades) == 1202 and len({t.time_ms for t in btc_trades}) == 1  # one millisecond
    ours = {o.order_id: o.client_order_id for o in next(iter(exchange.engine._accounts.values())).orders.values()}
    position_of_ours = [i for i, t in enumerate(btc_trades) if ours[t.order_id].startswith("ps-test0001-")]
    assert position_of_ours == [0, 1201]  # page 1 and page 2 of the trade list from the first order

    fills = {f["client_order_id"]: f for f in broker.collect_fills(first + BAR)}
    expected = {o["client_order_id"]: o for o in [order("BTC", 0.5, btc, bar_end=first), *second]}
    assert set(fills) == set(expected)
    by_client_id = {}
    for trade in [*btc_trades, *_trades(exchange, "ETHUSDT")]:
        by_client_id.setdefault(ours[trade.order_id], []).append(trade)
    for cid, fill in fills.items():
        trades = by_client_id[cid]
        assert fill["shares"] == pytest.approx(expected[cid]["quantity"], abs=1e-12)
        assert fill["fee"] == pytest.approx(float(sum(t.commission for t in trades)), abs=1e-9)
        assert fill["notional"] == pytest.approx(fill["shares"] * float(trades[0].price))
    assert broker.collect_fills(first + 2 * BAR) == []  # each trade counted once
    assert broker.open_orders() == []  # every order done: all it filled was counted
    broker.close()


def test_the_trade_list_honours_binances_rules(exchange):
    """GET /fapi/v1/userTrades as Binance documents it (Account Trade List): limit 500 by default, at
    most 1,000 (above it the fapi answers -1130 "Data sent for parameter 'limit' is not valid"); fromId
    gets the trades from that id on, else the most recent ones; fromId cannot be sent with startTime or
    endTime; startTime to endTime is at most 7 days; with neither, the last 7 days' trades."""
    _foreign_trades(exchange, "BTCUSDT", 1100)
    client = binanceusdm_client(exchange.url, exchange.api_key, exchange.api_secret)
    ids = [t.trade_id for t in _trades(exchange, "BTCUSDT")]
    week = 7 * 24 * 3_600_000
    now = NOW.value // 1_000_000

    def listed(**params) -> list[int]:
        return [int(t["id"]) for t in client.fapiPrivateGetUserTrades({"symbol": "BTCUSDT", **params})]

    assert listed() == ids[-500:]
    assert listed(limit=1000) == ids[-1000:]
    assert listed(fromId=ids[0], limit=1000) == ids[:1000]
    assert listed(fromId=ids[1000]) == ids[1000:]
    with pytest.raises(ccxt.BadRequest, match="-1130"):
        listed(limit=1001)
    # ccxt caps fetch_my_trades at the maximum: the broker never asks for more than a page of 1,000
    assert len(client.fetch_my_trades(symbol_of("BTC"), None, 5000)) == 1000
    for times in ({"startTime": now}, {"endTime": now}):
        with pytest.raises(ccxt.BadRequest, match="-1128"):
            listed(fromId=ids[0], **times)
    assert listed(startTime=now - week, endTime=now, limit=1000) == ids[:1000]  # 7 days: the most allowed
    with pytest.raises(ccxt.BadRequest, match="-1127"):
        listed(startTime=now - week - 1, endTime=now)
    # eight days later: the trades of a week ago are no longer listed without a time, still with one
    exchange.set_time(NOW + pd.Timedelta(days=8))
    _foreign_trades(exchange, "BTCUSDT", 1)
    assert listed() == [ids[-1] + 1]
    assert listed(startTime=now, endTime=now + week, limit=3) == ids[:3]
    # what the broker asks for, a trade list since its first order 8 days ago (ccxt bounds it to 7 days;
    # it sorts a page by time, then id as a string)
    since = sorted(int(t["id"]) for t in client.fetch_my_trades(symbol_of("BTC"), now, 1000))
    assert since == ids[:1000]


def test_fills_are_complete_when_the_broker_traded_more_than_7_days_ago(exchange, candles):
    """Binance serves a trade list from startTime over at most 7 days (ccxt bounds a since older than a
    week to it): a broker that reads the list from its first order ever finds nothing of an order it
    placed 8 days later, which then stays pending, its fill never counted. The list is read from the
    earliest order not fully counted."""
    broker = make_broker(exchange, clock=SimulatedClock(NOW), timeout_seconds=5)
    broker.reconcile(PortfolioState.empty(UNIVERSE, 1_000_000.0))
    btc = float(candles.query("asset == 'BTC' and bar_end <= @NOW").sort_values("bar_end")["close"].iloc[-1])
    broker.submit([order("BTC", 0.5, btc, bar_end=START + BAR)])
    assert [f["shares"] for f in broker.collect_fills(START + 2 * BAR)] == [0.5]
    later = NOW + pd.Timedelta(days=8)  # a long session (prod-system run --duration 30d)
    exchange.set_time(later)
    broker.clock.wait_until(later)
    bar_end = later.floor(BAR)
    broker.submit([order("BTC", -0.2, btc, bar_end=bar_end)])
    fills = broker.collect_fills(bar_end + BAR)
    assert [(f["client_order_id"], f["shares"]) for f in fills] == [(f"ps-test0001-{bar_end:%y%m%d%H%M}-BTC", -0.2)]
    assert broker.open_orders() == []
    broker.close()


# -- (a) two processes driving one session ----------------------------------------------------------------


@pytest.mark.wall_clock
def test_a_second_process_on_a_running_session_waits_for_it_and_trades_nothing_twice(candles, tmp_path):
    """`prod-system run` (prod, against the local exchange) started twice with the same command: the
    second starts while the first trades the session, finds it (resuming it), waits for the first to
    finish (the session lock), then has nothing left to trade. Every bar traded once, every order
    placed once, the exchange holds what the portfolio holds."""
    speed = 10.0  # a 1-minute bar is 6 s: the second process starts (seconds) well within the session
    market = Market(candles, f"sqlite:///{tmp_path / 'market.db'}", speed=speed)
    root = tmp_path / "runs"
    command, env = prod_run(market, root, "4m")
    processes: list[subprocess.Popen] = []
    try:
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.append(first)
        started = time.monotonic()
        while not list(root.glob("C1b/prod/manual/*/system_log_dir/system_config.yaml")):
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.monotonic() - started < 120, "the first process did not start its session"
            time.sleep(0.05)
        second = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.append(second)
        _, err1 = first.communicate(timeout=300)
        out2, err2 = second.communicate(timeout=300)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        market.close()
    assert first.returncode == 0, err1[-2000:]
    assert second.returncode == 0, err2[-2000:]
    (session,) = list(root.glob("C1b/prod/manual/*/system_log_dir"))
    end = load_config(session / "system_config.yaml").end
    assert "resuming the unfinished session" in err2 and f"log dir {session}" in err2
    assert "bars:        0 traded, 0 skipped" in out2, out2
    # the second process read the session's state only once the first had done its last bar
    log = (session / "log.txt").read_text()
    assert [line.split(": ")[-1] for line in log.splitlines() if "resumed after" in line] == [f"resumed after {end}"]
    logs = LogDir(session)
    traded = logs.read_table("portfolio/statistics")["bar_end"]
    assert traded.is_unique and traded.max() == end
    on_exchange, _ = assert_exchange_holds_the_session(market.exchange, session)  # each order placed once
    assert on_exchange and len(on_exchange) == len(set(on_exchange)) == len(placed_ids(market.exchange))
