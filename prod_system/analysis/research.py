"""The research portfolio: the production system's trading, recomputed vectorised over a window.

From the predictions a run recorded (or a batch evaluation of the model) and the market data, with
the same sizing as production: the holdings of bar t are the targets decided at t-1 (100% fills),
trades are valued at the research price (the mean of the candle closes of the bar, the price the
mocked broker fills at, moved by the config's slippage), holdings are marked at the bar's last close,
each trade pays the taker fee and each funding settlement of the window is paid on the holdings of
the bar that contains it (``trading.costs``, ``data.funding``: the same as production). No per-bar
loop: the whole window is a handful of array operations, so months of bars take a fraction of a second.

It differs from production only where production is path-dependent: production skips an order worth
less than the min notional (unless it closes the position), research always trades to the target.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from prod_system.config import SystemConfig
from prod_system.data.funding import funding_schedule
from prod_system.data.market_data import CandleStore
from prod_system.trading.costs import funding_payments, slipped_prices, taker_fees
from prod_system.trading.portfolio import STATISTICS_COLUMNS, long_asset_column, long_table
from prod_system.trading.positions import run_sizing


def bar_prices(store: CandleStore, bars: pd.DatetimeIndex, bar: pd.Timedelta) -> tuple[np.ndarray, np.ndarray]:
    """Per bar and asset: the mean of the bar's candle closes, and its last close (NaN if none).

    Read once every candle of the store is known: research sees the past whole.
    """
    per_bar = bar // store.interval
    first_start = bars[0] - bar
    candles = store.visible(max(store.last_knowledge_ts, bars[-1]), first_start, until=bars[-1])
    close = candles.field("close")[: len(bars) * per_bar].reshape(len(bars), per_bar, -1)
    known = np.isfinite(close)
    count = known.sum(axis=1)
    mean = np.where(count > 0, np.where(known, close, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan)
    last_index = np.where(known, np.arange(per_bar)[None, :, None], -1).max(axis=1)
    last = np.take_along_axis(close, np.clip(last_index, 0, None)[:, None, :], axis=1)[:, 0, :]
    return mean, np.where(last_index >= 0, last, np.nan)


def research_portfolio(
    config: SystemConfig, predictions: pd.DataFrame, store: CandleStore, bars: pd.DatetimeIndex
) -> dict[str, pd.DataFrame]:
    """Holdings, trades, pnl and statistics of the research portfolio (the log dir's table layout)."""
    assets = config.universe
    targets = run_sizing(config, predictions, bars)
    wanted = targets.pivot(index="bar_end", columns="asset", values="target_shares").reindex(index=bars, columns=assets)
    # no target (missing data) = keep the holdings: carry the last target forward
    wanted = wanted.ffill().fillna(0.0).to_numpy()
    holdings = np.vstack([np.zeros((1, len(assets))), wanted[:-1]])  # held at t: decided at t-1
    trades = np.diff(holdings, axis=0, prepend=0.0)
    twap, last = bar_prices(store, bars, config.bar_delta)
    marks = pd.DataFrame(last).ffill().fillna(0.0).to_numpy()
    trade_price = slipped_prices(np.where(np.isfinite(twap), twap, marks), trades, config.costs)
    traded_notional = trades * trade_price
    fees = taker_fees(traded_notional, config.costs)
    notional = holdings * marks
    trading_pnl = notional - np.vstack([np.zeros((1, len(assets))), notional[:-1]]) - traded_notional
    funding, assumed = _funding(config, store, bars, holdings, marks)
    pnl_by_asset = trading_pnl - fees + funding
    cash = config.portfolio.initial_cash + (funding - traded_notional - fees).sum(axis=1).cumsum()
    gmv, nmv = np.abs(notional).sum(axis=1), notional.sum(axis=1)
    net_wealth = cash + nmv
    statistics = pd.DataFrame(
        {
            "bar_end": bars,
            "pnl": pnl_by_asset.sum(axis=1),
            "trading_pnl": trading_pnl.sum(axis=1),
            "gross_volume": np.abs(traded_notional).sum(axis=1),
            "net_volume": traded_notional.sum(axis=1),
            "gmv": gmv,
            "nmv": nmv,
            "cash": cash,
            "net_wealth": net_wealth,
            "leverage": np.where(net_wealth > 0, gmv / np.where(net_wealth > 0, net_wealth, 1.0), np.nan),
            "fees": fees.sum(axis=1),
            "funding": funding.sum(axis=1),
            "funding_assumed": assumed,
            "n_fills": (trades != 0).sum(axis=1),
        }
    )[STATISTICS_COLUMNS]

    asset_column = long_asset_column(assets, len(bars))

    def long(values: np.ndarray, column: str) -> pd.DataFrame:
        return long_table(bars, assets, values, column, asset_column)

    return {
        "target_positions": targets,
        "portfolio/holdings_shares": long(holdings, "shares"),
        "portfolio/holdings_notional": long(notional, "notional"),
        "portfolio/executed_trades_shares": long(trades, "shares"),
        "portfolio/executed_trades_notional": long(traded_notional, "notional"),
        "portfolio/pnl": long(pnl_by_asset, "pnl"),
        "portfolio/fees": long(fees, "fees"),
        "portfolio/funding": long(funding, "funding"),
        "portfolio/statistics": statistics,
        # the prices research traded and marked at: the reconciliation's attribution values prod's trades with them
        "bar_prices": long(marks, "mark").assign(trade_price=trade_price.ravel()),
    }


def _funding(
    config: SystemConfig, store: CandleStore, bars: pd.DatetimeIndex, holdings: np.ndarray, marks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per bar and asset, what the funding settlements add (a settlement at T is paid by the holdings of
    the bar that contains T, at the data's mark price, else the bar's last close), and per bar how many
    settlements used the assumed rate."""
    funding = np.zeros_like(holdings)
    assumed = np.zeros(len(bars), dtype=np.int64)
    schedule = funding_schedule(
        store.funding, config.universe, bars[0] - config.bar_delta, bars[-1], config.costs.funding
    )
    if schedule.empty:
        return funding, assumed
    rows = bars.searchsorted(schedule["funding_time"], side="left")  # the bar (b - bar, b] holding T
    cols = pd.Index(config.universe).get_indexer(schedule["asset"])
    mark = schedule["mark_price"].to_numpy(dtype="float64")
    mark = np.where(np.isfinite(mark), mark, marks[rows, cols])
    amounts = funding_payments(holdings[rows, cols], mark, schedule["rate"].to_numpy(dtype="float64"))
    np.add.at(funding, (rows, cols), amounts)
    np.add.at(assumed, rows, schedule["assumed"].to_numpy(dtype=np.int64))
    return funding, assumed
