"""The ccxt client of Binance USDT-M futures, pointed at Binance or at any compatible base URL.

Against a base URL other than Binance's (the local exchange), only the futures REST families are
mapped to it: any other call (spot, sapi, coin-margined) raises instead of going to a real host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ccxt

BINANCE_FUTURES_URL = "https://fapi.binance.com"
_FAMILIES = {
    "fapiPublic": "v1",
    "fapiPublicV2": "v2",
    "fapiPublicV3": "v3",
    "fapiPrivate": "v1",
    "fapiPrivateV2": "v2",
    "fapiPrivateV3": "v3",
}


def binanceusdm_client(
    base_url: str | None = None,
    api_key: str | None = None,
    secret: str | None = None,
    timeout_ms: int = 10_000,
    rate_limit: bool | None = None,
) -> ccxt.binanceusdm:
    """A ccxt ``binanceusdm`` client; ``base_url`` None means Binance itself.

    ccxt's own rate limiter (50-200 ms per call) stays on against Binance and is off against a
    local URL unless asked for; our broker paces and retries on the exchange's 429 answers itself.
    """
    import ccxt  # here, not at import: ~0.45 s that loading the Dagster definitions does not need

    local = base_url is not None and base_url.rstrip("/") != BINANCE_FUTURES_URL
    client = ccxt.binanceusdm(
        {
            "apiKey": api_key,
            "secret": secret,
            "timeout": timeout_ms,
            "enableRateLimit": (not local) if rate_limit is None else rate_limit,
            "options": {"fetchCurrencies": False, "adjustForTimeDifference": False},
        }
    )
    if local:
        base = base_url.rstrip("/")
        client.urls["api"] = {family: f"{base}/fapi/{version}" for family, version in _FAMILIES.items()}
        # ccxt maps the futures-only error codes (-2019 margin, -4116 duplicate id, ...) only for
        # Binance's own fapi host; a local URL needs them in the exact table
        linear = client.exceptions.get("linear", {}).get("exact", {})
        client.exceptions["exact"] = {**client.exceptions.get("exact", {}), **linear}
    return client


MAX_BACKOFF_SECONDS = 5.0
MAX_RETRY_AFTER_SECONDS = 60.0


def retry_delay(client: ccxt.binanceusdm, error: Exception, attempt: int, base_seconds: float) -> float:
    """How long to wait before retrying after a transient error: exponential backoff from
    ``base_seconds`` (at most MAX_BACKOFF_SECONDS), or longer when the exchange's answer (429, 418)
    says so in Retry-After (at most a minute)."""
    import ccxt

    delay = min(base_seconds * 2**attempt, MAX_BACKOFF_SECONDS)
    if isinstance(error, ccxt.DDoSProtection):  # 429 / 418: the exchange says how long
        retry_after = (client.last_response_headers or {}).get("Retry-After")
        if retry_after:
            delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER_SECONDS))
    return delay


def banned(error: Exception) -> bool:
    """An HTTP 418: the exchange banned this address (for going on after 429s); retrying extends it."""
    import ccxt

    return isinstance(error, ccxt.DDoSProtection) and " 418 " in str(error)


def symbol_of(asset: str) -> str:
    """ccxt's unified symbol of an asset's USDT-M perpetual: 'BTC' -> 'BTC/USDT:USDT'."""
    return f"{asset}/USDT:USDT"


def market_id(asset: str) -> str:
    """Binance's market id: 'BTC' -> 'BTCUSDT'."""
    return f"{asset}USDT"
