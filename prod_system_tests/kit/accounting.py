"""The accounting identity of a run's log dir, checked from its tables alone, in every mode.

    net_wealth(t) - net_wealth(t-1) = trading_pnl(t) - fees(t) + funding(t)

with each term recomputed independently: trading PnL from the holdings and trades tables, fees from
the fills (and, for the mocked broker, from the fee rate on their notional), funding from the shares
held at each settlement and the settlement's rate and mark. A sign flipped anywhere fails it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from prod_system.log_dir import LogDir


def wide(log_dir: LogDir, table: str, column: str) -> pd.DataFrame:
    frame = log_dir.read_table(table)
    return frame.pivot_table(index="bar_end", columns="asset", values=column, aggfunc="sum")


def assert_accounting(
    log_dir: LogDir,
    taker_fee: float | None = None,
    settlements: pd.DataFrame | None = None,
    initial_cash: float | None = None,
) -> dict:
    """Check the identity on every bar of ``log_dir``; ``taker_fee``: every fill paid it on its notional
    (the mocked broker); ``settlements`` (asset, funding_time, rate, mark_price NaN for the bar's close):
    the funding each bar must have booked. Returns the totals (trading_pnl, fees, funding)."""
    stats = log_dir.read_table("portfolio/statistics").sort_values("bar_end").set_index("bar_end")
    bars = stats.index
    shares = wide(log_dir, "portfolio/holdings_shares", "shares").reindex(bars)
    notional = wide(log_dir, "portfolio/holdings_notional", "notional").reindex(bars)
    traded = wide(log_dir, "portfolio/executed_trades_notional", "notional").reindex(bars).fillna(0.0)
    fills = log_dir.read_table("fills")

    # trading PnL: the holdings' change of value minus what was paid for the trades
    trading = (notional - notional.shift(1).fillna(0.0) - traded).sum(axis=1)
    first = bars[0]
    if initial_cash is None:  # a session carried over from an earlier one: its first bar is checked from its own cash
        trading = trading.drop(first)
    np.testing.assert_allclose(stats.loc[trading.index, "trading_pnl"], trading, atol=1e-6)

    # fees: what the fills say they paid, and (mocked) the fee rate on their notional
    fees = fills.groupby("bar_end")["fee"].sum().reindex(bars, fill_value=0.0)
    np.testing.assert_allclose(stats["fees"], fees, atol=1e-9)
    if taker_fee is not None:
        np.testing.assert_allclose(fills["fee"], fills["notional"].abs() * taker_fee, rtol=1e-12)
        assert (fills["fee"] > 0).all()

    # funding: -shares held at the settlement x mark x rate
    if settlements is not None:
        prices = (notional / shares.where(shares != 0)).ffill()
        expected = pd.Series(0.0, index=bars)
        for row in settlements.itertuples():
            bar = bars[bars.searchsorted(row.funding_time)]
            mark = row.mark_price if np.isfinite(row.mark_price) else prices.loc[bar, row.asset]
            held = shares.loc[bar, row.asset]
            expected[bar] += -held * (mark if held else 0.0) * row.rate
        np.testing.assert_allclose(stats["funding"], expected, atol=1e-6)

    # the identity, and cash and net wealth from it
    pnl = stats["trading_pnl"] - stats["fees"] + stats["funding"]
    np.testing.assert_allclose(stats["pnl"], pnl, atol=1e-6)
    np.testing.assert_allclose(stats["net_wealth"].diff().iloc[1:], pnl.iloc[1:], atol=1e-6)
    np.testing.assert_allclose(stats["nmv"] + stats["cash"], stats["net_wealth"], atol=1e-6)
    cash_moves = (stats["funding"] - stats["fees"] - traded.sum(axis=1)).iloc[1:]
    np.testing.assert_allclose(stats["cash"].diff().iloc[1:], cash_moves, atol=1e-6)
    if initial_cash is not None:
        np.testing.assert_allclose(stats["net_wealth"], initial_cash + pnl.cumsum(), atol=1e-6)
    return {"trading_pnl": stats["trading_pnl"].sum(), "fees": stats["fees"].sum(), "funding": stats["funding"].sum()}
