"""The local exchange, driven by the real ccxt binanceusdm client over HTTP (no real exchange host is contacted)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal

import ccxt
import pandas as pd
import pytest

from prod_system.config import BINANCE_TAKER_FEE
from prod_system.data.instruments import bundled_instruments
from prod_system.exchange import LocalExchange, parse_rules
from prod_system.exchange.engine import EngineConfig
from prod_system.trading.brokers.ccxt_client import symbol_of
from prod_system_tests.kit.binance_clients import client_of
from prod_system_tests.kit.exchange import last_close, ms

NOW = pd.Timestamp("2023-07-21T00:00:30Z")
BTC, DOGE, ETH = symbol_of("BTC"), symbol_of("DOGE"), symbol_of("ETH")


@pytest.fixture
def exchange(snapshot) -> Iterator[LocalExchange]:
    with LocalExchange(f"parquet:{snapshot}") as local:
        local.set_time(NOW)
        yield local


@pytest.fixture
def client(exchange) -> ccxt.binanceusdm:
    return client_of(exchange, timeout_ms=5_000)


def control(exchange: LocalExchange, path: str, body: object = None, api_key: str | None = None) -> dict:
    """Call a /_control/ endpoint with the account's key (or another) and return its JSON."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(exchange.url + path, data=data, method="POST" if data else "GET")
    request.add_header("X-MBX-APIKEY", exchange.api_key if api_key is None else api_key)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


# -- market data -----------------------------------------------------------------------------------


def test_load_markets_reports_the_instrument_filters(client):
    """Without a rules file, a snapshot without an embedded table is served the bundled rules."""
    markets = client.load_markets()
    bundled = bundled_instruments().rules
    assert sorted(m["base"] for m in markets.values()) == sorted(bundled)
    for asset, rules in bundled.items():
        market = markets[symbol_of(asset)]
        assert (market["swap"], market["linear"], market["settle"], market["active"]) == (True, True, "USDT", True)
        assert market["precision"]["amount"] == float(rules.step)
        assert market["precision"]["price"] == float(rules.tick)
        assert market["limits"]["amount"]["min"] == float(rules.min_qty)
        assert market["limits"]["amount"]["max"] == float(rules.max_qty)
        assert market["limits"]["cost"]["min"] == float(rules.min_notional) == 5


def test_fetch_ohlcv_replays_the_snapshot_up_to_now(client, candles):
    since = NOW.floor("min") - pd.Timedelta(minutes=10)
    rows = client.fetch_ohlcv(BTC, "1m", since=ms(since), limit=100)
    btc = candles[candles["asset"] == "BTC"].set_index("bar_start")
    assert [row[0] for row in rows] == [ms(since + pd.Timedelta(minutes=i)) for i in range(11)]
    for stamp, *values in rows[:-1]:
        candle = btc.loc[pd.Timestamp(stamp, unit="ms", tz="UTC")]
        assert values == [candle[f] for f in ("open", "high", "low", "close", "volume")]
    in_progress = btc.loc[NOW.floor("min")]
    assert rows[-1][1:] == [in_progress["open"]] * 4 + [0.0]
    assert client.fetch_ohlcv(BTC, "1m", limit=3)[-1][0] == ms(NOW.floor("min"))
    with pytest.raises(ccxt.BadRequest, match="-1120"):  # an interval Binance does not have
        client.fapiPublicGetKlines({"symbol": "BTCUSDT", "interval": "7m"})


def test_time_and_prices_follow_the_manual_clock_to_the_end_of_the_data(exchange, client, candles):
    assert client.fetch_time() == ms(NOW)
    end = candles["bar_end"].max() + pd.Timedelta(hours=1)
    exchange.set_time(end)
    assert client.fetch_ohlcv(BTC, "1m", limit=2)[-1][0] == ms(candles["bar_start"].max())
    order = client.create_order(BTC, "market", "buy", 0.001)
    assert order["average"] == last_close(candles, "BTC", end)
    with pytest.raises(ValueError, match="cannot go back"):
        exchange.set_time(NOW)
    with pytest.raises(urllib.error.HTTPError) as refused:
        control(exchange, "/_control/clock", {"now_ms": ms(NOW)})
    assert refused.value.code == 400


