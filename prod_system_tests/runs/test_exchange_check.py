"""A prod session's checks against the exchange while it trades (runs/exchange_check.py): a mismatch
planted mid-session by a second client on the same account is found at the next check, alerts to a
real HTTP endpoint, and is refused or adopted; the session's own orders in flight never are one; the
margin ratio read from the account alerts once. Real parts: the local exchange over HTTP, ccxt, the
market database and its ingestion, apprise posting JSON on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pandas as pd
import pytest

from prod_system.config import SystemConfig, build_config
from prod_system.errors import BrokerError
from prod_system.exchange import LocalExchange
from prod_system.log_dir import LogDir
from prod_system.runs.live import LiveSession
from prod_system.trading.brokers.ccxt_client import binanceusdm_client, symbol_of
from prod_system.trading.portfolio import PortfolioState
from prod_system_tests.kit.accounting import assert_accounting
from prod_system_tests.kit.alerts import URLS_ENV, AlertEndpoint
from prod_system_tests.kit.data import UNIVERSE
from prod_system_tests.kit.exchange import KEY_ENV as BROKER_KEY_ENV
from prod_system_tests.kit.exchange import SECRET_ENV as BROKER_SECRET_ENV
from prod_system_tests.kit.exchange import make_broker, order
from prod_system_tests.kit.live import Market, live_config

MINUTE = pd.Timedelta(minutes=1)


@pytest.fixture
def alerts(monkeypatch) -> Iterator[AlertEndpoint]:
    with AlertEndpoint() as endpoint:
        monkeypatch.setenv(URLS_ENV, endpoint.url())
        yield endpoint


def with_settings(config: SystemConfig, **sections: dict) -> SystemConfig:
    """``config`` with some settings of its sections changed (validated again)."""
    data = config.model_dump()
    for section, settings in sections.items():
        data[section] = {**data[section], **settings}
    return build_config(data)


def second_client(market: Market):
    """Another program on the session's account (an operator's terminal, a stray bot)."""
    client = binanceusdm_client(market.exchange.url, market.exchange.api_key, market.exchange.api_secret)
    client.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
    return client


def titled(endpoint: AlertEndpoint, kind: str) -> list[dict]:
    return [m for m in endpoint.messages if m["title"].startswith(f"prod_system {kind}:")]


def exchange_holds(market: Market, session: LiveSession) -> None:
    """The exchange's positions are the portfolio's plus the fills counted and not applied yet."""
    state = json.loads((session.log_dir.path / "state.json").read_text())
    held = pd.Series(state["shares"]).reindex(UNIVERSE, fill_value=0.0)
    for fill in state["unapplied_fills"]:
        held[fill["asset"]] += fill["shares"]
    account = next(iter(market.exchange.engine._accounts.values()))
    positions = {symbol.removesuffix("USDT"): float(p.amount) for symbol, p in account.positions.items()}
    assert held.round(9).to_dict() == pd.Series(positions).reindex(UNIVERSE, fill_value=0.0).round(9).to_dict()


def test_a_stray_order_is_refused_until_it_is_cancelled(market, alerts, tmp_path):
    """refuse: an order placed on the account by another client after bar 1 is found by bar 2's check,
    alerts once, and bar 3 is recorded skipped with the reason (its check still disagrees); the order
    cancelled, bar 4's check agrees and the session trades again."""
    config = with_settings(live_config(market, tmp_path, "prod", bars=5), broker={"check_every_bars": 1})
    session = LiveSession(config, market.clock)
    bars = session.bars
    client = second_client(market)
    placed: dict = {}

    def on_bar(outcome):
        if outcome.bar_end == bars[0]:  # a resting limit order far under the market, not the session's
            params = {"clientOrderId": "manual-stray-1"}
            placed.update(client.create_order(symbol_of("BTC"), "limit", "buy", 0.02, 10_000.0, params))
        elif outcome.bar_end == bars[2]:
            client.cancel_order(placed["id"], symbol_of("BTC"))

    session.on_bar = on_bar
    outcomes = session.run()
    assert [o.status for o in outcomes] == ["traded", "traded", "skipped", "traded", "traded"], outcomes
    assert "manual-stray-1" in outcomes[2].reason and "not trading" in outcomes[2].reason
    skipped = LogDir(session.log_dir.path).read_table("skipped_bars")
    assert list(skipped["bar_end"]) == [bars[2]]
    mismatch = titled(alerts, "exchange mismatch")
    assert len(alerts.wait_for(1)) and len(mismatch) == 1, alerts.titles()  # bar 3's check: rate-limited
    assert "1 open orders not placed by this session (manual-stray-1)" in mismatch[0]["message"]
    assert "broker.on_mismatch: refuse" in mismatch[0]["message"]
    assert "trading resumes" in (session.log_dir.path / "log.txt").read_text()
    exchange_holds(market, session)
    assert_accounting(LogDir(session.log_dir.path))


