"""The exchange broker, with the real ccxt client, over HTTP, against the local exchange."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prod_system.config import BINANCE_TAKER_FEE, RiskConfig, build_config
from prod_system.errors import BrokerError
from prod_system.exchange import LocalExchange
from prod_system.log_dir import LogDir
from prod_system.runs.simulate import simulate
from prod_system.trading.brokers.ccxt_client import binanceusdm_client, symbol_of
from prod_system.trading.brokers.kill_switch import KillSwitch
from prod_system.trading.portfolio import PortfolioState
from prod_system_tests.kit.accounting import assert_accounting
from prod_system_tests.kit.data import UNIVERSE
from prod_system_tests.kit.exchange import (
    BAR,
    DELAY,
    KEY_ENV,
    SECRET_ENV,
    START,
    DrivenClock,
    broker_config,
    make_broker,
    order,
    placed_ids,
    repeats,
)


@pytest.fixture
def exchange(snapshot, monkeypatch) -> Iterator[LocalExchange]:
    with LocalExchange(f"parquet:{snapshot}") as local:
        monkeypatch.setenv(KEY_ENV, local.api_key)
        monkeypatch.setenv(SECRET_ENV, local.api_secret)
        yield local


def empty_state() -> PortfolioState:
    return PortfolioState.empty(UNIVERSE, 1_000_000.0)


def exchange_positions(exchange: LocalExchange) -> pd.Series:
    client = binanceusdm_client(exchange.url, exchange.api_key, exchange.api_secret)
    held = pd.Series(0.0, index=UNIVERSE)
    for position in client.fetch_positions([symbol_of(a) for a in UNIVERSE]):
        held[position["symbol"].split("/")[0]] = float(position["info"]["positionAmt"])
    return held


def account(exchange: LocalExchange) -> dict:
    client = binanceusdm_client(exchange.url, exchange.api_key, exchange.api_secret)
    return client.fapiPrivateV3GetAccount()


def prices_at(candles: pd.DataFrame, now: pd.Timestamp) -> dict[str, float]:
    known = candles[candles["bar_end"] <= now].sort_values("bar_end").groupby("asset")["close"].last()
    return known.to_dict()


def test_market_orders_fill_at_the_exchange_price_with_fees(exchange, candles):
    broker = make_broker(exchange)
    broker.reconcile(empty_state())
    prices = prices_at(candles, START + BAR + DELAY)
    orders = [
        order("BTC", 0.5, prices["BTC"]),
        order("ETH", -3.0, prices["ETH"]),
        order("DOGE", 20_000, prices["DOGE"]),
    ]
    broker.submit(orders)
    fills = {f["asset"]: f for f in broker.collect_fills(START + 2 * BAR)}
    assert set(fills) == {"BTC", "ETH", "DOGE"}
    for o in orders:
        fill = fills[o["asset"]]
        assert fill["shares"] == pytest.approx(o["quantity"]) and fill["client_order_id"] == o["client_order_id"]
        assert fill["price"] == pytest.approx(prices[o["asset"]])  # the last closed 1-minute candle
        assert fill["fee"] == pytest.approx(
            abs(fill["notional"]) * BINANCE_TAKER_FEE
        )  # the exchange's default: the standard tier
    held = exchange_positions(exchange)
    assert held["BTC"] == 0.5 and held["ETH"] == -3.0 and held["DOGE"] == 20_000
    assert broker.collect_fills(START + 3 * BAR) == []  # each trade is counted once
    executions = broker.executions()
    assert set(executions["status"]) == {"closed"} and (executions["attempts"] == 1).all()
    broker.close()


def test_a_simulated_day_matches_the_exchange_to_the_cent(exchange, snapshot, tmp_path):
    """A whole day traded through the broker: the portfolio ends with the exchange's own positions,
    fees and account value."""
    config = build_config(
        {
            "model": "C1b",
            "start": START.isoformat(),
            "end": (START + pd.Timedelta(days=1)).isoformat(),
            "market_data": {"source": f"parquet:{snapshot}"},
            "log_root": str(tmp_path),
            "broker": broker_config(exchange).model_dump(),
        }
    )
    summary = simulate(config, clock_factory=lambda start: DrivenClock(start, exchange))
    logs = LogDir(summary.log_dir)
    stats = logs.read_table("portfolio/statistics")
    assert summary.bars == 288 and stats["n_fills"].sum() > 1000
    shares = logs.read_table("portfolio/holdings_shares").query("bar_end == @config.end").set_index("asset")["shares"]
    # the last bar's orders execute after the session: the next session finds them and counts them
    executions = logs.read_table("broker/executions")
    last = logs.read_table("orders").query("bar_end == @config.end")
    state = PortfolioState(
        shares=shares,
        notional=shares * 0.0,
        cash=float(stats["cash"].iloc[-1]),
        open_orders=last.to_dict("records"),
    )
    after = make_broker(exchange, clock=DrivenClock(config.end + BAR + DELAY, exchange))
    after.reconcile(state)  # refuses if the exchange disagrees
    pending = after.collect_fills(config.end + BAR)
    assert {f["client_order_id"] for f in pending} == set(last["client_order_id"])
    for fill in pending:
        shares[fill["asset"]] += fill["shares"]
    np.testing.assert_array_equal(shares.reindex(UNIVERSE).round(9), exchange_positions(exchange).round(9))
    fees = stats["fees"].sum() + sum(f["fee"] for f in pending)
    cash = stats["cash"].iloc[-1] - sum(f["notional"] + f["fee"] for f in pending)
    info = account(exchange)
    client = binanceusdm_client(exchange.url, exchange.api_key, exchange.api_secret)
    risk = {p["symbol"].split("/")[0]: p for p in client.fetch_positions([symbol_of(a) for a in UNIVERSE])}
    marks = {a: float(risk[a]["markPrice"]) for a in risk}
    value = cash + sum(shares[a] * marks.get(a, 0.0) for a in UNIVERSE)
    assert value == pytest.approx(float(info["totalMarginBalance"]), abs=0.01)
    commissions = sum(
        float(t["info"]["commission"]) for a in UNIVERSE for t in client.fetch_my_trades(symbol_of(a), limit=1000)
    )
    assert fees == pytest.approx(commissions, abs=0.01)
    # funding: the portfolio books what the exchange settled (the assumed rate on both sides: the snapshot
    # has no funding data) at 08:00, 16:00 and 00:00, to the cent; the identity holds with fees and funding
    settled = client.fetch_funding_history(None, since=int(START.timestamp() * 1000), limit=1000)
    assert len({row["timestamp"] for row in settled}) == 3
    assert stats["funding"].sum() == pytest.approx(sum(row["amount"] for row in settled), abs=0.01)
    assert_accounting(logs, initial_cash=config.portfolio.initial_cash)
    assert len(executions) == len(logs.read_table("orders")) and (executions["status"] == "closed").all()
    audit = (Path(summary.log_dir) / "exchange_audit.jsonl").read_text()
    assert exchange.api_key not in audit and exchange.api_secret not in audit
    after.close()


def test_twap_spreads_child_orders_over_the_bar(exchange, candles):
    broker = make_broker(exchange, execution="twap", twap_waves=3)
    broker.reconcile(empty_state())
    decided = broker.clock.now()
    broker.submit([order("ETH", 6.0, 1890.0)])
    fills = broker.collect_fills(START + 2 * BAR)
    assert [f["client_order_id"] for f in fills] == [f"ps-test0001-{START + BAR:%y%m%d%H%M}-ETH-{w}" for w in range(3)]
    assert [f["shares"] for f in fills] == [2.0, 2.0, 2.0]
    sent = broker.executions()["sent_at"].tolist()
    assert sent == [decided, decided + BAR / 3, decided + 2 * BAR / 3]
    for fill, at in zip(fills, sent, strict=True):
        assert fill["price"] == pytest.approx(prices_at(candles, at)["ETH"])
    assert exchange_positions(exchange)["ETH"] == 6.0


def test_a_timeout_after_the_order_was_accepted_is_looked_up_not_resent(exchange, reliability):
    broker = make_broker(exchange, timeout_seconds=1)
    broker.reconcile(empty_state())
    exchange.set_faults(
        [{"endpoint": "POST /fapi/v1/order", "kind": "timeout", "after": True, "delay_ms": 3000, "count": 1}]
    )
    broker.submit([order("BTC", 0.2, 29800.0)])
    counts = exchange.request_counts()
    assert counts.get("POST /fapi/v1/order") == 1  # sent once: the retry asked first
    assert counts.get("GET /fapi/v1/order", 0) >= 1
    (fill,) = broker.collect_fills(START + 2 * BAR)
    assert fill["shares"] == 0.2 and exchange_positions(exchange)["BTC"] == 0.2
    reliability(
        "exchange",
        "timeout after the order was accepted",
        injected=1,
        duplicated=counts["POST /fapi/v1/order"] - 1,
        lost=0.2 - fill["shares"],
        matches_exchange=True,
        outcome="looked up by client id, not resent",
    )


RESEND_SEEDS = int(os.environ.get("PROD_SYSTEM_RESEND_SEEDS", "10"))


def test_timeouts_after_processing_never_place_an_order_twice(exchange, candles, reliability):
    """Binance accepts a filled order's client id again, so a blind resend after a timeout trades twice.
    Across seeds, the exchange places each order and then times out half of the answers at random: the
    broker must look each up by client id before sending it again; every order is on the exchange once
    and the positions are exactly what was ordered."""
    clock = DrivenClock(START + BAR + DELAY, exchange)
    broker = make_broker(exchange, clock=clock, timeout_seconds=0.25, max_attempts=8)
    broker.reconcile(empty_state())
    sizes = {"BTC": 0.2, "ETH": 3.0, "SOL": 400.0, "XRP": 1000.0}
    expected = pd.Series(0.0, index=UNIVERSE)
    for seed in range(RESEND_SEEDS):
        bar_end = START + BAR * (seed + 1)
        clock.wait_until(bar_end + DELAY)
        rule = {"endpoint": "POST /fapi/v1/order", "kind": "timeout", "after": True, "delay_ms": 600}
        exchange.set_faults([{**rule, "probability": 0.5, "seed": seed}])
        sign = 1 if seed % 2 == 0 else -1  # buy, then sell back: the margin stays small
        prices = prices_at(candles, bar_end)
        broker.submit([order(a, sign * q, prices[a], bar_end=bar_end) for a, q in sizes.items()])
        for asset, quantity in sizes.items():
            expected[asset] += sign * quantity
    exchange.set_faults([])
    counts, placed = exchange.request_counts(), placed_ids(exchange)
    assert repeats(placed) == 0 and len(placed) == RESEND_SEEDS * len(sizes)
    assert counts["POST /fapi/v1/order"] == len(placed)  # each timed-out order was found, none sent again
    lookups = counts.get("GET /fapi/v1/order", 0)
    assert lookups >= RESEND_SEEDS  # about half of the answers timed out
    pd.testing.assert_series_equal(exchange_positions(exchange).round(9), expected.round(9), check_names=False)
    reliability(
        "exchange",
        f"timeout after processing, at random over {RESEND_SEEDS} seeds (Binance's client-id rule)",
        injected=lookups,
        orders=len(placed),
        duplicated=repeats(placed),
        lost=0,
        matches_exchange=True,
        outcome="each timed-out order looked up by client id and not sent again",
    )


@pytest.mark.parametrize(
    ("fault", "slept_at_least"),
    [
        ({"kind": "server_error", "status": 503, "count": 2}, 0.0),
        ({"kind": "rate_limit", "retry_after": 2, "count": 1}, 2.0),
        ({"kind": "timeout", "delay_ms": 3000, "count": 1}, 0.0),
    ],
)
def test_transient_errors_are_retried_once_placed(exchange, fault, slept_at_least, reliability):
    sleeps: list[float] = []
    broker = make_broker(exchange, sleeps=sleeps, timeout_seconds=1)
    broker.reconcile(empty_state())
    exchange.set_faults([{"endpoint": "POST /fapi/v1/order", **fault}])
    broker.submit([order("SOL", 400, 25.0)])
    assert exchange_positions(exchange)["SOL"] == 400
    assert sleeps and max(sleeps) >= slept_at_least
    (fill,) = broker.collect_fills(START + 2 * BAR)
    assert fill["shares"] == 400
    kind = {"server_error": "HTTP 503", "rate_limit": "429 with Retry-After", "timeout": "timeout"}[fault["kind"]]
    placed = placed_ids(exchange)
    reliability(
        "exchange",
        kind,
        injected=fault["count"],
        duplicated=repeats(placed),
        lost=400 - fill["shares"],
        matches_exchange=exchange_positions(exchange)["SOL"] == 400,
        outcome=f"retried after {max(sleeps):.1f} s, placed once",
    )


def test_a_permanent_rejection_fails_the_bar_after_placing_the_others(exchange, reliability):
    broker = make_broker(exchange)
    broker.reconcile(empty_state())
    exchange.set_faults([{"endpoint": "POST /fapi/v1/order", "kind": "reject", "code": -2019, "count": 1}])
    with pytest.raises(BrokerError, match=r"1 orders failed: .*Margin is insufficient"):
        broker.submit([order("BTC", 0.1, 29800.0), order("ETH", 1.0, 1890.0)])
    held = exchange_positions(exchange)
    assert sorted([held["BTC"], held["ETH"]]) == [0.0, 1.0] or sorted([held["BTC"], held["ETH"]]) == [0.0, 0.1]
    assert len(broker.collect_fills(START + 2 * BAR)) == 1
    placed = placed_ids(exchange)
    reliability(
        "exchange",
        "rejection (-2019 margin)",
        injected=1,
        duplicated=repeats(placed),
        lost=0,
        matches_exchange=True,
        outcome="the bar fails naming the order; the other order placed",
    )


def test_partial_fills_are_recorded_as_executed(exchange, reliability):
    broker = make_broker(exchange)
    broker.reconcile(empty_state())
    exchange.set_faults([{"endpoint": "POST /fapi/v1/order", "kind": "partial_fill", "fraction": 0.5, "count": 1}])
    broker.submit([order("XRP", 1000.0, 0.75)])
    (fill,) = broker.collect_fills(START + 2 * BAR)
    assert fill["shares"] == 500.0 and exchange_positions(exchange)["XRP"] == 500.0
    placed = placed_ids(exchange)
    reliability(
        "exchange",
        "partial fill (50%)",
        injected=1,
        duplicated=repeats(placed),
        lost=exchange_positions(exchange)["XRP"] - fill["shares"],
        matches_exchange=True,
        outcome="500 of 1000 recorded as executed",
    )


def test_a_restart_never_places_an_order_twice(exchange):
    """A process places orders and dies before counting the fills; the next finds and counts them once,
    and sending the same bar's orders again places nothing."""
    first = make_broker(exchange)
    first.reconcile(empty_state())
    orders = [order("BTC", 0.3, 29800.0), order("DOT", 100.0, 5.3)]
    first.submit(orders)
    placed = exchange.request_counts()["POST /fapi/v1/order"]
    second = make_broker(exchange)
    state = PortfolioState(**{**empty_state().__dict__, "open_orders": orders})
    second.reconcile(state)
    fills = second.collect_fills(START + 2 * BAR)
    assert sorted(f["asset"] for f in fills) == ["BTC", "DOT"]
    second.submit(orders)  # the restarted loop sends the same bar again: it knows them, sends nothing
    assert exchange.request_counts()["POST /fapi/v1/order"] == placed
    assert second.collect_fills(START + 2 * BAR) == []
    held = exchange_positions(exchange)
    assert held["BTC"] == 0.3 and held["DOT"] == 100.0


