"""Funding on the local exchange: positions pay position x mark x rate at each settlement, once, as
the replay clock passes it; the income history (REALIZED_PNL, COMMISSION, FUNDING_FEE) adds up to
the wallet's change; premiumIndex and fundingRate publish rates only once known. Through ccxt, Binance's
own connector and raw signed calls."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd
import pytest

from prod_system.config import BINANCE_BASE_FUNDING_RATE, BINANCE_TAKER_FEE
from prod_system.data.funding import normalize_funding
from prod_system.data.market_data import write_snapshot
from prod_system.exchange import LocalExchange
from prod_system.trading.brokers.ccxt_client import symbol_of
from prod_system_tests.kit.binance_clients import call, client_of, connector_of
from prod_system_tests.kit.exchange import last_close, ms

BTC, ETH = symbol_of("BTC"), symbol_of("ETH")
TAKER = Decimal(repr(BINANCE_TAKER_FEE))
ASSUMED = Decimal(repr(BINANCE_BASE_FUNDING_RATE))
T = pd.Timestamp("2023-07-21T08:00Z")  # a settlement
BEFORE, AFTER = T - pd.Timedelta(minutes=10), T + pd.Timedelta(minutes=10)
START = Decimal(1_000_000)


def price(candles, asset: str, ts: pd.Timestamp) -> Decimal:
    return Decimal(repr(last_close(candles, asset, ts)))


def funding_fee(amount: str, mark: Decimal, rate: Decimal) -> Decimal:
    """What a position pays at a settlement, as Binance writes it (8 decimals)."""
    return (-Decimal(amount) * mark * rate).quantize(Decimal("1e-8"), ROUND_HALF_UP)


def wallet(exchange: LocalExchange) -> Decimal:
    _, _, [balance] = call(exchange, "GET", "/fapi/v3/balance", signed=True)
    return Decimal(balance["balance"])


def income(exchange: LocalExchange, **params) -> list[dict]:
    status, _, rows = call(exchange, "GET", "/fapi/v1/income", params, signed=True)
    assert status == 200, rows
    return rows


@pytest.fixture
def exchange(snapshot) -> Iterator[LocalExchange]:
    with LocalExchange(f"parquet:{snapshot}") as local:
        local.set_time(BEFORE)
        yield local


def test_open_positions_pay_position_x_mark_x_rate_and_income_adds_up_to_the_wallet(exchange, candles):
    client = client_of(exchange)
    client.create_order(BTC, "market", "buy", 0.01)  # long: pays at a positive rate
    client.create_order(ETH, "market", "sell", 0.1)  # short: receives
    exchange.set_time(T - pd.Timedelta(minutes=1))
    client.create_order(ETH, "market", "buy", 0.05)  # reduces the short before the settlement: realizes PnL
    before = wallet(exchange)
    exchange.set_time(AFTER)
    btc_fee = funding_fee("0.01", price(candles, "BTC", T), ASSUMED)
    eth_fee = funding_fee("-0.05", price(candles, "ETH", T), ASSUMED)
    assert btc_fee < 0 < eth_fee
    assert wallet(exchange) - before == btc_fee + eth_fee

    history = client.fetch_funding_history()
    assert [(row["symbol"], row["timestamp"], Decimal(row["info"]["income"])) for row in history] == [
        (BTC, ms(T), btc_fee),
        (ETH, ms(T), eth_fee),
    ]
    assert [row["amount"] for row in client.fetch_funding_history(BTC)] == [float(btc_fee)]

    rows = income(exchange)
    p_btc, p_eth = price(candles, "BTC", BEFORE), price(candles, "ETH", BEFORE)
    p_cover = price(candles, "ETH", T - pd.Timedelta(minutes=1))
    expected = [
        ("BTCUSDT", "COMMISSION", -Decimal("0.01") * p_btc * TAKER, ms(BEFORE)),
        ("ETHUSDT", "COMMISSION", -Decimal("0.1") * p_eth * TAKER, ms(BEFORE)),
        ("ETHUSDT", "REALIZED_PNL", Decimal("0.05") * (p_eth - p_cover), ms(T) - 60_000),
        ("ETHUSDT", "COMMISSION", -Decimal("0.05") * p_cover * TAKER, ms(T) - 60_000),
        ("BTCUSDT", "FUNDING_FEE", btc_fee, ms(T)),
        ("ETHUSDT", "FUNDING_FEE", eth_fee, ms(T)),
    ]
    assert [(r["symbol"], r["incomeType"], Decimal(r["income"]), r["time"]) for r in rows] == expected
    assert all(r["asset"] == "USDT" and r["info"] == r["incomeType"] for r in rows)
    trade_ids = [str(t["id"]) for t in client.fetch_my_trades(BTC) + client.fetch_my_trades(ETH)]
    assert [r["tradeId"] for r in rows] == [trade_ids[0], trade_ids[1], trade_ids[2], trade_ids[2], "", ""]
    assert len({r["tranId"] for r in rows}) == len(rows)
    assert wallet(exchange) - START == sum(Decimal(r["income"]) for r in rows)  # the accounting identity

    # Binance's filters and pages
    assert [r["incomeType"] for r in income(exchange, incomeType="COMMISSION", limit=1, page=2)] == ["COMMISSION"]
    assert income(exchange, symbol="BTCUSDT", startTime=ms(T)) == [rows[4]]
    assert income(exchange, endTime=ms(BEFORE)) == rows[:2]
    status, _, error = call(exchange, "GET", "/fapi/v1/income", {"incomeType": "PROFIT"}, signed=True)
    assert (status, error["code"]) == (400, -1130)
    exchange.service.wall = lambda: ms(pd.Timestamp("2026-01-01T10:00Z"))  # one rate-limit minute
    _, first, _ = call(exchange, "GET", "/fapi/v1/income", signed=True)
    _, second, _ = call(exchange, "GET", "/fapi/v1/income", signed=True)
    assert int(second["X-MBX-USED-WEIGHT-1M"]) - int(first["X-MBX-USED-WEIGHT-1M"]) == 30  # Binance's weight


def test_a_position_closed_before_or_opened_at_the_settlement_pays_nothing(exchange):
    client = client_of(exchange)
    client.create_order(BTC, "market", "buy", 0.01)
    exchange.set_time(T - pd.Timedelta(minutes=5))
    client.create_order(BTC, "market", "sell", 0.01)  # closed before T
    exchange.set_time(T)
    client.create_order(ETH, "market", "buy", 0.1)  # opened at T: after the settlement
    exchange.set_time(AFTER)
    assert client.fetch_funding_history() == []
    assert [r["incomeType"] for r in income(exchange, incomeType="REALIZED_PNL")] == ["REALIZED_PNL"]
    exchange.set_time(T + pd.Timedelta(hours=8))  # the next one counts the ETH position
    assert [row["symbol"] for row in client.fetch_funding_history()] == [ETH]


def test_a_resting_fill_on_the_candle_closing_at_the_settlement_counts_one_on_the_next_does_not(exchange, candles):
    btc = candles[candles["asset"] == "BTC"].set_index("bar_start")
    client = client_of(exchange)
    exchange.set_time(T - pd.Timedelta(minutes=1))
    client.create_order(BTC, "limit", "buy", 0.01, btc.loc[T - pd.Timedelta(minutes=1), "low"])  # fills at T
    lower = btc.loc[T, "low"]  # reached first by the candle closing at T + 1 min
    assert lower < btc.loc[T - pd.Timedelta(minutes=1), "low"]
    client.create_order(BTC, "limit", "buy", 0.01, lower)
    exchange.set_time(AFTER)  # both fills and the settlement in one call, in time order
    assert client.fetch_positions()[0]["contracts"] == 0.02
    history = client.fetch_funding_history()
    assert [Decimal(row["info"]["income"]) for row in history] == [
        funding_fee("0.01", price(candles, "BTC", T), ASSUMED)
    ]


def test_a_settlement_is_applied_once_across_calls_and_restarts(snapshot, tmp_path, candles):
    state = tmp_path / "state.json"
    with LocalExchange(f"parquet:{snapshot}", state_path=state) as first:
        first.set_time(BEFORE)
        client_of(first).create_order(BTC, "market", "sell", 0.01)
        first.set_time(T)  # the settlement is due exactly now
        settled = wallet(first)
        assert wallet(first) == settled
        port = int(first.url.rsplit(":", 1)[1])
    with LocalExchange(f"parquet:{snapshot}", state_path=state, port=port) as second:
        second.set_time(AFTER)
        assert wallet(second) == settled
        fees = income(second, incomeType="FUNDING_FEE")
        assert [Decimal(r["income"]) for r in fees] == [funding_fee("-0.01", price(candles, "BTC", T), ASSUMED)]


def test_funding_data_sets_the_rates_and_marks_and_is_published_once_settled(tmp_path, candles):
    """The snapshot's funding file (as dump-market-data writes it) is the exchange's funding."""
    day = pd.Timestamp("2023-07-21T00:00Z")
    times = [day, T, T + pd.Timedelta(hours=8)]
    rates = [0.00025, -0.0003, 0.0004]
    funding = normalize_funding(
        pd.DataFrame(
            {
                "asset": "BTC",
                "funding_time": times,
                "rate": rates,
                "mark_price": [np.nan, 29000.5, np.nan],
                "knowledge_ts": [times[0], T + pd.Timedelta(minutes=1), times[2]],  # a client knew T's a minute late
            }
        )
    )
    snapshot = write_snapshot(candles, tmp_path / "with_funding.parquet", funding=funding)
    with LocalExchange(f"parquet:{snapshot}") as exchange:
        exchange.set_time(BEFORE)
        client = client_of(exchange)
        client.create_order(BTC, "market", "buy", 0.01)
        client.create_order(ETH, "market", "buy", 0.1)  # no data for ETH: the assumed rate
        rate = client.fetch_funding_rate(BTC)
        assert (rate["fundingRate"], rate["fundingTimestamp"]) == (0.00025, ms(T))  # the last known, not T's
        assert client.fetch_funding_rate(ETH)["fundingRate"] == BINANCE_BASE_FUNDING_RATE

        # settled: the exchange publishes the rate it settled at once, whatever the snapshot's knowledge time
        # (a client's: the wallet's FUNDING_FEE row would give the rate away anyway)
        exchange.set_time(T + pd.Timedelta(seconds=30))
        assert client.fetch_funding_rate(BTC)["fundingRate"] == -0.0003
        assert [row["timestamp"] for row in client.fetch_funding_rate_history(BTC)] == [ms(day), ms(T)]
        exchange.set_time(AFTER)
        assert client.fetch_funding_rate(BTC)["fundingRate"] == -0.0003
        history = client.fetch_funding_rate_history(BTC, since=ms(day))
        assert [(row["timestamp"], row["fundingRate"]) for row in history] == [(ms(day), 0.00025), (ms(T), -0.0003)]
        assert history[1]["info"]["markPrice"] == "29000.50000000"
        assert history[0]["info"]["markPrice"] == f"{price(candles, 'BTC', day):.8f}"  # no data mark: the close

        btc_fee = funding_fee("0.01", Decimal("29000.5"), Decimal("-0.0003"))
        assert btc_fee == Decimal("0.0870015")  # negative rate: the long receives
        eth_fee = funding_fee("0.1", price(candles, "ETH", T), ASSUMED)
        assert [Decimal(row["info"]["income"]) for row in client.fetch_funding_history()] == [btc_fee, eth_fee]

        # Binance's own connector reads the same
        futures = connector_of(exchange)
        assert [r["income"] for r in futures.get_income_history(incomeType="FUNDING_FEE")] == [
            f"{btc_fee:.8f}",
            f"{eth_fee:.8f}",
        ]
        rows = futures.funding_rate(symbol="BTCUSDT", startTime=ms(T))
        assert [(r["fundingTime"], r["fundingRate"]) for r in rows] == [(ms(T), "-0.00030000")]
        assert futures.mark_price(symbol="ETHUSDT")["nextFundingTime"] == ms(T + pd.Timedelta(hours=8))
