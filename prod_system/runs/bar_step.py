"""One bar of trading, the same in a simulation and in a live session.

At a bar's decision time: collect the fills of the orders sent before, mark the portfolio at the
bar's last known closes, apply the fills, place the orders that move the holdings to the bar's
targets, and log the bar. A simulation (``stages.run_trading``) and a live session
(``live.LiveSession``) both trade through ``BarStep``, so that a replay and a paper session of the
same candles and targets place the same orders. What only a live session does (the in-flight orders
written before they are sent, a refused submit recorded instead of raised, market orders' fills
counted at once, the state file written before the bar's log line) it passes in as hooks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from prod_system.common.clock import Clock
from prod_system.config import SystemConfig
from prod_system.data.funding import FundingSchedule
from prod_system.errors import BrokerError
from prod_system.trading.brokers.base import Broker
from prod_system.trading.orders import make_orders
from prod_system.trading.portfolio import Portfolio


@dataclass
class BarTrade:
    """What one bar's step did."""

    bar_end: pd.Timestamp
    fills: list[dict]  # applied to the portfolio at this bar
    orders: list[dict]  # decided at this bar (sent, unless ``failure``)
    stats: dict  # the portfolio's statistics of the bar
    failure: str = ""  # why the orders were not executed: the bar is decided, not executed
    submitted_at: pd.Timestamp | None = None
    immediate_fills: list[dict] = field(default_factory=list)  # counted after the submit, applied next bar
    immediate_fills_at: pd.Timestamp = pd.NaT


class BarStep:
    """The trading sequence of a bar over one broker and portfolio (a run's, or a session's).

    The live-only parts, all off by default (a simulation's step):
    ``warn_unpriced=False``: the session has already said which assets have no candle this bar;
    ``before_submit(bar_end, orders)``: record the orders before they can reach the venue;
    ``on_broker_error(bar_end, error)``: a refused submit is recorded (the returned reason ends the
    bar's log line) rather than raised;
    ``count_immediate_fills``: count the fills of market orders right after they are sent.
    ``funding``: the run's funding settlements (none: no funding is applied).
    """

    def __init__(
        self,
        config: SystemConfig,
        broker: Broker,
        portfolio: Portfolio,
        clock: Clock,
        log: logging.Logger,
        *,
        warn_unpriced: bool = True,
        before_submit: Callable[[pd.Timestamp, list[dict]], None] | None = None,
        on_broker_error: Callable[[pd.Timestamp, BrokerError], str] | None = None,
        count_immediate_fills: bool = False,
        funding: FundingSchedule | None = None,
    ):
        self.config, self.broker, self.portfolio, self.clock, self.log = config, broker, portfolio, clock, log
        self.funding = funding
        self.warn_unpriced = warn_unpriced
        self.before_submit = before_submit
        self.on_broker_error = on_broker_error
        self.count_immediate_fills = count_immediate_fills

    def run(
        self,
        bar_end: pd.Timestamp,
        bar_closes: np.ndarray,
        target_shares: np.ndarray,
        counted_fills: list[dict] | None = None,
        record: Callable[[BarTrade], None] | None = None,
    ) -> BarTrade:
        """Trade the bar: ``bar_closes`` are its 1-minute closes (read before the fills are collected,
        so that a failed read consumes none of the venue's fills), ``target_shares`` the holdings it
        aims at, ``counted_fills`` fills counted earlier and applied now (with those collected now);
        ``record`` writes the bar down before its log line."""
        # fills counted earlier are stamped with the bar that applies them: this one if the bar they were
        # stamped with was skipped (the fills table and the portfolio's tables then agree on the bar)
        fills = [{**fill, "bar_end": bar_end} for fill in counted_fills or []] + self.broker.collect_fills(bar_end)
        prices = self._marks(bar_end, bar_closes)
        settlements = self.funding.due(self.clock.now(), bar_end, self.portfolio.funded_until) if self.funding else None
        stats = self.portfolio.update(bar_end, fills, prices, settlements)
        config = self.config
        orders = make_orders(
            bar_end,
            target_shares,
            self.portfolio.shares,
            prices,
            config.universe,
            config.portfolio,
            config.run_id,
            self.clock.now(),
        )
        if self.before_submit:
            self.before_submit(bar_end, orders)
        failure = self._submit(bar_end, orders)
        trade = BarTrade(bar_end, fills, orders, stats, failure, submitted_at=self.clock.now())
        if self.count_immediate_fills:
            trade.immediate_fills = self.broker.collect_immediate_fills(bar_end + config.bar_delta)
            trade.immediate_fills_at = self.clock.now() if trade.immediate_fills else pd.NaT
        if record:
            record(trade)
        log_bar(self.log, bar_end, fills, orders, stats, failure)
        return trade

    def _marks(self, bar_end: pd.Timestamp, bar_closes: np.ndarray) -> np.ndarray:
        """The bar's prices: each asset's last known close (NaN, and its last mark kept, if none)."""
        prices = last_close(bar_closes)
        unpriced = [a for a, p in zip(self.config.universe, prices, strict=True) if not np.isfinite(p)]
        if unpriced and self.warn_unpriced:
            self.log.warning(
                "bar %s: no price known for %s; their holdings keep their last mark",
                bar_end.isoformat(),
                ", ".join(unpriced),
            )
        return prices

    def _submit(self, bar_end: pd.Timestamp, orders: list[dict]) -> str:
        """Send the orders; returns why they were not executed ('' when sent)."""
        try:
            self.broker.submit(orders)
        except BrokerError as error:  # the exchange is down or refuses
            if self.on_broker_error is None:
                raise
            return self.on_broker_error(bar_end, error)
        return ""


def log_bar(log: logging.Logger, bar_end: pd.Timestamp, fills: list, orders: list, stats: dict, note: str = "") -> None:
    """The log line of a traded bar (simulation and live sessions alike), to the session's logger."""
    log.info(
        "bar %s: %d fills, %d orders, pnl=%.2f gmv=%.2f net_wealth=%.2f%s",
        bar_end.isoformat(),
        len(fills),
        len(orders),
        stats["pnl"],
        stats["gmv"],
        stats["net_wealth"],
        f" ({note})" if note else "",
    )


def last_close(close: np.ndarray) -> np.ndarray:
    """The last known close of each asset in the window (NaN if none)."""
    known = np.isfinite(close)
    last_row = np.where(known, np.arange(len(close))[:, None], -1).max(axis=0, initial=-1)
    picked = close[np.clip(last_row, 0, None), np.arange(close.shape[1])] if len(close) else last_row * np.nan
    return np.where(last_row >= 0, picked, np.nan)