def test_the_exchange_restarting_loses_no_order_and_no_fill(snapshot, tmp_path, monkeypatch, reliability):
    """The server stops while the broker is placing a bar's orders (some placed, then connection
    refused) and comes back with its saved state on the same address: the bar fails clearly, the
    orders are placed once when sent again, and every fill is counted once."""
    state = tmp_path / "exchange_state.json"
    first = LocalExchange(f"parquet:{snapshot}", state_path=state)
    port = int(first.url.rsplit(":", 1)[1])
    monkeypatch.setenv(KEY_ENV, first.api_key)
    monkeypatch.setenv(SECRET_ENV, first.api_secret)
    broker = make_broker(first, max_attempts=2, concurrency=1)
    broker.reconcile(empty_state())
    orders = [order("BTC", 0.1, 29800.0), order("ETH", 1.0, 1890.0), order("SOL", 100, 25.0)]
    broker.submit(orders[:2])  # two orders on the exchange; then the server goes away
    first.stop()
    with pytest.raises(BrokerError, match="SOL"):
        broker.submit(orders)
    restarted = LocalExchange(f"parquet:{snapshot}", state_path=state, port=port)
    try:
        restarted.set_time(START + BAR + DELAY)
        broker.submit(orders)  # sent again after the restart: only SOL is new
        fills = broker.collect_fills(START + 2 * BAR)
        assert sorted((f["asset"], f["shares"]) for f in fills) == [("BTC", 0.1), ("ETH", 1.0), ("SOL", 100.0)]
        assert broker.collect_fills(START + 3 * BAR) == []  # counted once
        placed = placed_ids(restarted)
        assert sorted(placed) == sorted(o["client_order_id"] for o in orders)  # each once
        held = exchange_positions(restarted)
        assert (held["BTC"], held["ETH"], held["SOL"]) == (0.1, 1.0, 100.0)
        reliability(
            "exchange",
            "server restart mid-bar",
            injected=1,
            duplicated=repeats(placed),
            lost=0,
            matches_exchange=True,
            outcome="the bar fails naming the order; sent again after the restart, once",
        )
    finally:
        restarted.stop()


