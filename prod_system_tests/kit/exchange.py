"""The local exchange as the broker tests drive it: its keys' variable names, a replay clock that moves
the exchange's clock along, a broker and orders built the same way by every test, and what the
exchange accepted (to count orders placed twice)."""

from __future__ import annotations

import pandas as pd

from prod_system.common.clock import SimulatedClock
from prod_system.config import BrokerConfig, RiskConfig
from prod_system.exchange import LocalExchange
from prod_system.trading.brokers.exchange import ExchangeBroker
from prod_system_tests.kit.data import UNIVERSE

KEY_ENV, SECRET_ENV = "TEST_EXCHANGE_API_KEY", "TEST_EXCHANGE_API_SECRET"
START = pd.Timestamp("2023-07-21T00:00:00Z")
BAR = pd.Timedelta(minutes=5)
DELAY = pd.Timedelta(seconds=10)


class DrivenClock(SimulatedClock):
    """The replay clock, moving the local exchange's clock along with it."""

    def __init__(self, start: pd.Timestamp, exchange: LocalExchange):
        super().__init__(start)
        self.exchange = exchange
        exchange.set_time(start)

    def wait_until(self, ts: pd.Timestamp) -> None:
        super().wait_until(ts)
        self.exchange.set_time(ts)


def broker_config(exchange: LocalExchange, **overrides) -> BrokerConfig:
    """A ccxt broker on ``exchange``, its keys in KEY_ENV/SECRET_ENV, quick timeouts and retries."""
    settings = {
        "kind": "ccxt",
        "exchange_url": exchange.url,
        "api_key_env": KEY_ENV,
        "api_secret_env": SECRET_ENV,
        "timeout_seconds": 2,
        "backoff_seconds": 0.01,
    }
    return BrokerConfig(**{**settings, **overrides})


def make_broker(exchange, clock=None, risk=None, sleeps=None, audit=None, kill=None, **overrides) -> ExchangeBroker:
    """An exchange broker on 5-minute bars, its clock at the first bar's decision time unless given;
    its sleeps recorded in ``sleeps`` (a list) instead of slept."""
    clock = clock or DrivenClock(START + BAR + DELAY, exchange)
    sleep = sleeps.append if sleeps is not None else (lambda _: None)
    return ExchangeBroker(
        broker_config(exchange, **overrides),
        risk or RiskConfig(),
        UNIVERSE,
        clock,
        BAR,
        audit_path=audit,
        sleep=sleep,
        kill_switch=kill,
    )


def order(asset: str, quantity: float, price: float, bar_end=START + BAR, cid: str | None = None) -> dict:
    """An order as the sizing writes it (a client id unique to the bar and asset unless given)."""
    return {
        "bar_end": bar_end,
        "asset": asset,
        "client_order_id": cid or f"ps-test0001-{bar_end:%y%m%d%H%M}-{asset}",
        "side": "buy" if quantity > 0 else "sell",
        "quantity": quantity,
        "decision_price": price,
    }


def placed_ids(exchange) -> list[str]:
    """The client order ids of every order the local exchange accepted (a duplicate would appear twice)."""
    return [o.client_order_id for o in next(iter(exchange.engine._accounts.values())).orders.values()]


def repeats(ids: list[str]) -> int:
    """How many of ``ids`` repeat an earlier one: the orders placed twice, for the reliability figures."""
    return len(ids) - len(set(ids))


def ms(ts: pd.Timestamp) -> int:
    """Milliseconds since the epoch, as Binance's endpoints take and give times."""
    return ts.value // 1_000_000


def last_close(candles: pd.DataFrame, asset: str, now: pd.Timestamp) -> float:
    """The price the exchange quotes at ``now``: the close of the last candle closed by then."""
    rows = candles[(candles["asset"] == asset) & (candles["bar_end"] <= now)]
    return float(rows.sort_values("bar_end")["close"].iloc[-1])


def exchange_funding(assets=("BTC", "ETH")) -> pd.DataFrame:
    """Settlements every 8 hours from 2023-07-20 (the snapshot's first candle) to 07-22, stamped 4 ms
    after the hour and published 5 s later, as Binance does; each asset and time its own rate."""
    times = pd.date_range("2023-07-20", "2023-07-22", freq="8h", tz="UTC") + pd.Timedelta(milliseconds=4)
    return pd.DataFrame(
        {
            "asset": [asset for asset in assets for _ in times],
            "funding_time": list(times) * len(assets),
            "rate": [round(0.0001 * (a + 1) - 0.00002 * i, 8) for a in range(len(assets)) for i in range(len(times))],
            "mark_price": [30_000.0 + 10 * i for _ in assets for i in range(len(times))],
            "knowledge_ts": list(times + pd.Timedelta(seconds=5)) * len(assets),
        }
    )
