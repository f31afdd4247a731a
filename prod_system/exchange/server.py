"""The local exchange's HTTP face: Binance USDT-M futures REST as the unmodified ccxt ``binanceusdm`` calls it.

Every request is counted per endpoint ("METHOD /path"), goes through the fault rules, then through
the endpoint table: public endpoints answer anyone, signed ones check the ``X-MBX-APIKEY`` header,
the HMAC-SHA256 ``signature`` of the exact query string and body, and the ``timestamp`` against the
wall clock (not the market clock) within ``recvWindow``. Errors are Binance's JSON
``{"code": ..., "msg": ...}``. ``/_control/`` endpoints (faults, manual clock, request counts) need an
account's API key header, no signature.

``LocalExchange`` runs the server in a background thread on a free port (tests, benchmarks);
``serve`` runs it in the foreground until interrupted (the command line).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import pandas as pd
from aiohttp import web

from prod_system.data.instruments import (
    InstrumentTable,
    combine,
    market_instruments,
    parse_leverage_brackets,
    with_brackets,
)
from prod_system.errors import FaultRuleError, InstrumentsError
from prod_system.exchange.engine import (
    INCOME_TYPES,
    TRADE_WINDOW_MS,
    BinanceError,
    Engine,
    EngineConfig,
    SymbolRules,
    leverage_brackets,
    open_engine,
    plain,
    to_decimal,
)
from prod_system.exchange.faults import FaultInjector, FaultRule, parse_rules
from prod_system.exchange.market import MINUTE_MS, load_candles, load_market_funding, to_ms, wall_ms

logger = logging.getLogger(__name__)

DEFAULT_RECV_WINDOW_MS = 5_000
MAX_RECV_WINDOW_MS = 60_000
MAX_KLINES = 1_500
MAX_TRADES = 1_000
NO_HISTORY = pd.Timedelta(0)
INTERNAL_ERROR = {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}
TIME_IN_FORCE = ("GTC", "IOC", "FOK", "GTX", "GTD")
# Binance's kline intervals in minutes ("1M", calendar months, apart)
INTERVAL_MINUTES = {
    "1m": 1,
    "3m": 3,
    "5m": 5,
    "15m": 15,
    "30m": 30,
    "1h": 60,
    "2h": 120,
    "4h": 240,
    "6h": 360,
    "8h": 480,
    "12h": 720,
    "1d": 1_440,
    "3d": 4_320,
    "1w": 10_080,
    "1M": 44_640,  # at most 31 days: how many minutes a month's kline may need
}
_MONDAY_MS = 4 * 86_400_000  # the first Monday 00:00 UTC after the epoch (a Thursday): weekly klines open on Mondays
DAY_MS = 86_400_000
MAX_FUNDING_ROWS = 1_000  # fundingRate and income: limit at most 1,000 (default 100)
DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
_DECIMAL = re.compile(r"[0-9]{1,20}(\.[0-9]{1,20})?")
_INTEGER = re.compile(r"-?[0-9]{1,20}")


@dataclass
class Call:
    """One request as the endpoint functions see it."""

    params: dict[str, str]
    api_key: str | None = None
    body: str = ""
    fill_fraction: float | None = None

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as error:
            raise BinanceError(-1130, f"The body is not valid JSON: {error}") from None


class ExchangeService:
    """What the HTTP layer serves: the engine, the accounts' secrets, the fault rules and request counts."""

    def __init__(self, engine: Engine, secrets: dict[str, str], faults: FaultInjector):
        self.engine = engine
        self.secrets = secrets
        self.faults = faults
        self._requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._weights: dict[str, tuple[int, int]] = {}  # IP -> (wall-clock minute, weight used in it)
        self.wall: Callable[[], int] = wall_ms  # the clock of the rate limits (a test may set its own)

    def count(self, endpoint: str) -> None:
        with self._lock:
            self._requests[endpoint] += 1

    def use_weight(self, ip: str, weight: int) -> int:
        """Add a request's weight to its IP's count of the current wall-clock minute (Binance's rate
        limits run on real time, not on the market's clock); returns the count, the header's value."""
        minute = self.wall() // MINUTE_MS
        with self._lock:
            counted_minute, used = self._weights.get(ip, (minute, 0))
            used = (used if counted_minute == minute else 0) + weight
            self._weights[ip] = (minute, used)
            return used

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._requests)


_SERVICE = web.AppKey("service", ExchangeService)
_STOPPING = web.AppKey("stopping", asyncio.Event)


# -- request parameters --------------------------------------------------------------------------


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return value


def _integer(params: dict[str, str], name: str, default: int | None = None, required: bool = False) -> int | None:
    value = _required(params, name) if required else params.get(name)
    if value is None:
        return default
    if not _INTEGER.fullmatch(value):
        raise BinanceError(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is '^-?[0-9]{{1,20}}$'."
        )
    return int(value)


def _decimal(params: dict[str, str], name: str, required: bool = False) -> Decimal | None:
    value = _required(params, name) if required else params.get(name)
    if value is None:
        return None
    if not _DECIMAL.fullmatch(value):
        raise BinanceError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'.",
        )
    return Decimal(value)


def _flag(params: dict[str, str], name: str) -> bool:
    value = params.get(name, "false").lower()
    if value not in ("true", "false"):
        raise BinanceError(-1130, f"Data sent for parameter '{name}' is not valid.")
    return value == "true"