def test_start_refuses_or_adopts_a_disagreeing_exchange(exchange):
    outsider = make_broker(exchange)
    outsider.reconcile(empty_state())
    outsider.submit([order("BNB", 10.0, 240.0, cid="manual-bnb-1")])
    with pytest.raises(BrokerError, match=r"BNB: exchange 10, portfolio 0.*on_mismatch: adopt"):
        make_broker(exchange).reconcile(empty_state())
    # adopted: the state is left alone, the position comes back as a fill the session books
    adopted = make_broker(exchange, on_mismatch="adopt").reconcile(empty_state())
    assert [(f["asset"], f["shares"], f["fee"]) for f in adopted] == [("BNB", 10.0, 0.0)]
    assert adopted[0]["price"] > 0 and adopted[0]["notional"] == pytest.approx(10.0 * adopted[0]["price"])


def test_start_refuses_a_portfolio_with_an_unknown_holding(exchange):
    """A NaN holding (a corrupt or hand-edited state) agrees with nothing: the start refuses, fail closed,
    whatever the exchange holds of that asset."""
    state = empty_state()
    state.shares["ETH"] = np.nan
    with pytest.raises(BrokerError, match=r"ETH: exchange 0, portfolio nan"):
        make_broker(exchange).reconcile(state)


def test_exchange_rules_and_risk_limits_apply_before_sending(exchange):
    risk = RiskConfig(max_order_notional=3_000.0, max_notional_per_asset=5_000.0)
    broker = make_broker(exchange, risk=risk)
    broker.reconcile(empty_state())
    broker.submit(
        [
            order("BTC", 0.0004, 29800.0),  # under the 0.001 lot
            order("DOGE", 30.0, 0.07),  # 2 USDT: under the 5 USDT min notional
            order("ETH", 10.0, 1890.0),  # 18,900 USDT: cut to 3,000
        ]
    )
    executions = broker.executions().set_index("asset")
    assert executions.loc["BTC", "status"] == "skipped" and executions.loc["DOGE", "status"] == "skipped"
    assert (
        executions.loc["ETH", "sent"] == pytest.approx(1.587)
        and "max_order_notional" in executions.loc["ETH", "reason"]
    )
    broker.collect_fills(START + 2 * BAR)
    broker.submit([order("ETH", 10.0, 1890.0, bar_end=START + 2 * BAR)])  # 2,999 held: room for 2,001 more
    broker.collect_fills(START + 3 * BAR)
    assert exchange_positions(exchange)["ETH"] == pytest.approx(2.645)


