"""Contract tests: every endpoint the local exchange serves answers with the keys and the JSON types of
Binance's own published example (fixtures/binance/, their sources in fixtures/README.md).

A key of the example we do not send, or one we send that the example lacks, must be listed below
with the reason; every other key must be there, with the same JSON type (string, number, boolean,
list, object), recursively (each item of a list against the example's first item)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from prod_system.exchange import LocalExchange
from prod_system.exchange.server import CONTROL, PUBLIC, SIGNED
from prod_system_tests.kit.binance_clients import call

FIXTURES = Path(__file__).parent / "fixtures" / "binance"
NOW = pd.Timestamp("2023-07-21T00:00:30Z")

ORDER_ONLY_FIELDS = "the example is a TRAILING_STOP_MARKET order: activatePrice and priceRate exist for those only"
COIN_M_FIELDS = "COIN-M fields (cumBase, baseQty, pair) in this example; Binance's other USDT-M examples lack them"
QUERY_FIELDS = "the query-order example of the same order has them (our answers are one order shape)"

# (fixture, path) -> {key: why}. A path is the keys from the root, "[]" for the items of a list.
MISSING: dict[tuple[str, str], dict[str, str]] = {
    ("all_orders", "[]"): {"activatePrice": ORDER_ONLY_FIELDS, "priceRate": ORDER_ONLY_FIELDS}
    | {"cumBase": COIN_M_FIELDS, "pair": COIN_M_FIELDS},
    ("query_order", ""): {"activatePrice": ORDER_ONLY_FIELDS, "priceRate": ORDER_ONLY_FIELDS},
    ("open_order", ""): {"activatePrice": ORDER_ONLY_FIELDS, "priceRate": ORDER_ONLY_FIELDS},
    ("open_orders", "[]"): {"activatePrice": ORDER_ONLY_FIELDS, "priceRate": ORDER_ONLY_FIELDS},
    ("cancel_order", ""): {"activatePrice": ORDER_ONLY_FIELDS, "priceRate": ORDER_ONLY_FIELDS},
    ("user_trades", "[]"): {"baseQty": COIN_M_FIELDS, "pair": COIN_M_FIELDS},
    # the example merges every filter type's keys into one object; ours are one object per filter type
    ("exchange_info", "symbols.[].filters.[]"): {
        key: "one object per filter type, the example merges them"
        for key in (
            "maxPrice",
            "minPrice",
            "tickSize",
            "maxQty",
            "minQty",
            "stepSize",
            "limit",
            "notional",
            "multiplierUp",
            "multiplierDown",
            "multiplierDecimal",
        )
    },
}
EXTRA: dict[tuple[str, str], dict[str, str]] = {
    ("new_order", ""): {"avgPrice": QUERY_FIELDS, "cumQuote": QUERY_FIELDS, "time": QUERY_FIELDS},
    ("cancel_order", ""): {"avgPrice": QUERY_FIELDS, "cumQuote": QUERY_FIELDS, "time": QUERY_FIELDS},
    ("open_orders", "[]"): {"cumQty": "the new-order and cancel-order examples of the same order have it"},
    ("open_order", ""): {"cumQty": "the new-order and cancel-order examples of the same order have it"},
    ("query_order", ""): {"cumQty": "the new-order and cancel-order examples of the same order have it"},
    ("all_orders", "[]"): {"cumQty": "the new-order and cancel-order examples of the same order have it"},
    ("account_v2", "positions.[]"): {
        key: "the v3 position fields, which Binance's v2 answers also carry"
        for key in ("isolatedMargin", "notional", "isolatedWallet")
    },
    ("account_v3", "assets.[]"): {"marginAvailable": "the v2 example's asset field"},
    ("exchange_info", ""): {"futuresType": "Binance's live answers carry it (U_MARGINED)"},
    ("exchange_info", "symbols.[]"): {"maxMoveOrderLimit": "Binance's live answers carry it"},
    ("exchange_info", "assets.[]"): {},
}

# What each fixture's endpoint is called with (after the account holds a position, a resting order and
# trades): the query parameters.
REQUESTS: dict[str, dict] = {
    "time": {},
    "exchange_info": {},
    "klines": {"symbol": "BTCUSDT", "interval": "5m", "limit": 3},
    "ticker_24hr": {"symbol": "BTCUSDT"},
    "ticker_price": {"symbol": "BTCUSDT"},
    "ticker_price_v2": {"symbol": "BTCUSDT"},
    "depth": {"symbol": "BTCUSDT", "limit": 5},
    "premium_index": {"symbol": "BTCUSDT"},
    "funding_rate": {"symbol": "BTCUSDT"},
    "account_v3": {},
    "account_v2": {},
    "balance_v3": {},
    "balance_v2": {},
    "position_risk_v3": {"symbol": "BTCUSDT"},
    "position_risk_v2": {"symbol": "BTCUSDT"},
    "leverage_bracket": {},
    "position_side_dual": {},
    "multi_assets_margin": {},
    "new_order": {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.01", "price": "20000"}
    | {"timeInForce": "GTC"},
    "query_order": {"symbol": "BTCUSDT", "orderId": 1},
    "cancel_order": {"symbol": "BTCUSDT", "orderId": 2},
    "open_orders": {"symbol": "BTCUSDT"},
    "open_order": {"symbol": "BTCUSDT", "orderId": 3},
    "all_orders": {"symbol": "BTCUSDT"},
    "cancel_all": {"symbol": "ETHUSDT"},
    "user_trades": {"symbol": "BTCUSDT"},
    "leverage": {"symbol": "BTCUSDT", "leverage": 10},
    "symbol_config": {"symbol": "BTCUSDT"},
    "income": {},
}


def json_type(value) -> str:
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "list", dict: "object"}[type(value)]


def differences(name: str, ours, theirs, path: str = "") -> list[str]:
    """How ``ours`` departs from the example ``theirs``, beyond the listed differences."""
    where = f"{name}:{path or '<root>'}"
    if json_type(ours) != json_type(theirs):
        return [f"{where} is a {json_type(ours)}, Binance's is a {json_type(theirs)}"]
    found = []
    if isinstance(theirs, dict):
        missing = set(theirs) - set(ours) - set(MISSING.get((name, path), {}))
        extra = set(ours) - set(theirs) - set(EXTRA.get((name, path), {}))
        found += [f"{where} lacks {key!r}" for key in sorted(missing)]
        found += [f"{where} has {key!r}, Binance's example does not" for key in sorted(extra)]
        for key in set(ours) & set(theirs):
            found += differences(name, ours[key], theirs[key], f"{path}.{key}" if path else key)
    elif isinstance(theirs, list) and theirs and ours:
        item = f"{path}.[]" if path else "[]"
        if isinstance(theirs[0], list) and len({json_type(v) for v in theirs[0]}) > 1:  # a row: by position
            for row in ours:
                if len(row) != len(theirs[0]):
                    found.append(f"{where} has rows of {len(row)} items, Binance's of {len(theirs[0])}")
                found += [
                    f"{where}[{i}] is a {json_type(v)}, Binance's is a {json_type(theirs[0][i])}"
                    for i, v in enumerate(row)
                    if i < len(theirs[0]) and json_type(v) != json_type(theirs[0][i])
                ]
        else:
            for value in ours:
                found += differences(name, value, theirs[0], item)
    return found


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def exchange(snapshot) -> Iterator[LocalExchange]:
    """An account with a BTC position, trades, open BTC and ETH orders (order 1 filled, 2 and 3 open)."""
    with LocalExchange(f"parquet:{snapshot}") as local:
        local.set_time(NOW)
        market = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01"}
        resting = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.01", "timeInForce": "GTC"}
        eth = {"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.1", "timeInForce": "GTC"}
        for params in (market, resting | {"price": "20000"}, resting | {"price": "20001"}, eth | {"price": "1000"}):
            status, _, answer = call(local, "POST", "/fapi/v1/order", params, signed=True)
            assert status == 200, answer
        yield local


def test_every_served_endpoint_has_a_binance_example():
    served = {fixture(path.stem)["endpoint"] for path in FIXTURES.glob("*.json")}
    without = set(PUBLIC) | set(SIGNED)
    without -= served
    assert without == {"GET /fapi/v1/ping"}  # answers {}: Binance's example is an empty object too
    assert not set(CONTROL) & served
    assert set(REQUESTS) == {path.stem for path in FIXTURES.glob("*.json")}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_answers_have_the_keys_and_types_of_binances_example(exchange, name):
    example = fixture(name)
    method, path = example["endpoint"].split(" ")
    status, headers, answer = call(exchange, method, path, REQUESTS[name], signed=example["endpoint"] in SIGNED)
    assert status == 200, answer
    assert "X-MBX-USED-WEIGHT-1M" in headers
    if isinstance(answer, list):
        assert answer, f"{name}: the test's account must make the list non-empty"
    assert differences(name, answer, example["example"]) == []


def test_a_differing_answer_is_caught():
    """The comparison itself: a missing key, an extra key, a number sent as text, a short kline row."""
    order = fixture("query_order")["example"]
    assert differences("query_order", {**order, "orderId": "1"}, order) == [
        "query_order:orderId is a string, Binance's is a number"
    ]
    without = {key: value for key, value in order.items() if key != "status"}
    assert differences("query_order", without, order) == ["query_order:<root> lacks 'status'"]
    assert differences("query_order", {**order, "made_up": 1}, order) == [
        "query_order:<root> has 'made_up', Binance's example does not"
    ]
    row = fixture("klines")["example"][0]
    assert differences("klines", [row[:-1]], [row]) == ["klines:<root> has rows of 11 items, Binance's of 12"]