def _in_range(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise BinanceError(-1130, f"Data sent for parameter '{name}' is not valid.")
    return value


def _symbol(engine: Engine, params: dict[str, str]) -> SymbolRules:
    rules = engine.rules.get(_required(params, "symbol"))
    if rules is None:
        raise BinanceError(-1121, "Invalid symbol.")
    return rules


def _order_reference(params: dict[str, str]) -> tuple[int | None, str | None]:
    order_id, client_order_id = _integer(params, "orderId"), params.get("origClientOrderId") or None
    if order_id is None and client_order_id is None:
        raise BinanceError(-1102, "Param 'orderId' or 'origClientOrderId' must be sent, but both were empty/null!")
    return order_id, client_order_id


# -- endpoints -----------------------------------------------------------------------------------


def _number(value: float) -> str:
    return np.format_float_positional(value, trim="-")


def _symbol_info(rules: SymbolRules, onboard_ms: int) -> dict:
    """A symbol as exchangeInfo lists it: its filters, status, onboard date and precisions exactly as its
    instruments table holds them (``onboard_ms``: the date where the table has none)."""
    step, tick, min_qty = plain(rules.step), plain(rules.tick), plain(rules.min_qty)
    if rules.onboard_date is not None:
        onboard_ms = int(rules.onboard_date.value // 1_000_000)
    return {
        "symbol": rules.symbol,
        "pair": rules.symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": onboard_ms,
        "status": rules.status,
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": rules.asset,
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": rules.price_precision,
        "quantityPrecision": rules.quantity_precision,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "tickSize": tick,
                "minPrice": plain(rules.min_price),
                "maxPrice": plain(rules.max_price),
            },
            {"filterType": "LOT_SIZE", "stepSize": step, "minQty": min_qty, "maxQty": plain(rules.max_qty)},
            {
                "filterType": "MARKET_LOT_SIZE",
                "stepSize": step,
                "minQty": min_qty,
                "maxQty": plain(rules.market_max_qty),
            },
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MIN_NOTIONAL", "notional": plain(rules.min_notional)},
        ],
        "orderTypes": ["LIMIT", "MARKET"],
        "timeInForce": list(TIME_IN_FORCE),
    }


def exchange_info(service: ExchangeService, call: Call) -> dict:
    engine = service.engine
    return {
        "timezone": "UTC",
        "serverTime": engine.now_ms(),
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [_symbol_info(rules, engine.market.first_open_ms) for rules in engine.rules.values()],
    }


def _interval_open(interval: str, ms: int) -> int:
    """The open time of the ``interval`` kline holding ``ms``: Binance's boundaries in UTC (days from
    midnight, weeks from Monday, months from the 1st; 3-day klines from the epoch)."""
    if interval == "1M":
        month = pd.Timestamp(ms, unit="ms", tz="UTC")
        return to_ms(pd.Timestamp(year=month.year, month=month.month, day=1, tz="UTC"))
    size = INTERVAL_MINUTES[interval] * MINUTE_MS
    offset = _MONDAY_MS if interval == "1w" else 0
    return (ms - offset) // size * size + offset


def _interval_next(interval: str, open_ms: int) -> int:
    """The open time of the kline after the one opening at ``open_ms``."""
    if interval == "1M":
        return to_ms(pd.Timestamp(open_ms, unit="ms", tz="UTC") + pd.DateOffset(months=1))
    return open_ms + INTERVAL_MINUTES[interval] * MINUTE_MS


def _quote_volume(high: float, low: float, close: float, volume: float) -> float:
    """A candle's quote volume, which the candles do not carry: volume x its typical price."""
    return volume * (high + low + close) / 3


def aggregate_klines(
    rows: list[tuple[int, float, float, float, float, float]], interval: str
) -> list[tuple[int, int, float, float, float, float, float, float]]:
    """1-minute rows (open_ms, o, h, l, c, volume), oldest first, as ``interval`` klines:
    (open_ms, close_ms, o, h, l, c, volume, quote volume); a kline holds the minutes it has so far."""
    result: list = []
    for open_ms, open_, high, low, close, volume in rows:
        quote = _quote_volume(high, low, close, volume)
        start = _interval_open(interval, open_ms)
        if result and result[-1][0] == start:
            _, end, first, top, bottom, _, total, quotes = result[-1]
            result[-1] = (start, end, first, max(top, high), min(bottom, low), close, total + volume, quotes + quote)
        else:
            result.append((start, _interval_next(interval, start) - 1, open_, high, low, close, volume, quote))
    return result


def klines(service: ExchangeService, call: Call) -> list[list]:
    """Klines of every Binance interval, aggregated from the 1-minute candles (the one in progress holds
    the minutes opened so far). Quote volume is estimated as volume x typical price of each minute;
    trade counts and taker volumes are unknown (0). With ``startTime`` the first ``limit`` klines
    opening at or after it, otherwise the last ``limit`` opening up to ``endTime`` (or now)."""
    rules = _symbol(service.engine, call.params)
    interval = _required(call.params, "interval")
    if interval not in INTERVAL_MINUTES:
        raise BinanceError(-1120, "Invalid interval.")
    limit = _in_range("limit", _integer(call.params, "limit", 500), 1, MAX_KLINES)
    start_ms, end_ms = _integer(call.params, "startTime"), _integer(call.params, "endTime")
    now = service.engine.now_ms()
    market = service.engine.market
    if interval == "1m":
        rows = market.klines(rules.asset, now, start_ms, end_ms, limit)
    else:
        if start_ms is not None:
            first = _interval_open(interval, start_ms)
            first = first if first == start_ms else _interval_next(interval, first)
        else:  # the last kline: the one holding the last minute opened by then (the data may end before)
            latest = market.klines(rules.asset, now, None, end_ms, 1)
            first = _interval_open(interval, latest[-1][0] if latest else now)
            for _ in range(limit - 1):
                first = _interval_open(interval, first - 1)
        # every minute from the first kline's open (the market stops at now and at the end of its data)
        minutes = INTERVAL_MINUTES[interval] * limit
        rows = market.klines(rules.asset, now, first, end_ms, minutes)
    bars = aggregate_klines(rows, interval)
    bars = bars[:limit] if start_ms is not None else bars[-limit:]
    return [
        [
            open_ms,
            *(_number(value) for value in (open_, high, low, close, volume)),
            close_ms,
            _number(quote),
            0,
            "0",
            "0",
            "0",
        ]
        for open_ms, close_ms, open_, high, low, close, volume, quote in bars
    ]


