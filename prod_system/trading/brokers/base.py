"""The broker interface: everything a bar asks of a broker, whichever it is (``mocked.MockedBroker``
for simulations and paper sessions, ``exchange.ExchangeBroker`` for Binance USDT-M through ccxt).
The runs call only these methods, so no run needs to know which broker it holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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
    account: dict  # wallet_balance, margin_balance, unrealized_pnl, fetched_at


class Broker(ABC):
    """Takes a bar's orders and reports their fills."""

    # whether the broker keeps a log of its child orders as the venue saw them: only then does a run
    # write the ``broker/executions`` table (a mocked run's log dir has none)
    keeps_execution_log: bool

    @abstractmethod
    def reconcile(self, state: PortfolioState) -> PortfolioState:
        """Agree with the venue before the first order (the state to trade from)."""

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
    def close(self) -> None:
        """Release the broker's connections and files (the end of a run or session)."""
