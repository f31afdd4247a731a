"""A prod session's checks against the exchange while it trades: every ``broker.check_every_bars``
traded bars, the exchange's positions and open orders against the portfolio's (``Broker.check``, the
same comparison as at the session's start). (The margin alert comes with the exchange's statement:
``exchange_statement``.)

A check runs once the bar is recorded: its orders are placed (every TWAP wave), the fills the
exchange gave are counted, and what they filled beyond (not listed in its trades yet, or an order
still open) is the broker's own business, not a mismatch. On a mismatch the session alerts
(``exchange mismatch``), then follows ``broker.on_mismatch``:

- ``refuse``: no more orders. The following bars are recorded skipped with the reason; each of them
  checks again (two requests to the exchange), and trading resumes at the first bar whose
  check agrees (an operator cancelled the stray order or restored the position).
- ``adopt``: the open orders the session did not place are cancelled and the exchange's positions are
  taken, as fills (``ps-adopt-<bar>-<asset>``, at the exchange's mark, no fee) applied with the next
  traded bar like the fills counted after sending: the fills table records them, the cash pays for
  them, so the accounting identity holds; a restart finds them in the state file.

A check the exchange does not answer (or an adoption deferred: ``ExchangeBroker.adopt``) is logged and
made again after the next traded bar. Dagster's per-bar runs are one process per bar: each checks at
its start (``Broker.reconcile``), so ``check_every_bars`` paces the CLI and session-job sessions.
"""

from __future__ import annotations

import logging

import pandas as pd

from prod_system.alerts import Alert, AlertKind, Notifier, cause_of, run_subject
from prod_system.config import SystemConfig
from prod_system.errors import BrokerError
from prod_system.trading.brokers.base import Broker, ExchangeCheck


class ExchangeWatch:
    """The in-session checks of one session (none for a broker without a venue: ``check`` is None)."""

    def __init__(self, config: SystemConfig, logger: logging.Logger, notifier: Notifier | None = None):
        self.config, self.logger = config, logger
        self.notifier = notifier or Notifier.for_run(config)
        self.every = config.broker.check_every_bars
        self.on_mismatch = config.broker.on_mismatch
        self.traded = 0  # bars traded by this process since the last check
        self.due = False  # a check failed: again at the next bar
        self.refusing = ""  # why no order is sent ('' when trading)

    def alert(self, check: ExchangeCheck) -> None:
        """EXCHANGE_MISMATCH: what differs, and what the session does about it (one message per
        disagreement within the repeat window: the cause is the differing assets, not the figures)."""
        action = (
            "no order is sent while they disagree (broker.on_mismatch: refuse)"
            if self.on_mismatch == "refuse"
            else "adopting the exchange's positions, cancelling the open orders not ours (broker.on_mismatch: adopt)"
        )
        what = ",".join(check.differ + (["open orders"] if check.stray_orders else []))
        self.notifier.send(
            Alert(
                AlertKind.EXCHANGE_MISMATCH,
                run_subject(self.config),
                f"the exchange disagrees with the portfolio: {check.text()}; {action}",
                cause_of(AlertKind.EXCHANGE_MISMATCH, self.config, what),
            )
        )

    def after_bar(self, broker: Broker, portfolio: pd.Series, apply_at: pd.Timestamp) -> list[dict]:
        """After a traded bar is recorded: the check when due (every ``every`` traded bars, or after a
        failed one). ``portfolio``: the portfolio's shares plus the fills counted and not applied yet.
        Returns the adopted positions as fills applied at ``apply_at`` ([] if none)."""
        self.traded += 1
        if not (self.due or (self.every and self.traded >= self.every)):
            return []
        return self._check(broker, portfolio, apply_at)

    def before_bar(self, broker: Broker, portfolio: pd.Series, bar_end: pd.Timestamp) -> str:
        """While refusing: check again at the bar's close; '' when the exchange agrees now (the bar
        trades), else why the bar is skipped."""
        if not self.refusing:
            return ""
        self._check(broker, portfolio, bar_end)
        return self.refusing

    def _check(self, broker: Broker, portfolio: pd.Series, apply_at: pd.Timestamp) -> list[dict]:
        self.traded = 0
        try:
            check = broker.check(portfolio)
            if check is None or check.agrees:
                self.due = False
                if self.refusing:
                    self.logger.warning("the exchange agrees with the portfolio again: trading resumes")
                self.refusing = ""
                return []
            self.alert(check)
            if self.on_mismatch == "refuse":
                self.refusing = f"the exchange disagrees with the portfolio ({check.text()}): not trading"
                self.due = False
                return []
            fills = broker.adopt(check, apply_at)
        except BrokerError as error:
            self.logger.warning("the check against the exchange failed (%s): again at the next bar", error)
            self.due = True
            return []
        self.due = False
        return fills
