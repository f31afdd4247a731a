"""The broker interface: everything a bar asks of a broker, whichever it is (``mocked.MockedBroker``
for simulations and paper sessions, ``exchange.ExchangeBroker`` for Binance USDT-M through ccxt).
The runs call only these methods, so no run needs to know which broker it holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from prod_system.log_dir import columns
from prod_system.trading.portfolio import PortfolioState

FILL_COLUMNS = columns("fills")
EXECUTION_COLUMNS = columns("broker/executions")  # one schema per table: log_dir.py
INCOME_COLUMNS = [c for c in columns("broker/income") if c != "bar_end"]  # the session adds the bar


@dataclass
class AccountStatement:
    """The venue's own account of the session: its income rows (realized PnL, commissions, funding)
    not pulled before, and its balances when they were fetched (``broker/account`` without bar_end)."""

    income: pd.DataFrame  # INCOME_COLUMNS: asset, income_type, income, tran_id, trade_id, income_at
    account: dict  # wallet_balance, margin_balance, unrealized_pnl, maint_margin, margin_ratio, fetched_at


def margin_ratio(maint_margin: float, margin_balance: float) -> float:
    """The account's margin ratio as Binance shows it: maintenance margin / margin balance (liquidation
    at 1); infinite when the balance is gone while positions need margin."""
    if margin_balance > 0:
        return maint_margin / margin_balance
    return float("inf") if maint_margin > 0 else 0.0


@dataclass
class ExchangeCheck:
    """The venue's positions and open orders against the portfolio's (``Broker.check``).

    ``expected`` is what the venue should hold: the portfolio's shares, the fills counted and not applied
    yet, and what the broker's own orders in flight are known to have filled; an asset agrees when the
    venue's position is within the exchange's step of it, or of what those orders may still fill."""

    portfolio: pd.Series  # the shares the check was given (the portfolio's, with its unapplied fills)
    venue: pd.Series  # the venue's position per asset
    in_flight: pd.Series  # what the broker's own orders are known to have filled beyond the portfolio
    expected: pd.Series  # what the venue should hold: portfolio + in_flight
    differ: list[str]  # the assets whose positions disagree
    stray_orders: list[dict]  # open orders on the venue that the session did not place (ccxt's orders)
    prices: pd.Series  # what an adopted difference is booked at: the mark (the entry price if not held)
    marks: pd.Series  # the venue's mark prices (NaN if unknown)

    @property
    def agrees(self) -> bool:
        return not self.differ and not self.stray_orders

    def text(self) -> str:
        """What differs, short: per asset the venue's position and the portfolio's, then the stray orders."""
        problems = [f"{a}: exchange {self.venue[a]:g}, portfolio {self.expected[a]:g}" for a in self.differ]
        if self.stray_orders:
            ids = ", ".join(str(o.get("clientOrderId") or o["id"]) for o in self.stray_orders)
            problems.append(f"{len(self.stray_orders)} open orders not placed by this session ({ids})")
        return "; ".join(problems)


# called with the check when the venue disagrees, before the broker refuses or adopts (the session alerts)
OnMismatch = Callable[[ExchangeCheck], None]


class Broker(ABC):
    """Takes a bar's orders and reports their fills."""

    # whether the broker keeps a log of its child orders as the venue saw them: only then does a run
    # write the ``broker/executions`` table (a mocked run's log dir has none)
    keeps_execution_log: bool

    @abstractmethod
    def reconcile(self, state: PortfolioState, on_mismatch: OnMismatch | None = None) -> list[dict]:
        """Agree with the venue before the first order, leaving ``state`` alone; ``on_mismatch`` is told
        of a disagreement before the broker refuses (``BrokerError``) or adopts it. Returns the adopted
        positions as fills (``adopt``) for the session to apply with its first traded bar ([] if none)."""

    @abstractmethod
    def check(self, portfolio: pd.Series) -> ExchangeCheck | None:
        """The venue's positions and open orders against ``portfolio`` (the portfolio's shares plus the
        fills counted and not applied yet), the broker's own orders in flight aside; None for a broker
        without a venue. May raise ``BrokerError`` (the venue does not answer)."""

    @abstractmethod
    def adopt(self, check: ExchangeCheck, apply_at: pd.Timestamp) -> list[dict]:
        """Cancel the stray open orders and take the venue's positions: the fills (``fills`` schema, no
        fee) that move the portfolio to them, stamped with the bar that applies them (``apply_at``); the
        caller books them (the fills table, the cash) when it applies them. Raises ``BrokerError``, nothing
        adopted, when a difference cannot be booked safely now (an order of the session still open on the
        asset, no price for it): the check is made again later."""

    @abstractmethod
    def submit(self, orders: list[dict]) -> None:
        """Send a bar's orders (may raise ``BrokerError``: the bar is then decided, not executed)."""

    @abstractmethod
    def collect_fills(self, bar_end: pd.Timestamp) -> list[dict]:
        """The fills of the orders sent before, not reported yet, stamped with ``bar_end``."""

    @abstractmethod
    def collect_immediate_fills(self, apply_at: pd.Timestamp) -> list[dict]:
        """Right after ``submit``: the fills of the orders filled at once (market orders), counted now
        so that a restart does not lose them, stamped with the bar that applies them (``apply_at``)."""

    @abstractmethod
    def open_orders(self) -> list[dict]:
        """The orders still executing (carried in the portfolio's state to the next session)."""

    @abstractmethod
    def executions(self) -> pd.DataFrame:
        """Every child order of the session as the venue saw it (``broker/executions`` schema)."""

    @abstractmethod
    def statement(self, since: pd.Timestamp, seen: set[tuple[str, str]]) -> AccountStatement | None:
        """The venue's income rows from ``since`` (inclusive) whose (income_type, tran_id) is not in
        ``seen`` (their keys are added to it: a row pulled twice is counted once), and its balances now;
        None for a broker without a venue. May raise ``BrokerError`` (the venue does not answer)."""

    @abstractmethod
    def force_kill_switch(self, state: str) -> None:
        """The orchestrator's kill switch ('stop' or 'flatten'), whatever the kill-switch file says."""

    @abstractmethod
    def kill_switch_state(self) -> str | None:
        """The kill switch now: None (trading), 'stop' or 'flatten' (the file, or the orchestrator's tag);
        a live session alerts when it engages."""

    @abstractmethod
    def close(self) -> None:
        """Release the broker's connections and files (the end of a run or session)."""
