"""Clients of the local exchange as its users hold them: the unmodified ccxt ``binanceusdm``, the
independent ``binance-futures-connector`` (``UMFutures``), and plain signed HTTP requests (what the
contract tests compare with Binance's published examples)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from urllib.parse import urlencode

import ccxt
from binance.um_futures import UMFutures

from prod_system.exchange import LocalExchange
from prod_system.trading.brokers.ccxt_client import binanceusdm_client


def client_of(exchange: LocalExchange, **overrides) -> ccxt.binanceusdm:
    """ccxt's binanceusdm on the local exchange (every URL of its API points there)."""
    settings = {"api_key": exchange.api_key, "secret": exchange.api_secret, **overrides}
    client = binanceusdm_client(exchange.url, **settings)
    client.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
    assert client.urls["api"] and all(url.startswith(exchange.url) for url in client.urls["api"].values())
    return client


def connector_of(exchange: LocalExchange, **kwargs) -> UMFutures:
    """binance-futures-connector's USDT-M client on the local exchange."""
    return UMFutures(exchange.api_key, exchange.api_secret, base_url=exchange.url, timeout=5, **kwargs)


def call(
    exchange: LocalExchange, method: str, path: str, params: dict | None = None, signed: bool = False
) -> tuple[int, dict[str, str], object]:
    """One request as Binance documents it (signed: API key header, timestamp and HMAC-SHA256
    signature of the query); returns the HTTP status, the headers and the JSON body."""
    query = dict(params or {})
    headers = {}
    if signed:
        query["timestamp"] = int(time.time() * 1000)
        payload = urlencode(query)
        signature = hmac.new(exchange.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        query["signature"] = signature
        headers["X-MBX-APIKEY"] = exchange.api_key
    request = urllib.request.Request(f"{exchange.url}{path}?{urlencode(query)}", method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())