def test_kill_switch_stops_orders_and_flattens(exchange, tmp_path):
    switch = tmp_path / "KILL"
    broker = make_broker(exchange, kill=KillSwitch(str(switch)))
    broker.reconcile(empty_state())
    broker.submit([order("SOL", 200.0, 25.0)])
    broker.collect_fills(START + 2 * BAR)
    assert broker.kill_switch_state() is None
    switch.write_text("stop")
    assert broker.kill_switch_state() == "stop"  # what the session alerts on
    broker.submit([order("SOL", 200.0, 25.0, bar_end=START + 2 * BAR)])
    assert exchange_positions(exchange)["SOL"] == 200.0
    switch.write_text("flatten")
    broker.submit([])
    broker.collect_fills(START + 3 * BAR)
    assert exchange_positions(exchange)["SOL"] == 0.0


def test_audit_log_has_every_request_and_no_secret(exchange, tmp_path):
    audit = tmp_path / "exchange_audit.jsonl"
    broker = make_broker(exchange, audit=audit)
    broker.reconcile(empty_state())
    broker.submit([order("BTC", 0.1, 29800.0)])
    broker.collect_fills(START + 2 * BAR)
    broker.close()
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(records) == broker.requests and any(r["method"] == "POST" for r in records)
    text = audit.read_text()
    assert exchange.api_key not in text and exchange.api_secret not in text
    assert all(
        "signature=<redacted>" in (r["url"] + str(r["body"]))
        for r in records
        if "signature" in r["url"] + str(r["body"])
    )


