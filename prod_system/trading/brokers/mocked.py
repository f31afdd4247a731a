"""The mocked broker (paper_trading, simulation): it fills 100% of every order at the time-weighted
average of the candle closes inside its execution window, the bar after the decision, moved by the
config's slippage (off by default), and charges the taker fee on the fill's notional, as Binance
charges a market order (``trading.costs``). It reads prices only through the market-data reader, so a
fill never uses a price the clock could not know at the time the fill is recorded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from prod_system.config import CostsConfig
from prod_system.data.market_data import MarketDataReader
from prod_system.trading.brokers.base import EXECUTION_COLUMNS, Broker, ExchangeCheck, OnMismatch
from prod_system.trading.brokers.kill_switch import KillSwitch
from prod_system.trading.costs import slipped_prices, taker_fees
from prod_system.trading.portfolio import PortfolioState


class MockedBroker(Broker):
    """Fills every order in full at the TWAP of its execution window (order bar_end, + bar]."""

    keeps_execution_log = False  # no venue, no child orders: a mocked run writes no broker/executions

    def __init__(
        self, reader: MarketDataReader, bar: pd.Timedelta, costs: CostsConfig, kill_switch: KillSwitch | None = None
    ):
        self.reader = reader
        self.bar = bar
        self.costs = costs
        self.kill_switch = kill_switch or KillSwitch()  # reported, not acted on (force_kill_switch)
        self._pending: list[dict] = []

    def reconcile(self, state: PortfolioState, on_mismatch: OnMismatch | None = None) -> list[dict]:
        """Take over the orders still executing at the end of the previous session (nothing to adopt)."""
        self.submit(state.open_orders)
        return []

    def check(self, portfolio: pd.Series) -> None:
        """None: no venue to disagree with (a paper session skips the in-session checks)."""
        return None

    def adopt(self, check: ExchangeCheck, apply_at: pd.Timestamp) -> list[dict]:
        """Nothing to adopt: ``check`` never finds a mismatch here."""
        return []

    def submit(self, orders: list[dict]) -> None:
        self._pending.extend(orders)

    def open_orders(self) -> list[dict]:
        return list(self._pending)

    def collect_fills(self, bar_end: pd.Timestamp) -> list[dict]:
        """Fill the orders whose window has ended by now; an order with no visible price expires."""
        now = self.reader.clock.now()
        fills, still_pending, twaps = [], [], {}
        column = {asset: j for j, asset in enumerate(self.reader.assets)}  # not list.index: 300 x 300 a bar
        for order in self._pending:
            window_end = order["bar_end"] + self.bar
            if window_end > now:
                still_pending.append(order)
                continue
            if window_end not in twaps:
                twaps[window_end] = self._twap(window_end)
            twap = float(twaps[window_end][column[order["asset"]]])
            if not np.isfinite(twap):
                continue  # no known price in the window: the order expires unfilled
            quantity = order["quantity"]
            price = float(slipped_prices(twap, quantity, self.costs))
            notional = quantity * price
            fills.append(
                {
                    "bar_end": bar_end,
                    "asset": order["asset"],
                    "client_order_id": order["client_order_id"],
                    "order_bar_end": order["bar_end"],
                    "shares": quantity,
                    "price": price,
                    "notional": notional,
                    "fee": float(taker_fees(notional, self.costs)),
                    "filled_at": now,
                }
            )
        self._pending = still_pending
        return fills

    def collect_immediate_fills(self, apply_at: pd.Timestamp) -> list[dict]:
        """None: an order fills only once its execution window (the next bar) has passed."""
        return []

    def executions(self) -> pd.DataFrame:
        return pd.DataFrame(columns=EXECUTION_COLUMNS)

    def statement(self, since: pd.Timestamp, seen: set[tuple[str, str]]) -> None:
        """None: no venue keeps an account of a paper session (its costs are the config's)."""
        return None

    def force_kill_switch(self, state: str) -> None:
        """Recorded, not acted on: a paper session sends nothing to a venue, so a forced 'stop' or
        'flatten' does not change it (its orders and fills stay those of the model, which research
        reproduces); the session still alerts on it (``kill_switch_state``), as prod's would."""
        self.kill_switch.forced = state

    def kill_switch_state(self) -> str | None:
        """The kill switch (the config's file, or the orchestrator's tag), reported for the alert only."""
        return self.kill_switch.state()

    def close(self) -> None:
        """Nothing to release."""

    def _twap(self, window_end: pd.Timestamp) -> np.ndarray:
        """Mean of the known candle closes of the window, per asset (NaN if none is known)."""
        close = self.reader.read(self.bar, since=window_end - self.bar, until=window_end).field("close")
        counts = np.isfinite(close).sum(axis=0)
        return np.where(counts > 0, np.nansum(close, axis=0) / np.maximum(counts, 1), np.nan)
