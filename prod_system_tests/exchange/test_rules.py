"""The local exchange's rules come from an instruments table, served exactly (exchangeInfo filters, each
symbol's own leverage brackets) and enforced as Binance enforces them; an asset without rules is refused
at start, never given made-up ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import ccxt
import pandas as pd
import pytest

from prod_system.data.instruments import parse_exchange_info, parse_leverage_brackets
from prod_system.errors import InstrumentsError
from prod_system.exchange import LocalExchange
from prod_system.exchange.server import ServerOptions, exchange_rules
from prod_system.trading.brokers.ccxt_client import binanceusdm_client, symbol_of
from prod_system_tests.kit.instruments import OTHERS, other_candles, other_rules

NOW = pd.Timestamp("2023-07-21T00:00:30Z")


@pytest.fixture
def exchange(candles) -> Iterator[LocalExchange]:
    with LocalExchange(other_candles(candles), instruments=other_rules()) as local:
        local.set_time(NOW)
        yield local


@pytest.fixture
def client(exchange) -> ccxt.binanceusdm:
    return binanceusdm_client(exchange.url, exchange.api_key, exchange.api_secret, timeout_ms=5_000)


def test_exchange_info_and_brackets_serve_the_table_exactly(client):
    table = other_rules().rules
    served = parse_exchange_info(client.fapiPublicGetExchangeInfo()["symbols"], "exchangeInfo")
    assert served == {asset: replace(rules, brackets=None) for asset, rules in table.items()}
    brackets = parse_leverage_brackets(client.fapiPrivateGetLeverageBracket(), "leverageBracket")
    assert brackets == {rules.symbol: rules.brackets for rules in table.values()}  # each symbol its own
    one = parse_leverage_brackets(client.fapiPrivateGetLeverageBracket({"symbol": "LTCUSDT"}), "one")
    assert one == {"LTCUSDT": table["LTC"].brackets}
    markets = client.load_markets()
    for asset in OTHERS:
        market = markets[symbol_of(asset)]
        assert market["precision"]["amount"] == float(table[asset].step)
        assert market["precision"]["price"] == float(table[asset].tick)
        assert market["limits"]["cost"]["min"] == float(table[asset].min_notional)


def _order(client, asset: str, quantity: str, price: str | None = None) -> dict:
    """An order sent as typed (ccxt's create_order would round the quantity to the step first)."""
    params = {"symbol": f"{asset}USDT", "side": "BUY", "type": "MARKET", "quantity": quantity}
    if price is not None:
        params.update(type="LIMIT", price=price, timeInForce="GTC")
    return client.fapiPrivatePostOrder(params)


@pytest.mark.parametrize(
    ("asset", "quantity", "price", "code"),
    [
        ("ADA", "0.5", None, "-1111"),  # ADA trades in steps of 1
        ("TRX", "10.5", None, "-1111"),
        ("LTC", "1", "25.005", "-4014"),  # LTC ticks 0.01
        ("TRX", "1000", "0.077775", "-4014"),  # TRX ticks 0.00001
        ("LTC", "1", "0.001", "-4013"),  # under PRICE_FILTER minPrice
        ("ADA", "2000001", None, "-4005"),  # over MARKET_LOT_SIZE maxQty (LOT_SIZE's is higher)
        ("LTC", "0.005", None, "-4004"),  # under LTC's LOT_SIZE minQty (0.01), on its step (0.001)
        ("LTC", "0.5", None, "-4164"),  # 0.5 x ~25 USDT, under LTC's 20 USDT min notional
    ],
)
def test_the_exchange_refuses_what_binance_would_under_the_rules(client, asset, quantity, price, code):
    with pytest.raises(ccxt.ExchangeError, match=code):
        _order(client, asset, quantity, price)


def test_the_exchange_accepts_what_the_rules_allow(client):
    assert _order(client, "ADA", "20")["origQty"] == "20"
    assert _order(client, "ADA", "2000001", "0.5")["status"] == "NEW"  # a limit order: LOT_SIZE's max
    assert _order(client, "LTC", "1", "20.01")["price"] == "20.01"
    assert _order(client, "TRX", "1000", "0.07777")["price"] == "0.07777"


def test_an_asset_without_rules_is_refused_at_start(candles):
    with pytest.raises(InstrumentsError) as refused:
        LocalExchange(other_candles(candles))  # neither given rules nor a snapshot's, and none bundled
    assert str(refused.value).startswith(
        "no exchange rules for ['ADA', 'LTC', 'TRX']: fetch them with prod-system instruments"
    )
    fetched_without_keys = replace(
        other_rules(),
        rules={asset: replace(rules, brackets=None) for asset, rules in other_rules().rules.items()},
        brackets="not fetched: no API key",
    )
    with pytest.raises(InstrumentsError, match=r"no leverage brackets for \['ADA', 'LTC', 'TRX'\]"):
        LocalExchange(other_candles(candles), instruments=fetched_without_keys)


def test_binance_exchange_info_and_bracket_files_make_the_rules(tmp_path, candles):
    """exchange-sim --instruments exchangeInfo.json --brackets leverageBracket.json: what Binance serves."""
    with LocalExchange(other_candles(candles), instruments=other_rules()) as local:
        client = binanceusdm_client(local.url, local.api_key, local.api_secret)
        (tmp_path / "info.json").write_text(json.dumps(client.fapiPublicGetExchangeInfo()))
        (tmp_path / "brackets.json").write_text(json.dumps(client.fapiPrivateGetLeverageBracket()))
    options = ServerOptions(other_candles(candles), "k", "s", instruments=tmp_path / "info.json")
    without = exchange_rules(options, OTHERS)
    assert all(rules.brackets is None for rules in without.rules.values())
    options.brackets = tmp_path / "brackets.json"
    assert exchange_rules(options, OTHERS).rules == other_rules().rules
