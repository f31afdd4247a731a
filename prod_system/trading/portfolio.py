"""The portfolio: holdings and executed trades in shares and notional, cash, and statistics.

Per bar t (after the fills recorded at t):

    holdings_notional_t = shares_t * price_t            (price: last known 1-minute close)
    pnl_t               = sum(holdings_notional_t - holdings_notional_{t-1}) - executed_trades_notional_t
                          (also kept per asset, in the ``portfolio/pnl`` table)
    cash_t              = cash_{t-1} - executed_trades_notional_t - fees_t
    net_wealth_t        = cash_t + nmv_t = initial_cash + cumulative pnl
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from prod_system.log_dir import columns

STATISTICS_COLUMNS = columns("portfolio/statistics")


def long_table(bars: pd.DatetimeIndex, assets: list[str], values: np.ndarray, column: str) -> pd.DataFrame:
    """A (bars x assets) array as a long table: bar_end, asset, ``column``."""
    return pd.DataFrame(
        {
            "bar_end": bars.repeat(len(assets)),
            "asset": np.tile(np.asarray(assets, dtype=object), len(bars)),
            column: values.ravel(),
        }
    )


@dataclass
class PortfolioState:
    """Everything needed to go on from a bar: holdings, their last value, cash, open orders."""

    shares: pd.Series
    notional: pd.Series
    cash: float
    open_orders: list[dict] = field(default_factory=list)
    bar_end: pd.Timestamp | None = None

    @classmethod
    def empty(cls, assets: list[str], cash: float) -> PortfolioState:
        zero = pd.Series(0.0, index=assets)
        return cls(shares=zero.copy(), notional=zero.copy(), cash=float(cash))

    def prices(self) -> pd.Series:
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.notional / self.shares).where(self.shares != 0)


class Portfolio:
    """Rolls holdings forward by fills and marks them to market, one bar at a time."""

    def __init__(self, state: PortfolioState):
        self.assets = list(state.shares.index)
        self._position = {asset: i for i, asset in enumerate(self.assets)}
        self.shares = state.shares.to_numpy(dtype="float64").copy()
        self.notional = state.notional.to_numpy(dtype="float64").copy()
        self.cash = float(state.cash)
        self.last_prices = state.prices().to_numpy(dtype="float64")
        self._bars: list[pd.Timestamp] = []
        self._rows: dict[str, list[np.ndarray]] = {
            k: [] for k in ("shares", "notional", "t_shares", "t_notional", "pnl")
        }
        self._statistics: list[dict] = []

    def update(self, bar_end: pd.Timestamp, fills: list[dict], prices: np.ndarray) -> dict:
        """Apply the fills recorded at ``bar_end``, mark at ``prices``; return the bar's statistics."""
        traded_shares = np.zeros(len(self.assets))
        traded_notional = np.zeros(len(self.assets))
        fees = 0.0
        for fill in fills:
            where = self._position[fill["asset"]]
            traded_shares[where] += fill["shares"]
            traded_notional[where] += fill["notional"]
            fees += fill["fee"]
        self.shares = np.round(self.shares + traded_shares, 10)
        self.cash -= float(traded_notional.sum()) + fees
        self.last_prices = np.where(np.isfinite(prices), prices, self.last_prices)
        # an asset never priced is flat (a fill always carries a price), so it is worth 0
        notional = self.shares * np.nan_to_num(self.last_prices, nan=0.0)
        asset_pnl = notional - self.notional - traded_notional
        pnl = float(asset_pnl.sum()) - fees
        self.notional = notional
        gmv, nmv = float(np.abs(notional).sum()), float(notional.sum())
        net_wealth = self.cash + nmv
        stats = {
            "bar_end": bar_end,
            "pnl": pnl,
            "gross_volume": float(np.abs(traded_notional).sum()),
            "net_volume": float(traded_notional.sum()),
            "gmv": gmv,
            "nmv": nmv,
            "cash": self.cash,
            "net_wealth": net_wealth,
            "leverage": gmv / net_wealth if net_wealth > 0 else np.nan,
            "fees": fees,
            "n_fills": len(fills),
        }
        self._bars.append(bar_end)
        for key, values in (
            ("shares", self.shares),
            ("notional", notional),
            ("t_shares", traded_shares),
            ("t_notional", traded_notional),
            ("pnl", asset_pnl),
        ):
            self._rows[key].append(values.copy())
        self._statistics.append(stats)
        return stats

    def state(self, open_orders: list[dict], bar_end: pd.Timestamp | None) -> PortfolioState:
        return PortfolioState(
            pd.Series(self.shares, index=self.assets),
            pd.Series(self.notional, index=self.assets),
            self.cash,
            open_orders,
            bar_end,
        )

    def tables(self, last_bar_only: bool = False) -> dict[str, pd.DataFrame]:
        """The log-dir tables, long form: one row per (bar_end, asset) or per bar_end; of every bar so
        far, or only of the last one (a live session writes one bar at a time)."""
        first = max(len(self._bars) - 1, 0) if last_bar_only else 0
        bars = pd.DatetimeIndex(self._bars[first:], tz="UTC") if self._bars else pd.DatetimeIndex([], tz="UTC")

        def long(key: str, column: str) -> pd.DataFrame:
            values = np.array(self._rows[key][first:]).reshape(len(bars), len(self.assets))
            return long_table(bars, self.assets, values, column)

        return {
            "portfolio/holdings_shares": long("shares", "shares"),
            "portfolio/holdings_notional": long("notional", "notional"),
            "portfolio/executed_trades_shares": long("t_shares", "shares"),
            "portfolio/executed_trades_notional": long("t_notional", "notional"),
            "portfolio/pnl": long("pnl", "pnl"),
            "portfolio/statistics": pd.DataFrame(self._statistics[first:], columns=STATISTICS_COLUMNS),
        }