def test_wrong_keys_and_missing_credentials_are_clear(exchange, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "not-the-secret")
    with pytest.raises(BrokerError, match="AuthenticationError"):
        make_broker(exchange).reconcile(empty_state())
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(BrokerError, match=f"set the environment variables {KEY_ENV}"):
        make_broker(exchange)


# -- risk limits: at, under and over each bound; no price, no order ----------------------------------

LIMITS = ("max_order_notional", "max_notional_per_asset", "max_gross_notional")
NO_PRICE = "no decision price: risk limits cannot be checked"


@pytest.mark.parametrize("limit", LIMITS)
@pytest.mark.parametrize(
    ("quantity", "sent", "reason"),
    [
        (1.5, 1.5, ""),  # at the bound: 1.5 ETH x 2,000 = 3,000 USDT, placed in full
        (1.499, 1.499, ""),  # just under: 2,998 USDT, placed in full
        (1.501, 1.5, "limit"),  # just over: 3,002 USDT, cut to 3,000 / 2,000 = 1.5 ETH, the limit named
    ],
    ids=["at", "under", "over"],
)
def test_each_risk_limit_at_under_and_over_its_bound(exchange, limit, quantity, sent, reason):
    """From a flat book, every limit bounds one order of one asset to 3,000 USDT at its decision price."""
    broker = make_broker(exchange, risk=RiskConfig(**{limit: 3_000.0}))
    broker.reconcile(empty_state())
    broker.submit([order("ETH", quantity, 2_000.0)])
    (execution,) = broker.executions().to_dict("records")
    assert (execution["status"], execution["sent"]) == ("closed", sent)
    assert execution["reason"] == (limit if reason else "")
    assert exchange_positions(exchange)["ETH"] == sent
    broker.close()