def _last_price(service: ExchangeService, rules: SymbolRules, now: int) -> Decimal:
    """The price the engine trades at (the last closed candle's close); before the first candle
    closes, the open of the one in progress (0 before any opens)."""
    price = service.engine.price(rules.symbol, now)
    if price is not None:
        return price
    rows = service.engine.market.klines(rules.asset, now, None, None, 1)
    return to_decimal(rows[-1][1]) if rows else Decimal(0)


def _symbols(service: ExchangeService, call: Call) -> list[SymbolRules]:
    """The symbol sent, or every symbol when none is."""
    if call.params.get("symbol"):
        return [_symbol(service.engine, call.params)]
    return list(service.engine.rules.values())


def _one_or_all(call: Call, items: list[dict]) -> list[dict] | dict:
    """Binance answers the one object when ``symbol`` is sent, else the list."""
    return items[0] if call.params.get("symbol") else items


def _ticker_24hr(service: ExchangeService, rules: SymbolRules, now: int) -> dict:
    """The rolling 24 hours up to now, from the 1-minute candles closed in it; the last price is the
    engine's. Trades are not known one by one: ``lastQty`` is 0, ``firstId``/``lastId`` -1 and
    ``count`` 0, as Binance writes a window without trades."""
    rows = service.engine.market.klines(rules.asset, now, now - DAY_MS, now, DAY_MS // MINUTE_MS + 1)
    closed = [row for row in rows if row[0] + MINUTE_MS <= now]
    last = _last_price(service, rules, now)
    if closed:
        open_ = to_decimal(closed[0][1])
        high, low = max(row[2] for row in closed), min(row[3] for row in closed)
        volume = sum(row[5] for row in closed)
        quote = sum(_quote_volume(*row[2:6]) for row in closed)
        open_ms = closed[0][0]
    else:
        open_, high, low, volume, quote, open_ms = last, float(last), float(last), 0.0, 0.0, now - DAY_MS
    change = last - open_
    percent = change / open_ * 100 if open_ else Decimal(0)
    return {
        "symbol": rules.symbol,
        "priceChange": plain(change),
        "priceChangePercent": f"{percent:.3f}",
        "weightedAvgPrice": _number(quote / volume) if volume else plain(last),
        "lastPrice": plain(last),
        "lastQty": "0",
        "openPrice": plain(open_),
        "highPrice": _number(high),
        "lowPrice": _number(low),
        "volume": _number(volume),
        "quoteVolume": _number(quote),
        "openTime": open_ms,
        "closeTime": now,
        "firstId": -1,
        "lastId": -1,
        "count": 0,
    }


def ticker_24hr(service: ExchangeService, call: Call) -> list[dict] | dict:
    now = service.engine.now_ms()
    return _one_or_all(call, [_ticker_24hr(service, rules, now) for rules in _symbols(service, call)])


def ticker_price(service: ExchangeService, call: Call) -> list[dict] | dict:
    """GET /fapi/v1/ticker/price and /fapi/v2/ticker/price: the last price of a symbol or of all."""
    now = service.engine.now_ms()
    prices = [
        {"symbol": rules.symbol, "price": plain(_last_price(service, rules, now)), "time": now}
        for rules in _symbols(service, call)
    ]
    return _one_or_all(call, prices)


def depth(service: ExchangeService, call: Call) -> dict:
    """A book SYNTHESISED around the last price, not a real one: the engine fills market orders at the
    last price itself, so the book brackets it, the best bid one tick below and the best ask one tick
    above, then a level every tick. Each level holds the last closed minute's volume spread evenly
    over ``limit`` levels (rounded down to the lot step, at least one step). ``lastUpdateId``, ``E``
    and ``T`` are the exchange's now."""
    rules = _symbol(service.engine, call.params)
    limit = _integer(call.params, "limit", 500)
    if limit not in DEPTH_LIMITS:
        raise BinanceError(-4021, f"'{limit}' is not valid depth limit.")
    now = service.engine.now_ms()
    last = _last_price(service, rules, now)
    closed = [row for row in service.engine.market.klines(rules.asset, now, None, None, 2) if row[0] + MINUTE_MS <= now]
    volume = to_decimal(closed[-1][5]) if closed else Decimal(0)
    quantity = max(rules.step, (volume / limit / rules.step).to_integral_value(ROUND_DOWN) * rules.step)
    bids = [last - rules.tick * level for level in range(1, limit + 1)]
    asks = [last + rules.tick * level for level in range(1, limit + 1)]
    return {
        "lastUpdateId": now,
        "E": now,
        "T": now,
        "bids": [[plain(price), plain(quantity)] for price in bids if price > 0],
        "asks": [[plain(price), plain(quantity)] for price in asks],
    }


def _rate(rate: Decimal) -> str:
    """A funding rate as Binance writes it: 8 decimals."""
    return f"{rate:.8f}"


def premium_index(service: ExchangeService, call: Call) -> list[dict] | dict:
    """Mark price: the last price, which is also the index and the estimated settle price (the replay
    has one price per symbol). ``lastFundingRate`` is the latest rate known now (the funding data's,
    never one not yet known; the assumed rate without data), ``nextFundingTime`` the next settlement,
    ``interestRate`` Binance's USDT-M 0.01%."""
    now = service.engine.now_ms()
    items = []
    for rules in _symbols(service, call):
        price = plain(_last_price(service, rules, now))
        rate, next_funding = service.engine.funding_rate(rules.symbol)
        items.append(
            {
                "symbol": rules.symbol,
                "markPrice": price,
                "indexPrice": price,
                "estimatedSettlePrice": price,
                "lastFundingRate": _rate(rate),
                "interestRate": "0.00010000",
                "nextFundingTime": next_funding,
                "time": now,
            }
        )
    return _one_or_all(call, items)


def funding_rate_history(service: ExchangeService, call: Call) -> list[dict]:
    """GET /fapi/v1/fundingRate, as Binance documents it: the settled rates (of one symbol or all),
    ascending; the first ``limit`` from ``startTime``, else the most recent ``limit`` (up to
    ``endTime``); ``limit`` 100 by default, at most 1,000. Only settlements the clock has passed and
    whose rate is known by now."""
    params = call.params
    symbols = [rules.symbol for rules in _symbols(service, call)]
    limit = _in_range("limit", _integer(params, "limit", 100), 1, MAX_FUNDING_ROWS)
    rows = service.engine.funding_history(symbols, _integer(params, "startTime"), _integer(params, "endTime"), limit)
    return [
        {
            "symbol": symbol,
            "fundingRate": _rate(settlement.rate),
            "fundingTime": settlement.time_ms,
            "markPrice": f"{mark:.8f}" if mark is not None else "",
            "rateType": "Regular",
        }
        for symbol, settlement, mark in rows
    ]


def income(service: ExchangeService, call: Call) -> list[dict]:
    """GET /fapi/v1/income, as Binance documents it: ``symbol`` and ``incomeType`` optional, the
    last 7 days when neither ``startTime`` nor ``endTime`` is sent, ``page`` from 1, ``limit`` 100 by
    default and at most 1,000."""
    params = call.params
    symbol = _symbol(service.engine, params).symbol if params.get("symbol") else None
    income_type = params.get("incomeType") or None
    if income_type is not None and income_type not in INCOME_TYPES:
        raise BinanceError(-1130, "Data sent for parameter 'incomeType' is not valid.")
    return service.engine.income(
        call.api_key,
        symbol,
        income_type,
        start_ms=_integer(params, "startTime"),
        end_ms=_integer(params, "endTime"),
        page=_in_range("page", _integer(params, "page", 1), 1, 10**9),
        limit=_in_range("limit", _integer(params, "limit", 100), 1, MAX_FUNDING_ROWS),
    )


def post_order(service: ExchangeService, call: Call) -> dict:
    params = call.params
    rules = _symbol(service.engine, params)
    side, order_type = _required(params, "side"), _required(params, "type")
    quantity = _decimal(params, "quantity", required=True)
    price = _decimal(params, "price", required=order_type == "LIMIT")
    time_in_force = "GTC"
    if order_type == "LIMIT":
        time_in_force = _required(params, "timeInForce")
        if time_in_force not in TIME_IN_FORCE:
            raise BinanceError(-1115, "Invalid timeInForce.")
    elif price is not None:
        raise BinanceError(-1106, "Parameter 'price' sent when not required.")
    if params.get("positionSide", "BOTH") != "BOTH":
        raise BinanceError(-4061, "Order's position side does not match user's setting.")
    response_type = params.get("newOrderRespType", "ACK")
    if response_type not in ("ACK", "RESULT"):
        raise BinanceError(-1130, "Data sent for parameter 'newOrderRespType' is not valid.")
    return service.engine.place_order(
        call.api_key,
        rules.symbol,
        side,
        order_type,
        quantity,
        price,
        client_order_id=params.get("newClientOrderId"),
        reduce_only=_flag(params, "reduceOnly"),
        ack=response_type == "ACK",
        fill_fraction=call.fill_fraction,
        time_in_force=time_in_force,
        good_till_ms=_integer(params, "goodTillDate"),
    )


def get_order(service: ExchangeService, call: Call) -> dict:
    rules = _symbol(service.engine, call.params)
    return service.engine.get_order(call.api_key, rules.symbol, *_order_reference(call.params))


def delete_order(service: ExchangeService, call: Call) -> dict:
    rules = _symbol(service.engine, call.params)
    return service.engine.cancel_order(call.api_key, rules.symbol, *_order_reference(call.params))


def open_order(service: ExchangeService, call: Call) -> dict:
    rules = _symbol(service.engine, call.params)
    return service.engine.open_order(call.api_key, rules.symbol, *_order_reference(call.params))


def cancel_all(service: ExchangeService, call: Call) -> dict:
    return service.engine.cancel_all(call.api_key, _symbol(service.engine, call.params).symbol)


def _check_time_window(start_ms: int | None, end_ms: int | None) -> None:
    """Binance's order and trade histories: startTime to endTime at most 7 days (-1127)."""
    if start_ms is not None and end_ms is not None and end_ms - start_ms > TRADE_WINDOW_MS:
        raise BinanceError(-1127, "More than 168 hours between startTime and endTime.")


def all_orders(service: ExchangeService, call: Call) -> list[dict]:
    """Binance's rules (All Orders): startTime to endTime at most 7 days; ``limit`` 500 by default, at
    most 1,000. ``symbol`` may be left out (every symbol), as Binance accepts since 2026-08."""
    params = call.params
    symbol = _symbol(service.engine, params).symbol if params.get("symbol") else None
    start_ms, end_ms = _integer(params, "startTime"), _integer(params, "endTime")
    _check_time_window(start_ms, end_ms)
    return service.engine.all_orders(
        call.api_key,
        symbol,
        order_id=_integer(params, "orderId"),
        start_ms=start_ms,
        end_ms=end_ms,
        limit=_in_range("limit", _integer(params, "limit", 500), 1, MAX_TRADES),
    )


def set_leverage(service: ExchangeService, call: Call) -> dict:
    rules = _symbol(service.engine, call.params)
    return service.engine.set_leverage(call.api_key, rules.symbol, _integer(call.params, "leverage", required=True))


def symbol_config(service: ExchangeService, call: Call) -> list[dict]:
    symbol = _symbol(service.engine, call.params).symbol if call.params.get("symbol") else None
    return service.engine.symbol_config(call.api_key, symbol)


def open_orders(service: ExchangeService, call: Call) -> list[dict]:
    symbol = _symbol(service.engine, call.params).symbol if call.params.get("symbol") else None
    return service.engine.open_orders(call.api_key, symbol)


def user_trades(service: ExchangeService, call: Call) -> list[dict]:
    """Binance's rules (Account Trade List): fromId cannot be sent with startTime or endTime, and
    startTime to endTime is at most 7 days."""
    params = call.params
    symbol = _symbol(service.engine, params).symbol
    start_ms, end_ms, from_id = (_integer(params, name) for name in ("startTime", "endTime", "fromId"))
    if from_id is not None and (start_ms is not None or end_ms is not None):
        raise BinanceError(-1128, "Combination of optional parameters invalid.")
    _check_time_window(start_ms, end_ms)
    return service.engine.user_trades(
        call.api_key,
        symbol,
        start_ms=start_ms,
        end_ms=end_ms,
        from_id=from_id,
        limit=_in_range("limit", _integer(params, "limit", 500), 1, MAX_TRADES),
    )


def position_risk(version: int) -> Callable[[ExchangeService, Call], list[dict]]:
    def endpoint(service: ExchangeService, call: Call) -> list[dict]:
        symbol = _symbol(service.engine, call.params).symbol if call.params.get("symbol") else None
        return service.engine.position_risk(call.api_key, symbol, version)

    return endpoint


def leverage_bracket(service: ExchangeService, call: Call) -> list[dict] | dict:
    """Binance answers a list, or the one symbol's entry when ``symbol`` is given."""
    return _one_or_all(call, leverage_brackets(_symbols(service, call)))


def control_state(service: ExchangeService, call: Call) -> dict:
    return {"now_ms": service.engine.now_ms(), "requests": service.request_counts(), **service.engine.counts()}


def control_set_faults(service: ExchangeService, call: Call) -> dict:
    try:
        rules = parse_rules(call.json())
    except FaultRuleError as error:
        raise BinanceError(-1130, str(error)) from None
    service.faults.replace(rules)
    return {"rules": len(rules)}


def control_faults(service: ExchangeService, call: Call) -> list[dict]:
    return [rule.to_json() for rule in service.faults.rules()]


def control_clock(service: ExchangeService, call: Call) -> dict:
    data = call.json()
    now_ms = data.get("now_ms") if isinstance(data, dict) else None
    if not isinstance(now_ms, int) or isinstance(now_ms, bool):
        raise BinanceError(-1102, 'Send {"now_ms": <milliseconds since the epoch>}.')
    try:
        service.engine.set_time(now_ms)
    except ValueError as error:
        raise BinanceError(-1130, str(error)) from None
    return {"now_ms": service.engine.now_ms()}


Endpoint = Callable[[ExchangeService, Call], Any]
PUBLIC: dict[str, Endpoint] = {
    "GET /fapi/v1/ping": lambda service, call: {},
    "GET /fapi/v1/time": lambda service, call: {"serverTime": service.engine.now_ms()},
    "GET /fapi/v1/exchangeInfo": exchange_info,
    "GET /fapi/v1/klines": klines,
    "GET /fapi/v1/ticker/24hr": ticker_24hr,
    "GET /fapi/v1/ticker/price": ticker_price,
    "GET /fapi/v2/ticker/price": ticker_price,
    "GET /fapi/v1/depth": depth,
    "GET /fapi/v1/premiumIndex": premium_index,
    "GET /fapi/v1/fundingRate": funding_rate_history,
}
SIGNED: dict[str, Endpoint] = {
    "GET /fapi/v3/account": lambda service, call: service.engine.account(call.api_key, 3),
    "GET /fapi/v2/account": lambda service, call: service.engine.account(call.api_key, 2),
    "GET /fapi/v3/balance": lambda service, call: service.engine.balance(call.api_key),
    "GET /fapi/v2/balance": lambda service, call: service.engine.balance(call.api_key),
    "GET /fapi/v3/positionRisk": position_risk(3),
    "GET /fapi/v2/positionRisk": position_risk(2),
    "GET /fapi/v1/leverageBracket": leverage_bracket,
    "GET /fapi/v1/positionSide/dual": lambda service, call: {"dualSidePosition": False},
    "GET /fapi/v1/multiAssetsMargin": lambda service, call: {"multiAssetsMargin": False},
    "POST /fapi/v1/order": post_order,
    "GET /fapi/v1/order": get_order,
    "DELETE /fapi/v1/order": delete_order,
    "GET /fapi/v1/openOrders": open_orders,
    "GET /fapi/v1/openOrder": open_order,
    "GET /fapi/v1/allOrders": all_orders,
    "DELETE /fapi/v1/allOpenOrders": cancel_all,
    "GET /fapi/v1/userTrades": user_trades,
    "POST /fapi/v1/leverage": set_leverage,
    "GET /fapi/v1/symbolConfig": symbol_config,
    "GET /fapi/v1/income": income,
}
CONTROL: dict[str, Endpoint] = {
    "GET /_control/state": control_state,
    "GET /_control/faults": control_faults,
    "POST /_control/faults": control_set_faults,
    "POST /_control/clock": control_clock,
}


# -- authentication --------------------------------------------------------------------------------


def _without_signature(raw: str) -> tuple[str, str | None]:
    """The signed payload (the parameters before ``signature``) and the signature, if any."""
    kept, signature = [], None
    for part in raw.split("&") if raw else []:
        if part.startswith("signature="):
            signature = part.removeprefix("signature=")
        else:
            kept.append(part)
    return "&".join(kept), signature


def _api_key(service: ExchangeService, request: web.Request) -> str:
    api_key = request.headers.get("X-MBX-APIKEY", "")
    if api_key not in service.secrets:
        raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
    return api_key


def _signed_params(service: ExchangeService, api_key: str, query: str, body: str) -> dict[str, str]:
    """Binance's checks of a signed call: the signature of query + body, then timestamp and recvWindow."""
    query_payload, query_signature = _without_signature(query)
    body_payload, body_signature = _without_signature(body)
    signature = query_signature or body_signature
    if not signature:
        raise BinanceError(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
    payload = query_payload + body_payload
    expected = hmac.new(service.secrets[api_key].encode(), payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
        raise BinanceError(-1022, "Signature for this request is not valid.")
    params = dict(parse_qsl(query_payload, keep_blank_values=True))
    params.update(parse_qsl(body_payload, keep_blank_values=True))
    timestamp = _integer(params, "timestamp", required=True)
    recv_window = _integer(params, "recvWindow", DEFAULT_RECV_WINDOW_MS)
    if not 0 < recv_window <= MAX_RECV_WINDOW_MS:
        raise BinanceError(-1130, "Data sent for parameter 'recvWindow' is not valid.")
    now = wall_ms()
    if timestamp >= now + 1_000 or now - timestamp > recv_window:
        raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")
    return params


# -- the application -------------------------------------------------------------------------------


def _error(code: int, msg: str, status: int = 400, headers: dict | None = None) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status, headers=headers)


def _server_error(rule: FaultRule) -> web.Response:
    if rule.body == "text":
        return web.Response(status=rule.status, text=f"{rule.status} Service Unavailable")
    return web.json_response(INTERNAL_ERROR, status=rule.status)


async def _pause(app: web.Application, delay_ms: int) -> None:
    """Sleep, but wake at once when the server shuts down (a 30 s timeout must not hold a stop)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(app[_STOPPING].wait(), delay_ms / 1000)


def _handle(service: ExchangeService, request: web.Request, endpoint: str, body: str, fraction: float | None):
    if endpoint in PUBLIC:
        return PUBLIC[endpoint](service, Call(dict(request.query)))
    if endpoint in SIGNED:
        api_key = _api_key(service, request)
        params = _signed_params(service, api_key, request.rel_url.raw_query_string, body)
        return SIGNED[endpoint](service, Call(params, api_key, fill_fraction=fraction))
    if endpoint in CONTROL:
        return CONTROL[endpoint](service, Call(dict(request.query), _api_key(service, request), body))
    raise BinanceError(-1000, f"Unknown endpoint {endpoint}: the local exchange does not simulate it.", 404)


def _by_limit(steps: tuple[tuple[int, int], ...], default: int) -> Callable[[dict[str, str]], int]:
    """A weight by the ``limit`` parameter: the weight of the first step whose bound it stays under."""

    def weight(query: dict[str, str]) -> int:
        limit = query.get("limit", "")
        limit = int(limit) if limit.isdigit() else default
        return next((weight for bound, weight in steps if limit < bound), steps[-1][1])

    return weight


def _by_symbol(one: int, every: int) -> Callable[[dict[str, str]], int]:
    """A weight for one symbol, and another for all of them (no ``symbol`` sent)."""
    return lambda query: one if query.get("symbol") else every


# Request weights after Binance's USDT-M futures documentation (REQUEST_WEIGHT per IP per minute), as
# closely as its pages state them; an endpoint not listed weighs 1 (premiumIndex among them; fundingRate
# counts on a limit of its own, 500 per 5 minutes, not modelled). Placing an order weighs 0 on the IP
# limit (it counts on the order limits, which this exchange does not report).
WEIGHTS: dict[str, int | Callable[[dict[str, str]], int]] = {
    "GET /fapi/v1/klines": _by_limit(((100, 1), (500, 2), (1001, 5), (MAX_KLINES + 1, 10)), 500),
    "GET /fapi/v1/depth": _by_limit(((51, 2), (101, 5), (501, 10), (1001, 20)), 500),
    "GET /fapi/v1/ticker/24hr": _by_symbol(1, 40),
    "GET /fapi/v1/ticker/price": _by_symbol(1, 2),
    "GET /fapi/v2/ticker/price": _by_symbol(1, 2),
    "GET /fapi/v3/account": 5,
    "GET /fapi/v2/account": 5,
    "GET /fapi/v3/balance": 5,
    "GET /fapi/v2/balance": 5,
    "GET /fapi/v3/positionRisk": 5,
    "GET /fapi/v2/positionRisk": 5,
    "GET /fapi/v1/positionSide/dual": 30,
    "GET /fapi/v1/multiAssetsMargin": 30,
    "POST /fapi/v1/order": 0,
    "GET /fapi/v1/openOrders": _by_symbol(1, 40),
    "GET /fapi/v1/allOrders": 5,
    "GET /fapi/v1/userTrades": 5,
    "GET /fapi/v1/symbolConfig": 5,
    "GET /fapi/v1/income": 30,
}


def request_weight(endpoint: str, query: dict[str, str]) -> int:
    """The weight of one request: Binance's for its endpoint (0 for the /_control/ endpoints)."""
    if endpoint.split(" ", 1)[-1].startswith("/_control/"):
        return 0
    weight = WEIGHTS.get(endpoint, 1)
    return weight(query) if callable(weight) else weight


async def _dispatch(request: web.Request) -> web.StreamResponse:
    """Answer a request, every answer (errors and faults too) with the ``X-MBX-USED-WEIGHT-1M`` header:
    the weight its IP has used in the current minute, this request's included."""
    service: ExchangeService = request.app[_SERVICE]
    endpoint = f"{request.method} {request.path}"
    used = service.use_weight(request.remote or "", request_weight(endpoint, dict(request.query)))
    response = await _answer(request, service, endpoint)
    response.headers["X-MBX-USED-WEIGHT-1M"] = str(used)
    return response


async def _answer(request: web.Request, service: ExchangeService, endpoint: str) -> web.StreamResponse:
    app = request.app
    service.count(endpoint)
    body = await request.text()
    rules = service.faults.fired(endpoint)
    try:
        for rule in rules:
            if rule.kind == "latency":
                await _pause(app, rule.sleep_ms)
        for rule in rules:
            if rule.after:
                continue
            if rule.kind == "timeout":
                await _pause(app, rule.sleep_ms)
                return _error(
                    -1007,
                    "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",
                    503,
                )
            if rule.kind == "server_error":
                return _server_error(rule)
            if rule.kind == "rate_limit":
                return _error(
                    -1003,
                    "Too many requests; current limit is 2400 requests per minute. Please use the websocket for live "
                    "updates to avoid polling the API.",
                    429,
                    {"Retry-After": str(rule.retry_after)},
                )
            if rule.kind == "ban":  # Binance: 418 once a client goes on after 429s, Retry-After until its end
                until_ms = wall_ms() + rule.retry_after * 1_000
                return _error(
                    -1003,
                    f"Way too many requests; IP banned until {until_ms}. Please use the websocket for live updates "
                    "to avoid bans.",
                    418,
                    {"Retry-After": str(rule.retry_after)},
                )
            if rule.kind == "reject":
                raise BinanceError(rule.code, rule.msg)
        fraction = next((rule.fraction for rule in rules if rule.kind == "partial_fill"), None)
        response = web.json_response(_handle(service, request, endpoint, body, fraction))
    except BinanceError as error:
        response = _error(error.code, error.msg, error.status)
    except Exception:
        logger.exception("local exchange: %s failed", endpoint)
        response = _error(-1000, "An unknown error occured while processing the request.", 500)
    for rule in rules:
        if rule.after and rule.kind == "timeout":
            await _pause(app, rule.sleep_ms)
        if rule.after and rule.kind == "server_error":
            return _server_error(rule)
    return response


async def _create_stopping_event(app: web.Application) -> None:
    app[_STOPPING] = asyncio.Event()


async def _set_stopping(app: web.Application) -> None:
    app[_STOPPING].set()


def create_app(service: ExchangeService) -> web.Application:
    app = web.Application()
    app[_SERVICE] = service
    app.on_startup.append(_create_stopping_event)
    app.on_shutdown.append(_set_stopping)
    app.router.add_route("*", "/{tail:.*}", _dispatch)
    return app


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    return sock


# -- running it ------------------------------------------------------------------------------------


@dataclass
class ServerOptions:
    """Everything ``serve`` needs; the command line builds it from its flags."""

    market_data: str | Path | pd.DataFrame
    api_key: str
    api_secret: str
    host: str = "127.0.0.1"
    port: int = 8080
    clock: str = "shifted"
    speed: float = 1.0
    config: EngineConfig = field(default_factory=EngineConfig)
    faults: list[FaultRule] = field(default_factory=list)
    state_path: Path | None = None
    history: pd.Timedelta = NO_HISTORY  # of the candles, closed at start-up (a warm start)
    instruments: str | Path | InstrumentTable | None = None  # None: the snapshot's table, else the bundled one
    brackets: str | Path | None = None  # Binance's leverageBracket JSON, for rules that lack them
    # the funding table the symbols settle at; None: the market data's own (config.funding.mode 'data')
    funding: pd.DataFrame | None = None


def exchange_rules(options: ServerOptions, assets: list[str]) -> InstrumentTable:
    """The rules the exchange serves: the table given (ours or Binance's exchangeInfo JSON), else the
    snapshot's embedded table, else the bundled rules, per asset; ``brackets`` adds Binance's
    leverageBracket JSON. An asset without rules is an ``InstrumentsError``: nothing is made up."""
    given = options.instruments
    source = None if isinstance(options.market_data, pd.DataFrame) else options.market_data
    if isinstance(given, InstrumentTable):
        table = combine(assets, [("given", given)])
    else:
        table = market_instruments(assets, source, given)
    if options.brackets is not None:
        path = Path(options.brackets)
        try:
            answer = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise InstrumentsError(f"cannot read the leverage brackets {path}: {error}") from None
        brackets = parse_leverage_brackets(answer, f"leverage brackets {path}")
        table = replace(table, rules=with_brackets(table.rules, brackets), brackets=f"from {path}")
    return table


def _service(options: ServerOptions) -> tuple[ExchangeService, FaultInjector, Engine]:
    market_data = options.market_data
    candles = market_data if isinstance(market_data, pd.DataFrame) else load_candles(market_data)
    assets = sorted(candles["asset"].unique())
    instruments = exchange_rules(options, assets)
    funding = options.funding
    if funding is None and not isinstance(market_data, pd.DataFrame) and options.config.funding.mode == "data":
        funding = load_market_funding(market_data, assets)
    engine = open_engine(
        candles,
        options.config,
        [options.api_key],
        options.clock,
        options.speed,
        options.state_path,
        history_ms=int(options.history / pd.Timedelta(milliseconds=1)),
        instruments=instruments,
        funding=funding,
    )
    faults = FaultInjector(options.faults)
    return ExchangeService(engine, {options.api_key: options.api_secret}, faults), faults, engine


def serve(options: ServerOptions) -> None:
    """Run the exchange in the foreground until SIGINT/SIGTERM; setup errors raise before it listens."""
    service, _, engine = _service(options)
    try:
        sock = _bind(options.host, options.port)
    except OSError as error:
        raise OSError(f"cannot listen on {options.host}:{options.port}: {error.strerror}") from None
    host, port = sock.getsockname()[:2]
    first = pd.Timestamp(engine.market.first_open_ms, unit="ms", tz="UTC")
    now = pd.Timestamp(engine.now_ms(), unit="ms", tz="UTC")
    print(
        f"local exchange on http://{host}:{port}: {len(engine.rules)} symbols, {options.clock} clock "
        f"(speed {options.speed}), candles from {first.isoformat()}, now {now.isoformat()} "
        f"({engine.market.history_ms // MINUTE_MS} minutes of history closed), {engine.funding.describe()}",
        flush=True,
    )
    web.run_app(create_app(service), sock=sock, print=None, access_log=None, shutdown_timeout=5)


class LocalExchange:
    """The exchange server in a background thread on a free port of 127.0.0.1 (a context manager).

    ``market_data`` is a source ('parquet:FILE', 'csv:DIR', a .parquet path) or a candle DataFrame.
    The clock is manual by default: ``set_time`` moves it. ``url`` is the base URL for the client.
    ``history``: how much of the candles is already closed at start-up (none by default).
    ``instruments``: the rules it serves (a table or its file; default: the snapshot's, else the bundled).
    ``funding``: the funding table its symbols settle at (default: the market data's, else the assumed rate).
    With ``state_path`` and the previous ``port``, a new instance is the same exchange restarted.
    """

    def __init__(
        self,
        market_data: str | Path | pd.DataFrame,
        *,
        api_key: str = "local-api-key",
        api_secret: str = "local-api-secret",
        clock: str = "manual",
        speed: float = 1.0,
        config: EngineConfig | None = None,
        faults: list[dict] | None = None,
        state_path: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        history: pd.Timedelta = NO_HISTORY,
        instruments: str | Path | InstrumentTable | None = None,
        funding: pd.DataFrame | None = None,
    ):
        options = ServerOptions(
            market_data,
            api_key,
            api_secret,
            host=host,
            port=port,
            clock=clock,
            speed=speed,
            config=config or EngineConfig(),
            faults=parse_rules(faults or []),
            state_path=Path(state_path) if state_path is not None else None,
            history=history,
            instruments=instruments,
            funding=funding,
        )
        self.service, self._faults, self.engine = _service(options)
        self.api_key, self.api_secret = api_key, api_secret
        sock = _bind(host, port)  # 0: a free port; a restart passes the previous one (same URL)
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="local-exchange", daemon=True)
        self._thread.start()
        self._runner = web.AppRunner(create_app(self.service), access_log=None, shutdown_timeout=2)
        asyncio.run_coroutine_threadsafe(self._start(sock), self._loop).result(timeout=30)

    async def _start(self, sock: socket.socket) -> None:
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    def set_time(self, ts: int | str | pd.Timestamp) -> None:
        """Move the manual clock to ``ts`` (ms since the epoch, ISO string or timestamp); never backwards."""
        self.engine.set_time(to_ms(ts))

    def seed_history(self, database, candles: pd.DataFrame, hours: float = 2.0):
        """Write the ``hours`` of ``candles`` before the replay's first candle into a market database
        (a ``MarketDatabase``), moved in time as the replay moves them and known when the replay opens:
        what ingestion would have recorded before, a live session's warm-up."""
        market = self.engine.market
        shift = pd.Timedelta(milliseconds=market.shift_ms)
        opens = pd.Timestamp(market.first_open_ms, unit="ms", tz="UTC")
        start = opens - shift
        history = candles[(candles["bar_start"] >= start - pd.Timedelta(hours=hours)) & (candles["bar_start"] < start)]
        history = history.assign(bar_start=history["bar_start"] + shift)
        return database.upsert(history[["asset", "bar_start", "open", "high", "low", "close", "volume"]], opens)

    def set_faults(self, rules: list[dict]) -> None:
        """Replace the fault rules (see ``prod_system.exchange.faults``)."""
        self._faults.replace(parse_rules(rules))

    def request_counts(self) -> dict[str, int]:
        return self.service.request_counts()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __enter__(self) -> LocalExchange:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
