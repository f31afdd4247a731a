"""A live session's record of the venue's own account: its income history and balances, pulled every
``broker.statement_every_bars`` bars into ``broker/income`` and ``broker/account``, so that the
reconciliation can set the portfolio's realized PnL, fees and funding beside the exchange's
(``analysis.statement``).

The pull never stops trading: a failed one is logged and the rows it missed come with the next (it
starts from the latest row recorded). A restarted session starts from the rows it recorded before,
so a row pulled again is recorded once. The balances at the session's start (before its first order)
are recorded once, at the session's start time: the wallet's baseline.

Each pull also reads the account's margin ratio (maintenance margin / margin balance, as Binance
shows it: liquidation at 1), recorded in ``broker/account``, and alerts (``margin``) when it reaches
``risk.margin_ratio_alert``: once per repeat window (``alerts.repeat_after_minutes``), not every bar.
"""

from __future__ import annotations

import logging

import pandas as pd

from prod_system.alerts import Alert, AlertKind, Notifier, cause_of, run_subject
from prod_system.common.timeutil import compact
from prod_system.config import SystemConfig
from prod_system.errors import BrokerError
from prod_system.log_dir import LogDir
from prod_system.trading.brokers.base import Broker

INCOME, ACCOUNT = "broker/income", "broker/account"
# each pull looks this far behind the newest row recorded: a row the exchange writes late, stamped
# earlier, is not missed (one already recorded is recognised by its type and tranId)
LATE_ROWS = pd.Timedelta(hours=1)


class StatementRecorder:
    """Pulls the broker's statement and writes it to the session's log dir."""

    def __init__(self, log_dir: LogDir, config: SystemConfig, logger: logging.Logger, notifier: Notifier | None = None):
        self.log_dir, self.logger = log_dir, logger
        self.config, self.notifier = config, notifier or Notifier.for_run(config)
        self.start, self.end, self.bar = config.start, config.end, config.bar_delta
        self.every_bars = config.broker.statement_every_bars
        self.first = self.start + pd.Timedelta(milliseconds=1)  # a row at the start belongs to the session before
        self.since = self.first
        self.seen: set[tuple[str, str]] = set()
        if (log_dir.path / INCOME).exists():
            recorded = log_dir.read_table(INCOME)
            self.seen = set(zip(recorded["income_type"], recorded["tran_id"], strict=True))
            if len(recorded):
                self.since = max(self.since, recorded["income_at"].max())  # inclusive: ties are deduplicated
        self.opened = (log_dir.path / ACCOUNT).exists()
        self.failed = False

    def open(self, broker: Broker) -> None:
        """The balances before the session's first order (once per session, not at a restart)."""
        if not self.opened:
            self.pull(broker, self.start)

    def after_bar(self, broker: Broker, bar_end: pd.Timestamp) -> None:
        """Every ``every_bars``-th bar of the session, its last bar, and the bar after a failed pull."""
        due = int((bar_end - self.start) / self.bar) % self.every_bars == 0 or bar_end >= self.end
        if due or self.failed or not self.opened:
            self.pull(broker, bar_end)

    def pull(self, broker: Broker, bar_end: pd.Timestamp) -> None:
        seen = set(self.seen)
        try:
            statement = broker.statement(max(self.first, self.since - LATE_ROWS), seen)
        except BrokerError as error:
            self.logger.warning("bar %s: the exchange's statement not pulled (%s); next time", bar_end, error)
            self.failed = True  # retried at the next bar
            return
        if statement is None:
            return
        income = statement.income.assign(bar_end=bar_end)
        part = self.log_dir.path / INCOME / f"part-{compact(bar_end)}.parquet"
        if part.exists():  # the bar recorded again after a restart: keep what it pulled the first time
            income = pd.concat([self.log_dir.read_part(INCOME, part), income], ignore_index=True)
        self.log_dir.write_table(INCOME, income, bar_end)
        self.log_dir.write_table(ACCOUNT, pd.DataFrame([{"bar_end": bar_end, **statement.account}]), bar_end)
        self._margin(statement.account, bar_end)
        self.seen = seen
        if len(statement.income):
            self.since = max(self.since, statement.income["income_at"].max())
        self.opened, self.failed = True, False

    def _margin(self, account: dict, bar_end: pd.Timestamp) -> None:
        """MARGIN when the account's margin ratio reaches ``risk.margin_ratio_alert`` (keyed by the
        session's model and mode: repeated only after the alerts' repeat window)."""
        limit, ratio = self.config.risk.margin_ratio_alert, account.get("margin_ratio")
        if limit is None or ratio is None or not ratio >= limit:
            return
        self.notifier.send(
            Alert(
                AlertKind.MARGIN,
                run_subject(self.config),
                f"bar {bar_end.isoformat()}: margin ratio {ratio:.1%} (maintenance margin "
                f"{account['maint_margin']:,.2f} / margin balance {account['margin_balance']:,.2f} USDT) reached "
                f"risk.margin_ratio_alert {limit:.0%}; liquidation at 100%",
                cause_of(AlertKind.MARGIN, self.config),
            )
        )
