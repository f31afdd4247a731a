"""The instruments table: its file read back exactly, Binance's own JSON read, a bad file refused in one
line naming the field, each asset's rules resolved from the right place, and never made up."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from prod_system.data.instruments import (
    FETCH_COMMAND,
    SNAPSHOT_KEY,
    bundled_instruments,
    fetch_instruments,
    parse_leverage_brackets,
    read_instruments,
    resolve_instruments,
)
from prod_system.data.market_data import read_snapshot_metadata, write_snapshot
from prod_system.errors import InstrumentsError
from prod_system.exchange import LocalExchange
from prod_system.trading.brokers.ccxt_client import binanceusdm_client
from prod_system_tests.kit.data import sim_config
from prod_system_tests.kit.instruments import other_candles, other_rules

# one USDT-M perpetual as GET /fapi/v1/exchangeInfo lists it (Binance's documented shape), with the
# entries a table must leave out: a quarterly contract and a symbol of another quote
ADA_INFO = {
    "symbol": "ADAUSDT",
    "pair": "ADAUSDT",
    "contractType": "PERPETUAL",
    "deliveryDate": 4133404800000,
    "onboardDate": 1580428800000,
    "status": "TRADING",
    "baseAsset": "ADA",
    "quoteAsset": "USDT",
    "marginAsset": "USDT",
    "pricePrecision": 5,
    "quantityPrecision": 0,
    "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "0.01740", "maxPrice": "20.00000", "tickSize": "0.00010"},
        {"filterType": "LOT_SIZE", "stepSize": "1", "maxQty": "10000000", "minQty": "1"},
        {"filterType": "MARKET_LOT_SIZE", "stepSize": "1", "maxQty": "2000000", "minQty": "1"},
        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
        {"filterType": "MIN_NOTIONAL", "notional": "5"},
        {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500", "multiplierDecimal": "4"},
    ],
}
OTHER_ENTRIES = [
    {**ADA_INFO, "symbol": "ADAUSDT_231229", "contractType": "CURRENT_QUARTER"},
    {**ADA_INFO, "symbol": "ADABUSD", "quoteAsset": "BUSD", "marginAsset": "BUSD"},
]


def test_a_table_written_reads_back_exactly(tmp_path):
    table = other_rules()
    read = read_instruments(table.write(tmp_path / "rules.json"))
    assert read.rules == table.rules  # every decimal exact, the brackets and dates too
    assert (read.source, read.brackets) == (table.source, table.brackets)


def test_binance_exchange_info_json_is_read_as_served(tmp_path):
    path = tmp_path / "exchangeInfo.json"
    path.write_text(json.dumps({"timezone": "UTC", "serverTime": 1690000000000, "symbols": [ADA_INFO, *OTHER_ENTRIES]}))
    table = read_instruments(path)
    assert list(table.rules) == ["ADA"]  # the perpetual only
    ada = table.rules["ADA"]
    assert ada.symbol == "ADAUSDT"  # not the quarterly, not the BUSD one
    assert (str(ada.step), str(ada.tick), str(ada.min_price), str(ada.market_max_qty)) == (
        "1",
        "0.00010",
        "0.01740",
        "2000000",
    )
    assert ada.onboard_date.isoformat() == "2020-01-31T00:00:00+00:00"
    assert (ada.price_precision, ada.quantity_precision) == (5, 0)
    assert ada.brackets is None and "not in exchangeInfo" in table.brackets  # never made up


def test_binance_leverage_bracket_json_is_read():
    answer = [
        {
            "symbol": "ADAUSDT",
            "notionalCoef": 1.0,
            "brackets": [b.to_json() for b in other_rules().rules["ADA"].brackets],
        }
    ]
    assert parse_leverage_brackets(answer, "test")["ADAUSDT"] == other_rules().rules["ADA"].brackets
    one = parse_leverage_brackets(answer[0], "test")  # Binance's answer for one symbol is an object
    assert one == parse_leverage_brackets(answer, "test")


def _ours(tmp_path: Path, change) -> Path:
    data = json.loads(other_rules().to_json())
    change(data)
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(data))
    return path


def _set(row: int, name: str, value):
    return lambda data: data["instruments"][row].__setitem__(name, value)


def _drop(row: int, name: str):
    return lambda data: data["instruments"][row].pop(name)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set(0, "step", "abc"), "instruments[0] (ADA): field 'step' is not a positive number: 'abc'"),
        (_set(1, "tick", "0"), "instruments[1] (LTC): field 'tick' is not a positive number: '0'"),
        (_drop(2, "max_qty"), "instruments[2] (TRX): field 'max_qty' is missing"),
        (_set(0, "asset", "ada-x"), "instruments[0]: asset 'ada-x' is not an upper-case alphanumeric name"),
        (_set(0, "min_qty", "100000000"), "instruments[0] (ADA): a minimum above its maximum"),
        (_set(0, "onboard_date", "yesterday"), "field 'onboard_date' is not a UTC time"),
        (_set(1, "asset", "ADA"), "instruments[1] (ADA): a second row for ADA"),
        (
            lambda data: data["instruments"][0]["brackets"][1].__setitem__("notionalFloor", 6000),
            "instruments[0] (ADA): the brackets do not cover notional from 0 without gaps",
        ),
        (lambda data: data.__setitem__("format", "v0"), "not an instruments file"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_and_field(tmp_path, change, message):
    path = _ours(tmp_path, change)
    with pytest.raises(InstrumentsError) as refused:
        read_instruments(path)
    text = str(refused.value)
    assert message in text and f"instruments file {path}" in text and "\n" not in text


def test_a_file_that_is_not_json_or_not_there_is_one_line(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(InstrumentsError, match=r"instruments file .*x.json: not valid JSON"):
        read_instruments(tmp_path / "x.json")
    with pytest.raises(InstrumentsError, match=r"instruments file .*none.json not found"):
        read_instruments(tmp_path / "none.json")


def test_the_bundled_rules_say_where_they_come_from():
    table = bundled_instruments()
    assert sorted(table.rules) == sorted(["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "DOT", "MATIC"])
    assert "ccxt/ccxt" in table.source and "no dated Binance source" in table.source  # where each row comes from
    assert "prod-system instruments" in table.source
    btc = table.rules["BTC"]  # Binance's BTCUSDT as that source has it
    assert (str(btc.min_price), str(btc.max_qty), str(btc.market_max_qty)) == ("556.8", "1000", "120")
    assert all(rules.brackets for rules in table.rules.values())


def test_each_asset_takes_its_rules_from_the_first_place_that_has_them(tmp_path, candles):
    """Config override > the config's file > the snapshot's table > bundled; origins recorded."""
    rules = other_rules()
    embedded = replace(rules, rules={a: replace(r, step=r.step * 10) for a, r in rules.rules.items()}, source="snap")
    hour = candles[candles["bar_end"] <= pd.Timestamp("2023-07-20T01:00:00Z")]
    snapshot = write_snapshot(
        pd.concat([other_candles(hour), hour[hour["asset"] == "BTC"]]),
        tmp_path / "others.parquet",
        metadata={SNAPSHOT_KEY: embedded.select(["ADA", "LTC"]).to_json()},
    )
    assert SNAPSHOT_KEY in read_snapshot_metadata(snapshot)
    file = rules.select(["LTC", "TRX"]).write(tmp_path / "rules.json")
    config = sim_config(
        snapshot,
        tmp_path,
        universe=["ADA", "LTC", "TRX", "BTC"],
        market_data={"source": f"parquet:{snapshot}", "instruments": str(file)},
        portfolio={"instruments": {"TRX": {"lot_size": 100, "min_notional": 50}}},
    )
    resolved, table = resolve_instruments(config)
    lots = {a: i.lot_size for a, i in resolved.portfolio.instruments.items()}
    assert lots == {"ADA": 10.0, "LTC": 0.001, "TRX": 100.0, "BTC": 0.001}
    assert table.origins["ADA"].startswith("snapshot:") and table.origins["LTC"].startswith("file:")
    assert table.origins["TRX"].startswith("config:") and table.origins["BTC"].startswith("bundled:")
    assert table.rules["TRX"] == rules.rules["TRX"]  # the exchange's row of an overridden asset, for the log dir
    assert resolved.portfolio.instruments["TRX"].min_notional == 50


def test_an_asset_without_rules_is_one_error_naming_the_command(tmp_path, snapshot):
    config = sim_config(snapshot, tmp_path, universe=["BTC", "ADA", "LTC"])  # the config takes it...
    with pytest.raises(InstrumentsError) as refused:
        resolve_instruments(config)  # ...the run's start refuses it
    assert str(refused.value).startswith(f"no exchange rules for ['ADA', 'LTC']: fetch them with {FETCH_COMMAND}")


def test_a_fetch_without_api_keys_records_that_the_brackets_were_not_fetched(candles):
    """The brackets endpoint is signed: without keys nothing is asked, nothing made up."""
    with LocalExchange(other_candles(candles), instruments=other_rules()) as exchange:
        client = binanceusdm_client(exchange.url)
        table = fetch_instruments(client, exchange.url, "no API key")
        assert "GET /fapi/v1/leverageBracket" not in exchange.request_counts()
    assert table.brackets == "not fetched: no API key"
    assert all(rules.brackets is None for rules in table.rules.values())
    assert {a: replace(r, brackets=None) for a, r in other_rules().rules.items()} == table.rules