def test_shifted_clock_replays_the_snapshot_from_the_start_minute_in_real_time(candles):
    before = pd.Timestamp.now(tz="UTC")
    with LocalExchange(candles, clock="shifted") as exchange:
        after = pd.Timestamp.now(tz="UTC")
        client = client_of(exchange)
        first = client.fetch_ohlcv(BTC, "1m", limit=5)[0]
        assert ms(before.floor("min")) <= first[0] <= ms(after.floor("min"))
        assert first[1] == candles[candles["asset"] == "BTC"].sort_values("bar_start")["open"].iloc[0]
        assert abs(client.fetch_time() - ms(pd.Timestamp.now(tz="UTC"))) < 1_000


def test_market_orders_are_refused_before_the_first_candle_closes(snapshot, candles):
    with LocalExchange(f"parquet:{snapshot}") as exchange:
        client = client_of(exchange)
        assert client.fetch_time() == ms(candles["bar_start"].min())
        with pytest.raises(ccxt.MarketClosed):
            client.create_order(BTC, "market", "buy", 0.001)
        assert client.create_order(BTC, "limit", "buy", 0.001, 20000.0)["status"] == "open"


# -- account and orders ---------------------------------------------------------------------------------


def test_a_fresh_account_has_its_initial_balance_and_no_positions(client):
    balance = client.fetch_balance()["USDT"]
    assert (balance["total"], balance["free"], balance["used"]) == (1_000_000, 1_000_000, 0)
    assert client.fetch_positions() == []
    assert client.fetch_open_orders(BTC) == []


def test_market_order_fills_at_the_last_close_and_pays_the_taker_fee(client, candles):
    price = last_close(candles, "BTC", NOW)
    order = client.create_order(BTC, "market", "buy", 0.01)
    assert (order["status"], order["filled"], order["average"]) == ("closed", 0.01, price)
    assert order["timestamp"] == ms(NOW)
    [trade] = client.fetch_my_trades(BTC)
    assert (trade["order"], trade["price"], trade["amount"], trade["takerOrMaker"]) == (
        order["id"],
        price,
        0.01,
        "taker",
    )
    assert trade["fee"] == {"currency": "USDT", "cost": pytest.approx(0.01 * price * BINANCE_TAKER_FEE, abs=1e-9)}
    [position] = client.fetch_positions()
    assert (position["symbol"], position["side"], position["contracts"], position["entryPrice"]) == (
        BTC,
        "long",
        0.01,
        price,
    )
    assert client.fetch_balance()["USDT"]["total"] == pytest.approx(
        1_000_000 - 0.01 * price * BINANCE_TAKER_FEE, abs=1e-9
    )


def test_limit_order_rests_then_fills_as_maker_when_a_later_candle_trades_through(exchange, client, candles):
    price = last_close(candles, "BTC", NOW)
    later = candles[(candles["asset"] == "BTC") & (candles["bar_start"] >= NOW)].sort_values("bar_start")
    limit = round(float(later["low"].iloc[:30].min()) + 0.1, 1)
    assert limit < price, "the test needs the price to dip in the next half hour"
    order = client.create_order(BTC, "limit", "buy", 0.02, limit, {"clientOrderId": "dip-buy"})
    assert (order["status"], order["filled"]) == ("open", 0)
    assert [o["id"] for o in client.fetch_open_orders(BTC)] == [order["id"]]
    exchange.set_time(NOW + pd.Timedelta(minutes=31))
    filled = client.fetch_order(order["id"], BTC)
    assert (filled["status"], filled["filled"], filled["average"]) == ("closed", 0.02, limit)
    [trade] = client.fetch_my_trades(BTC)
    first_through = later[later["low"] <= limit].iloc[0]
    assert trade["timestamp"] == ms(first_through["bar_end"])
    assert trade["takerOrMaker"] == "maker"
    assert trade["fee"]["cost"] == pytest.approx(0.02 * limit * 0.0002, abs=1e-9)
    assert client.fetch_open_orders() == []


def test_marketable_limit_order_fills_at_once_at_the_current_price(client, candles):
    price = last_close(candles, "ETH", NOW)
    order = client.create_order(ETH, "limit", "sell", 0.5, round(price - 5, 2))
    assert (order["status"], order["average"]) == ("closed", price)
    assert client.fetch_my_trades(ETH)[0]["takerOrMaker"] == "taker"


