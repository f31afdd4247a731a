"""The endpoints ccxt users call beyond trading, each through ccxt's unified method: order history,
open order, cancel all, leverage, tickers, order book, mark price and funding, klines of every
interval, time in force, reduce-only, the used-weight header and break-even prices."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import ccxt
import pandas as pd
import pytest

from prod_system.config import BINANCE_BASE_FUNDING_RATE, BINANCE_TAKER_FEE
from prod_system.exchange import LocalExchange
from prod_system.trading.brokers.ccxt_client import symbol_of
from prod_system_tests.kit.binance_clients import client_of
from prod_system_tests.kit.exchange import last_close, ms

NOW = pd.Timestamp("2023-07-21T00:00:30Z")
BTC, ETH = symbol_of("BTC"), symbol_of("ETH")
TAKER = Decimal(repr(BINANCE_TAKER_FEE))


@pytest.fixture
def exchange(snapshot) -> Iterator[LocalExchange]:
    with LocalExchange(f"parquet:{snapshot}") as local:
        local.set_time(NOW)
        yield local


@pytest.fixture
def client(exchange) -> ccxt.binanceusdm:
    return client_of(exchange, timeout_ms=5_000)


# -- market data ---------------------------------------------------------------------------------------


# ccxt timeframe -> pandas resampling of the 1-minute candles on Binance's boundaries
RESAMPLED = {
    "3m": {"rule": "3min"},
    "5m": {"rule": "5min"},
    "15m": {"rule": "15min"},
    "1h": {"rule": "1h"},
    "4h": {"rule": "4h"},
    "12h": {"rule": "12h"},
    "1d": {"rule": "1D"},
    "3d": {"rule": "72h", "origin": "epoch"},  # 3-day klines count from the epoch: 2023-07-19, 07-22, ...
    "1w": {"rule": "W-MON", "label": "left", "closed": "left"},
    "1M": {"rule": "MS"},
}


@pytest.mark.parametrize("timeframe", list(RESAMPLED))
def test_fetch_ohlcv_aggregates_every_interval_from_the_minutes(exchange, client, candles, timeframe):
    exchange.set_time(candles["bar_end"].max() + pd.Timedelta(hours=1))  # every candle closed
    btc = candles[candles["asset"] == "BTC"].set_index("bar_start").sort_index()
    expected = btc.resample(**RESAMPLED[timeframe]).agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    expected = expected.dropna()
    rows = client.fetch_ohlcv(BTC, timeframe, since=ms(expected.index[0]), limit=1_000)
    assert [row[0] for row in rows] == [ms(ts) for ts in expected.index[:1_000]]
    for row, (_, bar) in zip(rows, expected.iloc[:1_000].iterrows(), strict=True):
        assert row[1:5] == [bar["open"], bar["high"], bar["low"], bar["close"]]
        assert row[5] == pytest.approx(bar["volume"], rel=1e-9)
    last = client.fetch_ohlcv(BTC, timeframe, limit=2)
    assert [row[0] for row in last] == [ms(ts) for ts in expected.index[-2:]]


def test_the_kline_in_progress_holds_the_minutes_opened_so_far(exchange, client, candles):
    now = pd.Timestamp("2023-07-21T00:07:30Z")
    exchange.set_time(now)
    btc = candles[candles["asset"] == "BTC"].set_index("bar_start").sort_index()
    closed = btc.loc[pd.Timestamp("2023-07-21T00:05Z") : pd.Timestamp("2023-07-21T00:06Z")]
    current = btc.loc[pd.Timestamp("2023-07-21T00:07Z")]
    *_, in_progress = client.fetch_ohlcv(BTC, "5m", limit=3)
    assert in_progress[0] == ms(pd.Timestamp("2023-07-21T00:05Z"))
    assert in_progress[1:] == [
        closed["open"].iloc[0],
        max(closed["high"].max(), current["open"]),
        min(closed["low"].min(), current["open"]),
        current["open"],
        pytest.approx(closed["volume"].sum()),
    ]
    raw = client.fapiPublicGetKlines({"symbol": "BTCUSDT", "interval": "5m", "limit": 1})
    assert raw[0][6] == ms(pd.Timestamp("2023-07-21T00:10Z")) - 1  # close time: the next open - 1 ms
    # from a start time inside a kline, the first kline opening at or after it
    since = pd.Timestamp("2023-07-20T10:30Z")
    assert client.fetch_ohlcv(BTC, "1h", since=ms(since), limit=1)[0][0] == ms(pd.Timestamp("2023-07-20T11:00Z"))


def test_tickers_are_the_last_24_hours_at_the_last_price(client, candles):
    ticker = client.fetch_ticker(BTC)
    window = candles[(candles["asset"] == "BTC") & (candles["bar_start"] >= NOW - pd.Timedelta(days=1))]
    window = window[window["bar_end"] <= NOW].sort_values("bar_start")
    assert ticker["last"] == last_close(candles, "BTC", NOW)
    assert ticker["open"] == window["open"].iloc[0]
    assert (ticker["high"], ticker["low"]) == (window["high"].max(), window["low"].min())
    assert ticker["baseVolume"] == pytest.approx(window["volume"].sum())
    assert ticker["timestamp"] == ms(NOW)
    tickers = client.fetch_tickers()
    assert sorted(tickers) == sorted(client.load_markets())
    assert tickers[ETH]["last"] == last_close(candles, "ETH", NOW)
    assert client.fetch_last_prices([BTC])[BTC]["price"] == last_close(candles, "BTC", NOW)


def test_the_order_book_is_synthesised_one_tick_around_the_last_price(exchange, client, candles):
    price, tick = Decimal(repr(last_close(candles, "BTC", NOW))), exchange.engine.rules["BTCUSDT"].tick
    book = client.fetch_order_book(BTC, 5)
    assert [Decimal(repr(p)) for p, _ in book["bids"]] == [price - tick * k for k in range(1, 6)]
    assert [Decimal(repr(p)) for p, _ in book["asks"]] == [price + tick * k for k in range(1, 6)]
    assert all(amount > 0 for _, amount in book["bids"] + book["asks"])
    assert len(client.fetch_order_book(BTC)["bids"]) == 500  # Binance's default depth
    with pytest.raises(ccxt.BadRequest, match="-4021"):
        client.fetch_order_book(BTC, 7)


def test_mark_price_and_the_assumed_funding_rate_without_funding_data(exchange, client, candles):
    rate = client.fetch_funding_rate(BTC)
    assert rate["markPrice"] == rate["indexPrice"] == last_close(candles, "BTC", NOW)
    assert rate["fundingRate"] == BINANCE_BASE_FUNDING_RATE
    assert rate["fundingTimestamp"] == ms(pd.Timestamp("2023-07-21T08:00Z"))
    exchange.set_time(pd.Timestamp("2023-07-21T16:00Z"))
    assert client.fetch_funding_rate(BTC)["fundingTimestamp"] == ms(pd.Timestamp("2023-07-22T00:00Z"))
    assert len(client.fetch_funding_rates()) == len(client.load_markets())


# -- orders ------------------------------------------------------------------------------------------------


def test_order_history_open_order_and_cancel_all(exchange, client, candles):
    below = round(last_close(candles, "BTC", NOW) * 0.9, 1)
    resting = [client.create_order(BTC, "limit", "buy", 0.01, below - k) for k in range(2)]
    filled = client.create_order(BTC, "market", "buy", 0.01)
    other = client.create_order(ETH, "limit", "buy", 0.1, 1000.0)
    assert [o["id"] for o in client.fetch_orders(BTC)] == [o["id"] for o in [*resting, filled]]
    assert [o["id"] for o in client.fetch_closed_orders(BTC)] == [filled["id"]]
    assert client.fetch_open_order(resting[0]["id"], BTC)["status"] == "open"
    with pytest.raises(ccxt.OrderNotFound, match="-2013"):  # filled: not an open order
        client.fetch_open_order(filled["id"], BTC)
    client.cancel_all_orders(BTC)
    assert client.fetch_open_orders(BTC) == []
    assert [o["id"] for o in client.fetch_open_orders()] == [other["id"]]  # other symbols untouched
    assert [o["status"] for o in client.fetch_orders(BTC)] == ["canceled", "canceled", "closed"]
    assert [o["id"] for o in client.fetch_orders(BTC, limit=1)] == [filled["id"]]  # the most recent
    since_second = client.fetch_orders(BTC, params={"orderId": resting[1]["id"]})
    assert [o["id"] for o in since_second] == [resting[1]["id"], filled["id"]]
    # 3 days on, the cancelled orders without a fill are gone, as Binance has it; the filled one stays
    exchange.set_time(NOW + pd.Timedelta(days=3, minutes=1))
    assert [o["id"] for o in client.fetch_orders(BTC, since=ms(NOW))] == [filled["id"]]


def test_leverage_is_per_symbol_and_sets_the_initial_margin(exchange, client, candles):
    price = Decimal(repr(last_close(candles, "BTC", NOW)))
    assert client.set_leverage(4, BTC) == {"leverage": 4, "maxNotionalValue": "1000000000", "symbol": "BTCUSDT"}
    client.create_order(BTC, "market", "buy", 0.5)
    client.create_order(ETH, "market", "buy", 1)
    [btc] = client.fetch_positions([BTC])
    assert Decimal(btc["info"]["initialMargin"]) == Decimal("0.5") * price / 4
    eth_price = Decimal(repr(last_close(candles, "ETH", NOW)))
    [eth] = client.fetch_positions([ETH])
    assert Decimal(eth["info"]["initialMargin"]) == eth_price / 20  # the default, ETH untouched
    config = {row["symbol"]: row for row in client.fapiPrivateGetSymbolConfig()}
    assert (config["BTCUSDT"]["leverage"], config["ETHUSDT"]["leverage"]) == (4, 20)
    v2 = {row["symbol"]: row for row in client.fapiPrivateV2GetPositionRisk()}
    assert (v2["BTCUSDT"]["leverage"], v2["BTCUSDT"]["maxNotionalValue"]) == ("4", "1000000000")
    # the margin check uses it: at 1x an order worth more than the free balance is refused
    client.set_leverage(1, BTC)
    too_much = round(1_000_000 / float(price), 3)
    with pytest.raises(ccxt.InsufficientFunds, match="-2019"):
        client.create_order(BTC, "market", "buy", too_much)
    client.set_leverage(20, BTC)
    assert client.create_order(BTC, "market", "buy", too_much)["status"] == "closed"
    with pytest.raises(ccxt.BadRequest, match="-4028"):
        client.set_leverage(21, BTC)  # over the first bracket's 20x
    with pytest.raises(ccxt.BadRequest, match="-4028"):
        client.fapiPrivatePostLeverage({"symbol": "BTCUSDT", "leverage": 0})
    # back to 1x the position's margin would exceed the balance: refused, the leverage stays
    with pytest.raises(ccxt.ExchangeError, match="-2028"):
        client.set_leverage(1, BTC)
    assert client.fapiPrivateGetSymbolConfig({"symbol": "BTCUSDT"})[0]["leverage"] == 20


def test_leverage_survives_a_restart(snapshot, tmp_path):
    state = tmp_path / "state.json"
    with LocalExchange(f"parquet:{snapshot}", state_path=state) as first:
        first.set_time(NOW)
        client_of(first).set_leverage(3, BTC)
    with LocalExchange(f"parquet:{snapshot}", state_path=state) as second:
        [btc] = client_of(second).fapiPrivateGetSymbolConfig({"symbol": "BTCUSDT"})
        assert btc["leverage"] == 3


def test_ioc_fills_what_it_can_now_and_expires_the_rest(exchange, client, candles):
    assert client.load_markets()[BTC]["info"]["timeInForce"] == ["GTC", "IOC", "FOK", "GTX", "GTD"]
    price = last_close(candles, "BTC", NOW)
    away = client.create_order(BTC, "limit", "buy", 0.01, round(price - 100, 1), {"timeInForce": "IOC"})
    assert (away["status"], away["filled"], away["info"]["timeInForce"]) == ("expired", 0, "IOC")
    marketable = client.create_order(BTC, "limit", "buy", 0.01, round(price + 100, 1), {"timeInForce": "IOC"})
    assert (marketable["status"], marketable["filled"], marketable["average"]) == ("closed", 0.01, price)
    exchange.set_faults([{"endpoint": "POST /fapi/v1/order", "kind": "partial_fill", "fraction": 0.5}])
    partial = client.create_order(BTC, "limit", "buy", 0.01, round(price + 100, 1), {"timeInForce": "IOC"})
    assert (partial["status"], partial["filled"]) == ("expired", 0.005)
    assert client.fetch_open_orders(BTC) == []


def test_fok_fills_all_at_once_or_is_rejected_unrecorded(exchange, client, candles):
    price = last_close(candles, "BTC", NOW)
    order = client.create_order(BTC, "limit", "sell", 0.01, round(price - 100, 1), {"timeInForce": "FOK"})
    assert (order["status"], order["filled"], order["info"]["timeInForce"]) == ("closed", 0.01, "FOK")
    with pytest.raises(ccxt.OrderNotFillable, match="-5021"):
        client.create_order(BTC, "limit", "sell", 0.01, round(price + 100, 1), {"timeInForce": "FOK"})
    exchange.set_faults([{"endpoint": "POST /fapi/v1/order", "kind": "partial_fill", "fraction": 0.5}])
    with pytest.raises(ccxt.OrderNotFillable, match="-5021"):  # only half could fill: none does
        client.create_order(BTC, "limit", "sell", 0.01, round(price - 100, 1), {"timeInForce": "FOK"})
    assert exchange.engine.counts()["orders"] == 1
    assert len(client.fetch_my_trades(BTC)) == 1


def test_post_only_is_rejected_when_it_would_take_and_else_rests_as_maker(exchange, client, candles):
    price = last_close(candles, "BTC", NOW)
    with pytest.raises(ccxt.OrderNotFillable, match="-5022"):
        client.create_order(BTC, "limit", "buy", 0.01, round(price + 10, 1), {"postOnly": True})
    assert exchange.engine.counts()["orders"] == 0
    later = candles[(candles["asset"] == "BTC") & (candles["bar_start"] >= NOW)].sort_values("bar_start")
    limit = round(float(later["low"].iloc[:30].min()) + 0.1, 1)
    order = client.create_order(BTC, "limit", "buy", 0.01, limit, {"postOnly": True})
    assert (order["status"], order["postOnly"], order["info"]["timeInForce"]) == ("open", True, "GTX")
    exchange.set_time(NOW + pd.Timedelta(minutes=31))
    assert client.fetch_order(order["id"], BTC)["status"] == "closed"
    assert client.fetch_my_trades(BTC)[0]["takerOrMaker"] == "maker"


def test_gtd_rests_until_its_date_then_expires(exchange, client, candles):
    later = candles[(candles["asset"] == "BTC") & (candles["bar_start"] >= NOW)].sort_values("bar_start")
    limit = round(float(later["low"].iloc[:15].min()) - 0.1, 1)  # no candle of the next 15 minutes reaches it
    until = later["bar_start"].iloc[15]  # the order's date: 15 minutes on
    assert (later["low"].iloc[15:] <= limit).any(), "the test needs the price to reach the limit after that"
    gtd = {"timeInForce": "GTD", "goodTillDate": ms(until) + 123}  # the milliseconds are dropped
    order = client.create_order(BTC, "limit", "buy", 0.01, limit, gtd)
    assert (order["status"], order["info"]["timeInForce"], order["info"]["goodTillDate"]) == ("open", "GTD", ms(until))
    exchange.set_time(candles["bar_end"].max())  # the price has reached the limit since: too late
    expired = client.fetch_order(order["id"], BTC)
    assert (expired["status"], expired["filled"], expired["lastUpdateTimestamp"]) == ("expired", 0, ms(until))
    now = candles["bar_end"].max()
    lasting = {"timeInForce": "GTD", "goodTillDate": ms(now + pd.Timedelta(hours=2))}
    fills = client.create_order(BTC, "limit", "buy", 0.01, round(last_close(candles, "BTC", now) + 50, 1), lasting)
    assert fills["status"] == "closed"  # marketable: fills at once like GTC
    with pytest.raises(ccxt.BadRequest, match="-5040"):  # at most 600 s ahead: refused
        client.create_order(
            BTC, "limit", "buy", 0.01, 20000.0, {"timeInForce": "GTD", "goodTillDate": ms(now) + 600_000}
        )
    with pytest.raises(ccxt.BadRequest, match="-1102"):
        client.create_order(BTC, "limit", "buy", 0.01, 20000.0, {"timeInForce": "GTD"})


def test_a_resting_reduce_only_order_fills_no_further_than_the_position(exchange, client, candles):
    price = last_close(candles, "BTC", NOW)
    client.create_order(BTC, "market", "buy", 0.01)
    later = candles[(candles["asset"] == "BTC") & (candles["bar_start"] >= NOW)].sort_values("bar_start")
    limit = round(float(later["high"].iloc[:30].max()) - 0.1, 1)
    assert limit > price, "the test needs the price to rise in the next half hour"
    order = client.create_order(BTC, "limit", "sell", 0.03, limit, {"reduceOnly": True})
    assert (order["reduceOnly"], order["status"]) == (True, "open")
    assert client.fetch_balance()["USDT"]["used"] == pytest.approx(0.01 * price / 20)  # holds no margin
    exchange.set_time(NOW + pd.Timedelta(minutes=31))
    done = client.fetch_order(order["id"], BTC)
    assert (done["status"], done["filled"]) == ("expired", 0.01)
    assert client.fetch_positions() == []
    with pytest.raises(ccxt.InvalidOrder, match="-2022"):  # nothing left to reduce
        client.create_order(BTC, "limit", "sell", 0.01, limit, {"reduceOnly": True})


# -- headers and fields ------------------------------------------------------------------------------------


def used_weight(client: ccxt.binanceusdm) -> int:
    return int(client.last_response_headers["X-MBX-USED-WEIGHT-1M"])


def test_every_answer_reports_the_weight_used_this_minute(exchange, client):
    """Binance's weights: account 5, klines of 1,000 rows 5, a book of 1,000 levels 20, an order 0.
    The count is per wall-clock minute: a step that crossed into a new minute starts again from its
    own weight."""
    steps = [
        (lambda: client.fetch_balance(), 5),
        (lambda: client.fetch_ohlcv(BTC, "1m", limit=1_000), 5),
        (lambda: client.fetch_order_book(BTC, 1_000), 20),
        (lambda: client.create_order(BTC, "market", "buy", 0.001), 0),
        (lambda: client.fetch_tickers(), 40),
    ]
    client.load_markets()
    before = used_weight(client)
    for step, weight in steps:
        step()
        after = used_weight(client)
        assert after == before + weight or after == weight
        before = after
    with pytest.raises(ccxt.AuthenticationError):
        client_of(exchange, secret="wrong").fetch_balance()  # an error carries it too
    assert int(exchange.request_counts()["GET /fapi/v3/account"]) == 2


def test_the_used_weight_starts_again_each_minute(exchange, client):
    minute = ms(pd.Timestamp("2026-01-01T10:00Z"))
    exchange.service.wall = lambda: minute + 59_999
    client.load_markets()  # exchangeInfo: 1
    client.fetch_balance()
    assert used_weight(client) == 1 + 5
    exchange.service.wall = lambda: minute + 60_000
    client.fetch_balance()
    assert used_weight(client) == 5


def test_positions_carry_the_break_even_price(client, candles):
    price = Decimal(repr(last_close(candles, "BTC", NOW)))
    client.create_order(BTC, "market", "buy", 0.01)
    client.create_order(ETH, "market", "sell", 0.1)
    eth_price = Decimal(repr(last_close(candles, "ETH", NOW)))
    risk = {row["symbol"]: row for row in client.fapiPrivateV3GetPositionRisk()}
    assert Decimal(risk["BTCUSDT"]["breakEvenPrice"]) == price * (1 + 2 * TAKER)
    assert Decimal(risk["ETHUSDT"]["breakEvenPrice"]) == eth_price * (1 - 2 * TAKER)
    v2 = {row["symbol"]: row for row in client.fapiPrivateV2GetPositionRisk()}
    assert v2["BTCUSDT"]["breakEvenPrice"] == risk["BTCUSDT"]["breakEvenPrice"]
    assert v2["DOGEUSDT"]["breakEvenPrice"] == "0"  # flat
