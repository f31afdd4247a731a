"""The local exchange driven by a second, independent client library: Binance's own
binance-futures-connector (``UMFutures``), which signs, encodes and parses on its own (requests, not
ccxt). Orders, queries, cancels and trades as its users call them, so the server is not fitted to
one client."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pandas as pd
import pytest
from binance.error import ClientError
from binance.um_futures import UMFutures

from prod_system.config import BINANCE_TAKER_FEE
from prod_system.exchange import LocalExchange
from prod_system_tests.kit.binance_clients import connector_of

NOW = pd.Timestamp("2023-07-21T00:00:30Z")


def last_close(candles: pd.DataFrame, asset: str, now: pd.Timestamp) -> Decimal:
    rows = candles[(candles["asset"] == asset) & (candles["bar_end"] <= now)]
    return Decimal(repr(float(rows.sort_values("bar_end")["close"].iloc[-1])))


@pytest.fixture
def exchange(snapshot) -> Iterator[LocalExchange]:
    with LocalExchange(f"parquet:{snapshot}") as local:
        local.set_time(NOW)
        yield local


@pytest.fixture
def futures(exchange) -> UMFutures:
    return connector_of(exchange)


def test_orders_queries_cancels_and_trades(exchange, futures, candles):
    price = last_close(candles, "BTC", NOW)
    below = str(round(price * Decimal("0.9"), 1))
    resting = futures.new_order(
        symbol="BTCUSDT", side="BUY", type="LIMIT", quantity=0.01, price=below, timeInForce="GTC", newClientOrderId="c1"
    )
    assert (resting["status"], resting["clientOrderId"], resting["timeInForce"]) == ("NEW", "c1", "GTC")
    market = futures.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.02, newOrderRespType="RESULT")
    assert (market["status"], market["executedQty"], Decimal(market["avgPrice"])) == ("FILLED", "0.02", price)
    ioc = futures.new_order(symbol="BTCUSDT", side="SELL", type="LIMIT", quantity=0.01, price=below, timeInForce="IOC")
    assert ioc["status"] == "NEW"  # ACK, the default: the order as accepted

    assert futures.query_order(symbol="BTCUSDT", orderId=ioc["orderId"])["status"] == "FILLED"
    assert futures.query_order(symbol="BTCUSDT", origClientOrderId="c1")["orderId"] == resting["orderId"]
    assert futures.get_open_orders(symbol="BTCUSDT", orderId=resting["orderId"])["price"] == below
    assert futures.get_open_orders(symbol="BTCUSDT", origClientOrderId="c1")["orderId"] == resting["orderId"]
    assert [o["orderId"] for o in futures.get_orders(symbol="BTCUSDT")] == [resting["orderId"]]
    history = futures.get_all_orders(symbol="BTCUSDT")
    assert [o["orderId"] for o in history] == [resting["orderId"], market["orderId"], ioc["orderId"]]

    trades = futures.get_account_trades(symbol="BTCUSDT")
    assert [(t["orderId"], t["side"], t["qty"]) for t in trades] == [
        (market["orderId"], "BUY", "0.02"),
        (ioc["orderId"], "SELL", "0.01"),
    ]
    assert sum(Decimal(t["commission"]) for t in trades) == Decimal("0.03") * price * Decimal(repr(BINANCE_TAKER_FEE))
    [position] = futures.get_position_risk(symbol="BTCUSDT")
    assert (position["positionAmt"], Decimal(position["entryPrice"])) == ("0.01", price)

    cancelled = futures.cancel_order(symbol="BTCUSDT", orderId=resting["orderId"])
    assert cancelled["status"] == "CANCELED"
    with pytest.raises(ClientError) as unknown:
        futures.cancel_order(symbol="BTCUSDT", orderId=resting["orderId"])
    assert (unknown.value.status_code, unknown.value.error_code) == (400, -2011)
    with pytest.raises(ClientError) as gone:
        futures.get_open_orders(symbol="BTCUSDT", orderId=resting["orderId"])
    assert gone.value.error_code == -2013

    for k in range(3):
        futures.new_order(
            symbol="ETHUSDT", side="BUY", type="LIMIT", quantity=0.1, price=str(1000 + k), timeInForce="GTX"
        )
    assert futures.cancel_open_orders(symbol="ETHUSDT") == {
        "code": 200,
        "msg": "The operation of cancel all open order is done.",
    }
    assert futures.get_orders() == []


def test_leverage_market_data_and_the_weight_header(exchange, candles):
    futures = connector_of(exchange, show_limit_usage=True)
    answer = futures.change_leverage(symbol="BTCUSDT", leverage=10)
    assert answer["data"] == {
        "leverage": 10,
        "maxNotionalValue": answer["data"]["maxNotionalValue"],
        "symbol": "BTCUSDT",
    }
    assert int(answer["limit_usage"]["x-mbx-used-weight-1m"]) >= 1
    assert futures.symbol_configuration(symbol="BTCUSDT")["data"][0]["leverage"] == 10
    price = last_close(candles, "BTC", NOW)
    assert Decimal(futures.ticker_price(symbol="BTCUSDT")["data"]["price"]) == price
    assert Decimal(futures.mark_price(symbol="BTCUSDT")["data"]["markPrice"]) == price
    assert Decimal(futures.ticker_24hr_price_change(symbol="BTCUSDT")["data"]["lastPrice"]) == price
    book = futures.depth(symbol="BTCUSDT", limit=5)["data"]
    assert Decimal(book["bids"][0][0]) < price < Decimal(book["asks"][0][0])
    bars = futures.klines(symbol="BTCUSDT", interval="15m", limit=2)["data"]
    assert bars[-1][0] == NOW.floor("15min").value // 1_000_000
    with pytest.raises(ClientError) as invalid:
        futures.change_leverage(symbol="BTCUSDT", leverage=200)
    assert invalid.value.error_code == -4028