def test_orders_are_found_by_id_and_client_id_and_cancelled(client, candles):
    below = round(last_close(candles, "BTC", NOW) * 0.9, 1)
    client_id = "rest:1/a.b_c-d"  # every character Binance allows, some percent-encoded in the signed query
    order = client.create_order(BTC, "limit", "buy", 0.01, below, {"clientOrderId": client_id})
    assert order["clientOrderId"] == client_id
    for key in ("clientOrderId", "origClientOrderId"):
        assert client.fetch_order(None, BTC, {key: client_id})["id"] == order["id"]
    assert client.fetch_order(order["id"], BTC)["price"] == below
    assert [o["id"] for o in client.fetch_open_orders()] == [order["id"]]
    assert client.cancel_order(order["id"], BTC)["status"] == "canceled"
    assert client.fetch_open_orders(BTC) == []
    with pytest.raises(ccxt.OrderNotFound):
        client.cancel_order(order["id"], BTC)
    with pytest.raises(ccxt.OrderNotFound):
        client.fetch_order("999999", BTC)
    with pytest.raises(ccxt.OrderNotFound):
        client.fetch_order(order["id"], ETH)


def test_a_client_order_id_is_unique_among_open_orders_only(exchange, client, candles):
    """Binance's rule: newClientOrderId is "a unique id among open orders". The id of a resting order is
    refused (-4116, nothing placed); once an order has filled or been cancelled, its id is accepted and
    trades again: the exchange does not deduplicate a client's orders."""
    below = round(last_close(candles, "BTC", NOW) * 0.9, 1)
    resting = client.create_order(BTC, "limit", "buy", 0.01, below, {"clientOrderId": "resting"})
    with pytest.raises(ccxt.InvalidOrder, match="-4116"):
        client.create_order(BTC, "market", "buy", 0.001, None, {"clientOrderId": "resting"})
    assert exchange.engine.counts()["orders"] == 1
    client.cancel_order(resting["id"], BTC)
    again = client.create_order(BTC, "limit", "buy", 0.01, below, {"clientOrderId": "resting"})
    assert again["id"] != resting["id"]
    assert client.fetch_order(None, BTC, {"origClientOrderId": "resting"})["id"] == again["id"]  # the latest
    client.create_order(BTC, "market", "buy", 0.001, None, {"clientOrderId": "filled"})
    client.create_order(BTC, "market", "buy", 0.001, None, {"clientOrderId": "filled"})  # filled: accepted again
    assert len(client.fetch_my_trades(BTC)) == 2
    assert exchange.engine.counts()["orders"] == 4

    for bad in ("has spaces", "x" * 37):
        with pytest.raises(ccxt.BadRequest, match="-4015"):
            client.create_order(BTC, "market", "buy", 0.001, None, {"clientOrderId": bad})


def test_the_strict_option_refuses_a_client_order_id_forever(snapshot):
    with LocalExchange(f"parquet:{snapshot}", config=EngineConfig(strict_client_order_ids=True)) as strict:
        strict.set_time(NOW)
        client = client_of(strict)
        client.create_order(BTC, "market", "buy", 0.001, None, {"clientOrderId": "once"})
        with pytest.raises(ccxt.InvalidOrder, match="-4116"):
            client.create_order(BTC, "market", "buy", 0.001, None, {"clientOrderId": "once"})
        assert strict.engine.counts()["orders"] == 1


def test_orders_below_the_min_notional_are_invalid_unless_reduce_only(client, candles):
    with pytest.raises(ccxt.InvalidOrder, match="-4164"):
        client.create_order(DOGE, "market", "buy", 10)  # 10 DOGE ~ 0.7 USDT
    client.create_order(DOGE, "market", "buy", 100)
    closed = client.create_order(DOGE, "market", "sell", 10, None, {"reduceOnly": True})
    assert closed["status"] == "closed"
    assert client.fetch_positions([DOGE])[0]["contracts"] == 90
    with pytest.raises(ccxt.InvalidOrder, match="-2022"):
        client.create_order(BTC, "market", "sell", 0.001, None, {"reduceOnly": True})


