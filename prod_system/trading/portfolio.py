"""The portfolio: holdings and executed trades in shares and notional, cash, and statistics.

Per bar t (after the fills recorded at t):

    holdings_notional_t = shares_t * price_t            (price: last known 1-minute close)
    trading_pnl_t       = sum(holdings_notional_t - holdings_notional_{t-1} - executed_trades_notional_t)
    fees_t              = the fills' fees (what the broker charged)
    funding_t           = sum over the settlements applied at t of -shares_T * mark_T * rate_T
    pnl_t               = trading_pnl_t - fees_t + funding_t   (per asset in ``portfolio/pnl``)
    cash_t              = cash_{t-1} - executed_trades_notional_t - fees_t + funding_t
    net_wealth_t        = cash_t + nmv_t = initial_cash + cumulative pnl

A settlement at T uses the shares held at T (after the fills of the bar that contains T) and the
mark price of the funding data, else the close of that bar; one published late is applied at the
first bar that knows it (``data.funding.FundingSchedule.due``), still with the shares held at T.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from prod_system.log_dir import columns
from prod_system.trading.costs import funding_payments

STATISTICS_COLUMNS = columns("portfolio/statistics")
HoldingsAt = Callable[[pd.Timestamp], "tuple[np.ndarray, np.ndarray] | None"]
logger = logging.getLogger("prod_system")


def long_table(
    bars: pd.DatetimeIndex, assets: list[str], values: np.ndarray, column: str, asset_column: pd.Series | None = None
) -> pd.DataFrame:
    """A (bars x assets) array as a long table: bar_end, asset, ``column``. ``asset_column``
    (``long_asset_column(assets, len(bars))``) lets the tables of one window share it."""
    if asset_column is None:
        asset_column = long_asset_column(assets, len(bars))
    return pd.DataFrame({"bar_end": bars.repeat(len(assets)), "asset": asset_column, column: values.ravel()})


def long_asset_column(assets: list[str], bars: int) -> pd.Series:
    """The asset column of a long table: made once for the tables of a window, since turning Python
    strings into pandas' string column is most of a long table's cost (research makes ten)."""
    return pd.Series(np.tile(np.asarray(assets, dtype=object), bars), dtype=pd.StringDtype(na_value=np.nan))


@dataclass
class PortfolioState:
    """Everything needed to go on from a bar: holdings, their last value, cash, open orders."""

    shares: pd.Series
    notional: pd.Series
    cash: float
    open_orders: list[dict] = field(default_factory=list)
    bar_end: pd.Timestamp | None = None
    # per asset, the last funding settlement applied: a resumed session never pays one twice
    funded_until: dict[str, pd.Timestamp] = field(default_factory=dict)

    @classmethod
    def empty(cls, assets: list[str], cash: float) -> PortfolioState:
        zero = pd.Series(0.0, index=assets)
        return cls(shares=zero.copy(), notional=zero.copy(), cash=float(cash))

    def prices(self) -> pd.Series:
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.notional / self.shares).where(self.shares != 0)


class Portfolio:
    """Rolls holdings forward by fills and marks them to market, one bar at a time."""

    def __init__(self, state: PortfolioState, history: HoldingsAt | None = None):
        """``history(time)``: the shares and marks (arrays in the state's asset order) of the bar that
        contains ``time``, for a settlement whose rate is learnt after a bar this process did not record
        (a restarted session, a run per bar); None when unknown."""
        self.assets = list(state.shares.index)
        self.history = history
        self._first_after = state.bar_end  # the bars this process records come after it
        self._position = {asset: i for i, asset in enumerate(self.assets)}
        self.shares = state.shares.to_numpy(dtype="float64").copy()
        self.notional = state.notional.to_numpy(dtype="float64").copy()
        self.cash = float(state.cash)
        self.last_prices = state.prices().to_numpy(dtype="float64")
        self.funded_until = dict(state.funded_until)
        self._bars: list[pd.Timestamp] = []
        self._rows: dict[str, list[np.ndarray]] = {
            k: [] for k in ("shares", "notional", "t_shares", "t_notional", "pnl", "fees", "funding")
        }
        self._statistics: list[dict] = []

    def update(
        self, bar_end: pd.Timestamp, fills: list[dict], prices: np.ndarray, settlements: pd.DataFrame | None = None
    ) -> dict:
        """Apply the fills recorded at ``bar_end``, mark at ``prices``, then the funding ``settlements``
        due (``FundingSchedule.due``); return the bar's statistics."""
        n = len(self.assets)
        traded_shares, traded_notional, fees = np.zeros(n), np.zeros(n), np.zeros(n)
        for fill in fills:
            where = self._position[fill["asset"]]
            traded_shares[where] += fill["shares"]
            traded_notional[where] += fill["notional"]
            fees[where] += fill["fee"]
        self.shares = np.round(self.shares + traded_shares, 10)
        self.last_prices = np.where(np.isfinite(prices), prices, self.last_prices)
        # an asset never priced is flat (a fill always carries a price), so it is worth 0
        notional = self.shares * np.nan_to_num(self.last_prices, nan=0.0)
        trading_pnl = notional - self.notional - traded_notional
        funding, assumed = self._funding(bar_end, settlements)
        asset_pnl = trading_pnl - fees + funding
        self.cash += float(funding.sum() - traded_notional.sum() - fees.sum())
        self.notional = notional
        gmv, nmv = float(np.abs(notional).sum()), float(notional.sum())
        net_wealth = self.cash + nmv
        stats = {
            "bar_end": bar_end,
            "pnl": float(asset_pnl.sum()),
            "trading_pnl": float(trading_pnl.sum()),
            "gross_volume": float(np.abs(traded_notional).sum()),
            "net_volume": float(traded_notional.sum()),
            "gmv": gmv,
            "nmv": nmv,
            "cash": self.cash,
            "net_wealth": net_wealth,
            "leverage": gmv / net_wealth if net_wealth > 0 else np.nan,
            "fees": float(fees.sum()),
            "funding": float(funding.sum()),
            "funding_assumed": assumed,
            "n_fills": len(fills),
        }
        self._bars.append(bar_end)
        for key, values in (
            ("shares", self.shares),
            ("notional", notional),
            ("t_shares", traded_shares),
            ("t_notional", traded_notional),
            ("pnl", asset_pnl),
            ("fees", fees),
            ("funding", funding),
        ):
            self._rows[key].append(values.copy())
        self._statistics.append(stats)
        return stats

    def _funding(self, bar_end: pd.Timestamp, settlements: pd.DataFrame | None) -> tuple[np.ndarray, int]:
        """Per asset, what the settlements add to the account (and how many used the assumed rate)."""
        funding = np.zeros(len(self.assets))
        if settlements is None or settlements.empty:
            return funding, 0
        where = np.array([self._position[asset] for asset in settlements["asset"]])
        shares, marks = self.shares[where].copy(), np.nan_to_num(self.last_prices[where], nan=0.0)
        previous = self._bars[-1] if self._bars else self._first_after
        late = (
            (settlements["funding_time"] <= previous).to_numpy() if previous is not None else np.zeros(len(where), bool)
        )
        for i in np.flatnonzero(late):  # published after its bar: the shares and mark of the bar that contains it
            shares[i], marks[i] = self._held_at(settlements["funding_time"].iloc[i], where[i], bar_end)
        known_mark = settlements["mark_price"].to_numpy(dtype="float64")
        marks = np.where(np.isfinite(known_mark), known_mark, marks)
        amounts = funding_payments(shares, marks, settlements["rate"].to_numpy(dtype="float64"))
        np.add.at(funding, where, amounts)
        for asset, time in settlements.groupby("asset")["funding_time"].max().items():
            self.funded_until[asset] = time
        return funding, int(settlements["assumed"].sum())

    def _held_at(self, time: pd.Timestamp, where: int, bar_end: pd.Timestamp) -> tuple[float, float]:
        """The shares and mark of an asset at the bar that contains ``time``: one this process recorded,
        else ``history``'s; the current ones (with a warning) when neither knows that bar."""
        i = bisect.bisect_left(self._bars, time)
        # bar i contains ``time`` when the bar before it (the state's, for the first) ended before it
        if i < len(self._bars) and (i > 0 or self._first_after is None or time > self._first_after):
            shares, notional = self._rows["shares"][i][where], self._rows["notional"][i][where]
            return float(shares), float(notional / shares) if shares else 0.0
        held = self.history(time) if self.history else None
        if held is not None:
            shares, marks = held
            return float(shares[where]), float(np.nan_to_num(marks[where]))
        logger.warning(
            "bar %s: the funding settlement of %s at %s is paid on the current holdings: the holdings at that "
            "time are not recorded",
            bar_end.isoformat(),
            self.assets[where],
            time.isoformat(),
        )
        return float(self.shares[where]), float(np.nan_to_num(self.last_prices[where]))

    def state(self, open_orders: list[dict], bar_end: pd.Timestamp | None) -> PortfolioState:
        return PortfolioState(
            pd.Series(self.shares, index=self.assets),
            pd.Series(self.notional, index=self.assets),
            self.cash,
            open_orders,
            bar_end,
            dict(self.funded_until),
        )

    def tables(self, last_bar_only: bool = False) -> dict[str, pd.DataFrame]:
        """The log-dir tables, long form: one row per (bar_end, asset) or per bar_end; of every bar so
        far, or only of the last one (a live session writes one bar at a time)."""
        first = max(len(self._bars) - 1, 0) if last_bar_only else 0
        bars = pd.DatetimeIndex(self._bars[first:], tz="UTC") if self._bars else pd.DatetimeIndex([], tz="UTC")

        asset_column = long_asset_column(self.assets, len(bars))

        def long(key: str, column: str) -> pd.DataFrame:
            values = np.array(self._rows[key][first:]).reshape(len(bars), len(self.assets))
            return long_table(bars, self.assets, values, column, asset_column)

        return {
            "portfolio/holdings_shares": long("shares", "shares"),
            "portfolio/holdings_notional": long("notional", "notional"),
            "portfolio/executed_trades_shares": long("t_shares", "shares"),
            "portfolio/executed_trades_notional": long("t_notional", "notional"),
            "portfolio/pnl": long("pnl", "pnl"),
            "portfolio/fees": long("fees", "fees"),
            "portfolio/funding": long("funding", "funding"),
            "portfolio/statistics": pd.DataFrame(self._statistics[first:], columns=STATISTICS_COLUMNS),
        }