def test_a_position_changed_by_another_client_is_adopted_at_the_next_check(market, alerts, tmp_path):
    """adopt, a check every 2 bars: 1 BNB bought and an order left open by another client after bar 2
    are found by bar 4's check (not bar 3: none is due), the order is cancelled, and the BNB is booked
    as a fill at the exchange's price applied with bar 5: the cash pays for it, the accounting identity
    holds, the portfolio ends where the exchange is."""
    config = live_config(market, tmp_path, "prod", bars=5)
    config = with_settings(config, broker={"check_every_bars": 2, "on_mismatch": "adopt"})
    session = LiveSession(config, market.clock)
    bars = session.bars
    client = second_client(market)

    def on_bar(outcome):
        if outcome.bar_end == bars[1]:
            client.create_order(symbol_of("BNB"), "market", "buy", 1.0, None, {"clientOrderId": "manual-bnb-1"})
            params = {"clientOrderId": "manual-stray-2"}
            client.create_order(symbol_of("BTC"), "limit", "buy", 0.02, 10_000.0, params)

    session.on_bar = on_bar
    outcomes = session.run()
    assert [o.status for o in outcomes] == ["traded"] * 5, outcomes
    logs = LogDir(session.log_dir.path)
    fills = logs.read_table("fills")
    adopted = fills[fills["client_order_id"].str.startswith("ps-adopt-")]
    assert list(adopted["asset"]) == ["BNB"] and adopted["shares"].iloc[0] == pytest.approx(1.0)
    assert adopted["bar_end"].iloc[0] == bars[4] and adopted["order_bar_end"].iloc[0] == bars[3]
    # booked at the exchange's price (the BNB fill's): the cash pays what the position is worth
    close = logs.read_table("portfolio/holdings_notional")
    held = logs.read_table("portfolio/holdings_shares")
    mark = (
        close[close["asset"] == "BNB"].set_index("bar_end")["notional"]
        / held[held["asset"] == "BNB"].set_index("bar_end")["shares"]
    )[bars[4]]
    assert adopted["notional"].iloc[0] == pytest.approx(adopted["shares"].iloc[0] * mark, rel=0.02)
    assert adopted["fee"].iloc[0] == 0.0
    assert not client.fetch_open_orders()  # the stray order was cancelled
    mismatch = titled(alerts, "exchange mismatch")
    assert len(alerts.wait_for(1)) and len(mismatch) == 1, alerts.titles()
    assert "BNB: exchange" in mismatch[0]["message"] and "manual-stray-2" in mismatch[0]["message"]
    exchange_holds(market, session)
    assert_accounting(logs)


def test_twap_checked_every_bar_runs_clean_and_the_margin_ratio_alerts_once(market, alerts, tmp_path):
    """TWAP waves across each bar, a check after every bar (the fills counted after sending and not
    applied yet are expected on the exchange): no mismatch, every bar traded. The margin ratio read at
    every statement pull is recorded as the exchange computes it, and over the threshold it alerts once
    (the rate limit), not every bar."""
    config = live_config(market, tmp_path, "prod", bars=3)
    broker = {"check_every_bars": 1, "execution": "twap", "twap_waves": 3}
    config = with_settings(config, broker=broker, risk={"margin_ratio_alert": 1e-6})
    session = LiveSession(config, market.clock)
    before = market.exchange.request_counts().get("GET /fapi/v1/openOrders", 0)
    outcomes = session.run()
    assert [o.status for o in outcomes] == ["traded"] * 3, outcomes
    assert titled(alerts, "exchange mismatch") == []
    assert market.exchange.request_counts()["GET /fapi/v1/openOrders"] - before == 1 + 3  # start + each bar
    logs = LogDir(session.log_dir.path)
    executions = logs.read_table("broker/executions")
    assert executions["wave"].nunique() == 3 and set(executions["status"]) == {"closed"}
    account = logs.read_table("broker/account")
    ratio = account["maint_margin"] / account["margin_balance"]
    pd.testing.assert_series_equal(account["margin_ratio"], ratio, check_names=False)
    assert account["margin_ratio"].iloc[0] == 0.0 and (account["margin_ratio"].iloc[1:] > 0).all()
    margin = titled(alerts, "margin")
    assert len(margin) == 1 and "margin ratio" in margin[0]["message"], alerts.titles()
    exchange_holds(market, session)