@pytest.mark.parametrize("limits", [*LIMITS, "all", "none"])
@pytest.mark.parametrize("price", [np.nan, None, 0.0])
def test_no_decision_price_no_order(exchange, limits, price, caplog):
    """Fail closed: an order without a usable price cannot be checked against the limits, so it is not
    sent; the executions table says why, and a warning is logged."""
    names = {"all": LIMITS, "none": ()}.get(limits, (limits,))
    broker = make_broker(exchange, risk=RiskConfig(**{name: 3_000.0 for name in names}))
    broker.reconcile(empty_state())
    with caplog.at_level("WARNING", logger="prod_system.broker"):
        broker.submit([order("ETH", 1.0, price), order("SOL", 40.0, 25.0)])  # 1 ETH ~ 1,890: under every cap
    executions = broker.executions().set_index("asset")
    assert executions.loc["ETH", "status"] == "skipped" and executions.loc["ETH", "reason"] == NO_PRICE
    assert executions.loc["SOL", "status"] == "closed"  # the priced order of the same bar goes out
    assert placed_ids(exchange) == [order("SOL", 40.0, 25.0)["client_order_id"]]
    held = exchange_positions(exchange)
    assert (held["ETH"], held["SOL"]) == (0.0, 40.0)
    assert any(NO_PRICE in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    broker.close()


def test_max_gross_notional_counts_the_bars_other_orders_and_the_held_positions(exchange):
    risk = RiskConfig(max_gross_notional=10_000.0)
    broker = make_broker(exchange, risk=risk)
    broker.reconcile(empty_state())
    # one bar from flat: BTC 0.2 x 30,000 = 6,000 fits; ETH then has 10,000 - 6,000 = 4,000 of room:
    # 4,000 / 2,000 = 2 ETH of the 3 asked
    broker.submit([order("BTC", 0.2, 30_000.0), order("ETH", 3.0, 2_000.0)])
    executions = broker.executions().set_index("asset")
    assert (executions.loc["BTC", "sent"], executions.loc["BTC", "reason"]) == (0.2, "")
    assert (executions.loc["ETH", "sent"], executions.loc["ETH", "reason"]) == (2.0, "max_gross_notional")
    # sent again before their fills are counted (a retried bar): the placed orders fill the 10,000 already
    broker.submit([order("SOL", 40.0, 25.0)])
    sol = broker.executions().set_index("asset").loc["SOL"]
    assert (sol["status"], sol["reason"]) == ("skipped", "max_gross_notional")
    fills = {f["asset"]: f for f in broker.collect_fills(START + 2 * BAR)}
    # the next bar: the positions are worth their fill prices; SOL gets what is left of 10,000
    held = 0.2 * fills["BTC"]["price"] + 2.0 * fills["ETH"]["price"]
    assert 9_000 < held < 10_000  # (the exchange's prices: BTC ~29,900, ETH ~1,890)
    broker.submit([order("SOL", 400.0, 25.0, bar_end=START + 2 * BAR)])
    sol = broker.executions().iloc[-1]
    assert sol["asset"] == "SOL" and sol["sent"] == np.floor((10_000.0 - held) / 25.0)
    assert sol["reason"] == "max_gross_notional"
    broker.close()


def test_a_restarted_broker_values_the_held_positions_at_the_exchanges_marks(exchange):
    """After a restart no order has priced the positions yet: the gross limit takes the exchange's marks
    (it counted them as worth nothing), and refuses rather than guess when a held position has no price."""
    first = make_broker(exchange)
    first.reconcile(empty_state())
    first.submit([order("BTC", 0.3, 30_000.0)])
    first.collect_fills(START + 2 * BAR)
    held = PortfolioState(
        **{**empty_state().__dict__, "shares": pd.Series({"BTC": 0.3}).reindex(UNIVERSE, fill_value=0.0)}
    )
    clock = DrivenClock(START + 2 * BAR + DELAY, exchange)
    client = binanceusdm_client(exchange.url, exchange.api_key, exchange.api_secret)
    (btc,) = client.fetch_positions([symbol_of("BTC")])
    mark = float(btc["markPrice"])  # the exchange's, now
    second = make_broker(exchange, clock=clock, risk=RiskConfig(max_gross_notional=12_000.0))
    second.reconcile(held)
    second.submit([order("ETH", 3.0, 2_000.0, bar_end=START + 2 * BAR)])  # 6,000 USDT asked
    (eth,) = second.executions().to_dict("records")
    room = (12_000.0 - 0.3 * mark) / 2_000.0  # 0.3 BTC ~ 8,970 USDT held
    assert eth["sent"] == np.floor(room * 1000) / 1000 and eth["reason"] == "max_gross_notional"
    # an exchange that reported no mark for BTC (the local one, as Binance, always does: forgotten here)
    third = make_broker(exchange, clock=clock, risk=RiskConfig(max_gross_notional=12_000.0))
    third.reconcile(
        PortfolioState(**{**held.__dict__, "shares": held.shares.add(pd.Series({"ETH": eth["sent"]}), fill_value=0.0)})
    )
    third._prices.pop("BTC")
    third.submit([order("SOL", 40.0, 25.0, bar_end=START + 2 * BAR)])
    (sol,) = third.executions().to_dict("records")
    assert (
        sol["status"] == "skipped"
        and sol["reason"] == "no price for the held BTC: max_gross_notional cannot be checked"
    )
    for broker in (first, second, third):
        broker.close()


def test_the_kill_switch_flattens_whatever_the_risk_limits_and_without_a_price(exchange, tmp_path):
    """Flatten orders are reduce-only with no decision price: reducing risk needs no price, and no limit
    holds them back (a 100 USDT cap on everything, positions of 6,000 and 10,000 USDT)."""
    opener = make_broker(exchange)
    opener.reconcile(empty_state())
    opener.submit([order("BTC", 0.2, 30_000.0), order("SOL", -400.0, 25.0)])
    opener.collect_fills(START + 2 * BAR)
    switch = tmp_path / "KILL"
    switch.write_text("flatten")
    shares = pd.Series({"BTC": 0.2, "SOL": -400.0}).reindex(UNIVERSE, fill_value=0.0)
    risk = RiskConfig(max_order_notional=100.0, max_notional_per_asset=100.0, max_gross_notional=100.0)
    clock = DrivenClock(START + 2 * BAR + DELAY, exchange)
    broker = make_broker(exchange, clock=clock, risk=risk, kill=KillSwitch(str(switch)))
    broker.reconcile(PortfolioState(**{**empty_state().__dict__, "shares": shares}))
    broker.submit([order("ETH", 0.01, np.nan, bar_end=START + 2 * BAR)])  # the bar's order: not sent
    executions = broker.executions().set_index("asset")
    assert sorted(executions.index) == ["BTC", "SOL"]
    assert (executions["status"] == "closed").all() and (executions["reason"] == "").all()
    assert executions.loc["BTC", "sent"] == 0.2 and executions.loc["SOL", "sent"] == 400.0
    assert executions["client_order_id"].str.startswith("ps-kill-").all()
    broker.collect_fills(START + 3 * BAR)
    assert (exchange_positions(exchange) == 0.0).all()
    opener.close()
    broker.close()


def test_an_adopted_difference_is_booked_at_the_mark_and_a_closed_position_never_at_zero(exchange):
    """In session, 5 BNB added by hand to the 10 the portfolio holds are booked at the exchange's mark
    (Binance blends the entry price: the old cost would move the portfolio's value); a position then
    closed by hand (no longer listed by the positions endpoint: no entry price, no mark) is adopted at
    start, by a new broker, at the premium index's mark, never at 0."""
    clock = DrivenClock(START + BAR + DELAY, exchange)
    broker = make_broker(exchange, clock=clock, on_mismatch="adopt")
    broker.reconcile(empty_state())
    broker.submit([order("BNB", 10.0, 240.0)])
    bought = broker.collect_fills(START + 2 * BAR)[0]
    held = empty_state().shares
    held["BNB"] = 10.0
    clock.wait_until(START + 12 * BAR + DELAY)
    client = binanceusdm_client(exchange.url, exchange.api_key, exchange.api_secret)
    client.create_order(symbol_of("BNB"), "market", "buy", 5.0)
    check = broker.check(held)
    assert check.differ == ["BNB"] and check.marks["BNB"] != pytest.approx(bought["price"], rel=1e-6)
    (added,) = broker.adopt(check, START + 13 * BAR)
    assert added["shares"] == pytest.approx(5.0) and added["price"] == pytest.approx(check.marks["BNB"])
    broker.close()
    client.create_order(symbol_of("BNB"), "market", "sell", 15.0, None, {"reduceOnly": True})
    state = empty_state()
    state.shares["BNB"] = 15.0
    (closed,) = make_broker(exchange, clock=clock, on_mismatch="adopt").reconcile(state)
    mark = float(client.fetch_mark_price(symbol_of("BNB"))["markPrice"])
    assert closed["shares"] == pytest.approx(-15.0) and closed["price"] == pytest.approx(mark)
    assert closed["notional"] == pytest.approx(-15.0 * mark)


def test_no_adoption_on_an_asset_with_an_order_of_ours_still_open(exchange):
    """An order of the session still resting on BNB (resumed at start from the state's open orders)
    may fill after the difference is booked: adopting now could count its shares twice, so the start
    defers (BrokerError, the check made again) and nothing is adopted."""
    broker = make_broker(exchange, on_mismatch="adopt")  # its clock opens the market
    client = binanceusdm_client(exchange.url, exchange.api_key, exchange.api_secret)
    ours = order("BNB", 2.0, 100.0, cid="ps-resting-bnb")
    client.create_order(symbol_of("BNB"), "limit", "buy", 2.0, 100.0, {"clientOrderId": "ps-resting-bnb"})
    client.create_order(symbol_of("BNB"), "market", "buy", 5.0)
    state = empty_state()
    state.open_orders = [ours]
    with pytest.raises(BrokerError, match=r"not adopting \['BNB'\] while an order of this session is open"):
        broker.reconcile(state)