def test_quantities_off_the_lot_step_and_prices_off_the_tick_are_refused(client, candles):
    with pytest.raises(ccxt.BadRequest, match="-1111"):
        client.fapiPrivatePostOrder({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.0015"})
    with pytest.raises(ccxt.BadRequest, match="-4014"):
        client.fapiPrivatePostOrder(
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.001",
                "price": "20000.05",
            }
        )
    # ccxt itself truncates amounts to the lot step before sending
    assert client.create_order(BTC, "market", "buy", 0.0019)["amount"] == 0.001


def test_margin_beyond_the_balance_is_insufficient(client, candles):
    """A limit order at the last price: a market one this size is over BTCUSDT's MARKET_LOT_SIZE (-4005)."""
    price = last_close(candles, "BTC", NOW)
    too_much = round(1_000_000 * 20 / price * 1.01, 3)
    with pytest.raises(ccxt.InsufficientFunds, match="-2019"):
        client.create_order(BTC, "limit", "buy", too_much, price)


def test_round_trip_accounting_is_exact(exchange, client, candles):
    """Buy, flip short, close: realized PnL, fees, wallet and positions to 1e-9."""
    taker = Decimal(repr(BINANCE_TAKER_FEE))
    times = [NOW, NOW + pd.Timedelta(minutes=45), NOW + pd.Timedelta(hours=3)]
    p1, p2, p3 = (Decimal(repr(last_close(candles, "ETH", t))) for t in times)
    client.create_order(ETH, "market", "buy", 0.1)
    client.create_order(ETH, "market", "buy", 0.2)
    [position] = client.fetch_positions()
    assert position["info"]["positionAmt"] == "0.3"
    exchange.set_time(times[1])
    client.create_order(ETH, "market", "sell", 0.5)
    [short] = client.fetch_positions()
    assert (short["side"], short["contracts"], short["entryPrice"]) == ("short", 0.2, float(p2))
    assert short["info"]["positionAmt"] == "-0.2"
    exchange.set_time(times[2])
    client.create_order(ETH, "market", "buy", 0.2)
    assert client.fetch_positions() == []
    trades = client.fetch_my_trades(ETH)
    realized = [Decimal(t["info"]["realizedPnl"]) for t in trades]
    assert realized == [0, 0, Decimal("0.3") * (p2 - p1), Decimal("0.2") * (p2 - p3)]
    fees = taker * (Decimal("0.3") * p1 + Decimal("0.5") * p2 + Decimal("0.2") * p3)
    assert sum(Decimal(t["info"]["commission"]) for t in trades) == fees
    wallet = Decimal(1_000_000) + sum(realized) - fees
    balance = client.fetch_balance()
    assert Decimal(balance["info"]["totalWalletBalance"]) == wallet
    assert balance["USDT"]["total"] == pytest.approx(float(wallet), abs=1e-9)


# -- authentication ---------------------------------------------------------------------------------


def test_a_wrong_key_secret_or_timestamp_is_refused(exchange):
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        client_of(exchange, api_key="someone-else").fetch_balance()
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        client_of(exchange, secret="not-the-secret").fetch_balance()
    stale = client_of(exchange)
    stale.options["timeDifference"] = 30_000  # signs 30 s in the past, beyond ccxt's 10 s recvWindow
    with pytest.raises(ccxt.InvalidNonce, match="-1021"):
        stale.fetch_balance()
    stale.options["recvWindow"] = 60_000
    assert stale.fetch_balance()["USDT"]["total"] == 1_000_000


def test_control_endpoints_need_the_account_key_and_count_requests(exchange, client):
    with pytest.raises(urllib.error.HTTPError) as refused:
        control(exchange, "/_control/state", api_key="")
    assert refused.value.code == 401
    client.fetch_balance()
    client.fetch_balance()
    state = control(exchange, "/_control/state")
    assert state["requests"]["GET /fapi/v3/account"] == 2
    assert (state["now_ms"], state["orders"], state["trades"]) == (ms(NOW), 0, 0)
    assert control(exchange, "/_control/faults", [{"endpoint": "*", "kind": "latency", "delay_ms": 1}]) == {"rules": 1}
    with pytest.raises(urllib.error.HTTPError) as bad_rule:
        control(exchange, "/_control/faults", [{"endpoint": "*", "kind": "explode"}])
    assert bad_rule.value.code == 400


# -- faults ------------------------------------------------------------------------------------------


def test_latency_delays_only_the_chosen_endpoint(exchange, client):
    exchange.set_faults([{"endpoint": "GET /fapi/v1/time", "kind": "latency", "delay_ms": 300}])
    started = time.monotonic()
    client.fetch_time()
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    client.fetch_ohlcv(BTC, "1m", limit=1)
    assert time.monotonic() - started < 0.3


def test_a_timeout_before_processing_places_nothing_and_after_processing_places_the_order(exchange):
    client = client_of(exchange, timeout_ms=300)
    exchange.set_faults([{"endpoint": "POST /fapi/v1/order", "kind": "timeout", "delay_ms": 5_000}])
    with pytest.raises(ccxt.RequestTimeout):
        client.create_order(BTC, "market", "buy", 0.001, None, {"clientOrderId": "lost"})
    assert exchange.engine.counts()["orders"] == 0
    exchange.set_faults([{"endpoint": "POST /fapi/v1/order", "kind": "timeout", "delay_ms": 5_000, "after": True}])
    with pytest.raises(ccxt.RequestTimeout):
        client.create_order(BTC, "market", "buy", 0.001, None, {"clientOrderId": "placed"})
    assert client.fetch_order(None, BTC, {"clientOrderId": "placed"})["status"] == "closed"
    assert exchange.request_counts()["POST /fapi/v1/order"] == 2


def test_server_errors_fail_the_call_and_with_after_the_order_still_exists(exchange, client):
    exchange.set_faults([{"endpoint": "POST /fapi/v1/order", "kind": "server_error", "body": "text"}])
    with pytest.raises(ccxt.ExchangeNotAvailable):
        client.create_order(BTC, "market", "buy", 0.001)
    exchange.set_faults([{"endpoint": "*", "kind": "server_error", "status": 502, "body": "text", "count": 1}])
    with pytest.raises(ccxt.ExchangeNotAvailable):
        client.fetch_balance()
    assert client.fetch_balance()["USDT"]["total"] == 1_000_000  # the count was used up
    exchange.set_faults([{"endpoint": "POST /fapi/v1/order", "kind": "server_error", "after": True}])
    with pytest.raises(ccxt.OperationFailed, match="-1001"):  # Binance's JSON body: ccxt maps -1001
        client.create_order(BTC, "market", "buy", 0.001, None, {"clientOrderId": "placed-anyway"})
    assert client.fetch_order(None, BTC, {"clientOrderId": "placed-anyway"})["filled"] == 0.001


def test_rate_limit_answers_429_with_retry_after(exchange, client):
    exchange.set_faults([{"endpoint": "GET /fapi/v3/account", "kind": "rate_limit", "retry_after": 3}])
    with pytest.raises(ccxt.DDoSProtection, match="-1003"):
        client.fetch_balance()
    assert client.last_response_headers["Retry-After"] == "3"


def test_reject_answers_the_chosen_binance_error(exchange, client):
    exchange.set_faults([{"endpoint": "POST /fapi/v1/order", "kind": "reject"}])
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order(BTC, "market", "buy", 0.001)
    exchange.set_faults([{"endpoint": "POST /fapi/v1/order", "kind": "reject", "code": -4164, "msg": "Too small."}])
    with pytest.raises(ccxt.InvalidOrder, match="-4164"):
        client.create_order(BTC, "market", "buy", 0.001)
    assert exchange.engine.counts()["orders"] == 0


def test_partial_fills_expire_market_orders_and_leave_limit_orders_open(exchange, client, candles):
    exchange.set_faults([{"endpoint": "POST /fapi/v1/order", "kind": "partial_fill", "fraction": 0.37}])
    market = client.create_order(BTC, "market", "buy", 0.01)
    assert (market["status"], market["filled"], market["amount"]) == ("expired", 0.003, 0.01)
    limit = client.create_order(BTC, "limit", "buy", 0.01, last_close(candles, "BTC", NOW) + 100)
    assert (limit["status"], limit["filled"], limit["info"]["status"]) == ("open", 0.003, "PARTIALLY_FILLED")
    assert client.fetch_positions()[0]["contracts"] == 0.006


def test_probabilistic_rules_fire_reproducibly():
    def pattern():
        [rule] = parse_rules([{"endpoint": "*", "kind": "latency", "probability": 0.5, "seed": 7}])
        return [rule.fire() for _ in range(20)]

    assert pattern() == pattern() and 0 < sum(pattern()) < 20


# -- restarts and the command line -------------------------------------------------------------------------


def test_a_restarted_server_keeps_orders_trades_positions_and_its_clock(snapshot, tmp_path, candles):
    state = tmp_path / "state.json"
    config = EngineConfig(taker_fee=Decimal("0.0005"))
    with LocalExchange(f"parquet:{snapshot}", state_path=state, config=config) as first:
        first.set_time(NOW)
        client = client_of(first)
        client.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "before-restart"})
        resting = client.create_order(BTC, "limit", "buy", 0.01, 20000.0, {"clientOrderId": "resting"})
        before = (client.fetch_balance()["USDT"], client.fetch_positions(), client.fetch_my_trades(BTC))
    with LocalExchange(f"parquet:{snapshot}", state_path=state, config=config) as second:
        client = client_of(second)
        assert client.fetch_time() == ms(NOW)
        assert (client.fetch_balance()["USDT"], client.fetch_positions(), client.fetch_my_trades(BTC)) == before
        assert [o["id"] for o in client.fetch_open_orders(BTC)] == [resting["id"]]
        with pytest.raises(ccxt.InvalidOrder, match="-4116"):  # still open after the restart
            client.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "resting"})
        assert int(client.create_order(BTC, "market", "sell", 0.01)["id"]) > int(resting["id"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment() -> dict[str, str]:
    """This process's environment without exchange credentials, so only the test's own count."""
    return {k: v for k, v in os.environ.items() if k not in ("EXCHANGE_API_KEY", "EXCHANGE_API_SECRET")}


def _run_entry_point(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "prod_system.exchange", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=_environment())


def test_the_entry_point_serves_the_api(snapshot):
    port = _free_port()
    secret = "do-not-print-me"
    args = ["--market-data", f"parquet:{snapshot}", "--port", str(port), "--clock", "original", "--speed", "60"]
    server = subprocess.Popen(
        [sys.executable, "-m", "prod_system.exchange", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**_environment(), "EXCHANGE_API_KEY": "key", "EXCHANGE_API_SECRET": secret},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/fapi/v1/time", timeout=1) as response:
                    server_time = json.loads(response.read())["serverTime"]
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the exchange did not start"
                time.sleep(0.1)
        assert server_time >= ms(pd.Timestamp("2023-07-20", tz="UTC"))
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}" in output and secret not in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--market-data", "parquet:no/such.parquet", "--api-key", "k", "--api-secret", "s"], "not found"),
        (["--market-data", "x.parquet", "--api-key", "k", "--api-secret", "s", "--speed", "0"], "--speed"),
        (["--market-data", "x.parquet", "--api-key", "k"], "EXCHANGE_API_SECRET"),
    ],
)
def test_the_entry_point_rejects_bad_input_with_one_line(args, message):
    done = _run_entry_point(*args)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr


def test_a_restart_keeps_the_history_it_started_with(tmp_path, snapshot):
    """A shifted exchange with a day of history, restarted on its state file: the same market (the
    same candle opens at the same time); restarted with another history: refused in one message."""
    state = tmp_path / "state.json"
    day = pd.Timedelta(days=1)
    with LocalExchange(f"parquet:{snapshot}", clock="shifted", history=day, state_path=state) as exchange:
        first_open, shift = exchange.engine.market.first_open_ms, exchange.engine.market.shift_ms
        assert exchange.engine.market.price("BTC", exchange.engine.now_ms()) is not None  # prices at once
    with LocalExchange(f"parquet:{snapshot}", clock="shifted", history=day, state_path=state) as again:
        assert (again.engine.market.first_open_ms, again.engine.market.shift_ms) == (first_open, shift)
    with pytest.raises(ValueError, match="1440 minutes of history, not 0: use the same --history"):
        LocalExchange(f"parquet:{snapshot}", clock="shifted", state_path=state)