def test_the_check_expects_the_fills_of_orders_not_collected_yet(snapshot, monkeypatch):
    """Between bars, orders placed and filled whose fills are not collected yet (a bar skipped, the trade
    list late) are expected on the exchange: no mismatch against the portfolio without them; once
    collected, a portfolio that forgot them disagrees, per asset; at start, the same comparison tells
    the session (which alerts) before refusing."""
    with LocalExchange(f"parquet:{snapshot}") as exchange:
        monkeypatch.setenv(BROKER_KEY_ENV, exchange.api_key)
        monkeypatch.setenv(BROKER_SECRET_ENV, exchange.api_secret)
        broker = make_broker(exchange)
        empty = PortfolioState.empty(UNIVERSE, 1_000_000.0)
        broker.reconcile(empty)
        broker.submit([order("BTC", 0.5, 29_900.0), order("ETH", -3.0, 1_890.0)])
        assert broker.check(empty.shares).agrees
        fills = broker.collect_fills(pd.Timestamp("2023-07-21T00:10Z"))
        check = broker.check(empty.shares)
        assert check.differ == ["BTC", "ETH"] and not check.stray_orders
        assert "BTC: exchange 0.5, portfolio 0" in check.text()
        counted = empty.shares.copy()
        for fill in fills:
            counted[fill["asset"]] += fill["shares"]
        assert broker.check(counted).agrees
        broker.close()
        # the same comparison at start: the session is told (it alerts) before the broker refuses
        told = []
        with pytest.raises(BrokerError, match=r"BTC: exchange 0.5, portfolio 0; ETH: exchange -3, portfolio 0"):
            make_broker(exchange).reconcile(empty, told.append)
        assert [check.differ for check in told] == [["BTC", "ETH"]]
        # adopted at start, even over a holding the state cannot tell (NaN): the exchange's positions
        # as fills (taken whole, at their entry price), the state left alone
        unknown = PortfolioState.empty(UNIVERSE, 1_000_000.0)
        unknown.shares["ETH"] = float("nan")
        adopted = make_broker(exchange, on_mismatch="adopt").reconcile(unknown)
        assert [(f["asset"], f["shares"]) for f in adopted] == [("BTC", 0.5), ("ETH", -3.0)]
        assert [f["price"] for f in adopted] == pytest.approx([f["price"] for f in fills], rel=1e-3)
        assert unknown.cash == 1_000_000.0 and pd.isna(unknown.shares["ETH"])


def test_a_restart_adopting_a_position_books_the_fills_it_had_not_applied(market, alerts, tmp_path):
    """adopt at start: a session stopped after two bars (its last bar's fills counted, not applied:
    state.json's unapplied_fills), 1 BNB bought by another client, then a new session (a restart, as a
    Dagster bar run): the start-up check adopts the BNB as a fill at its entry price, and both it and the
    unapplied fills are booked with the next bar (the fills table, the cash): the identity holds."""
    config = live_config(market, tmp_path, "prod", bars=4)
    config = with_settings(config, broker={"on_mismatch": "adopt"})
    first = LiveSession(config, market.clock)
    bars = first.bars
    assert [o.status for o in first.run(until=bars[1])] == ["traded"] * 2
    unapplied = json.loads((first.log_dir.path / "state.json").read_text())["unapplied_fills"]
    assert unapplied, "the test needs fills counted after the last bar's orders were sent"
    second_client(market).create_order(symbol_of("BNB"), "market", "buy", 1.0, None, {"clientOrderId": "manual-bnb-3"})
    restarted = LiveSession(config, market.clock)
    assert [o.status for o in restarted.run()] == ["traded"] * 2
    logs = LogDir(restarted.log_dir.path)
    fills = logs.read_table("fills")
    adopted = fills[fills["client_order_id"].str.startswith("ps-adopt-")]
    assert list(adopted["asset"]) == ["BNB"] and adopted["shares"].iloc[0] == pytest.approx(1.0)
    assert adopted["bar_end"].iloc[0] == bars[2] and adopted["price"].iloc[0] > 0
    booked = set(fills.loc[fills["bar_end"] == bars[2], "client_order_id"])
    assert {f["client_order_id"] for f in unapplied} <= booked
    assert len(titled(alerts, "exchange mismatch")) == 1, alerts.titles()
    exchange_holds(market, restarted)
    assert_accounting(logs)
