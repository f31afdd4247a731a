"""Production vs research: compare a run's portfolio with its research equivalent.

The research portfolio is rebuilt from the predictions the run recorded (``target_positions``) and
the market data; the comparison gives the figures of ``summary.json``: the correlation of per-bar
PnL, the largest per-bar difference, both cumulative PnLs, and the first bar and asset where
holdings or PnL diverge beyond a tolerance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from prod_system.core.config import SystemConfig
from prod_system.core.log_dir import LogDir
from prod_system.core.market_data import CandleStore
from prod_system.core.research import research_portfolio
from prod_system.core.timeutil import bar_ends


@dataclass
class ReconciliationSummary:
    pnl_correlation: float
    max_abs_pnl_diff: float
    cumulative_pnl_prod: float
    cumulative_pnl_research: float
    gross_volume_prod: float
    first_divergence: dict | None  # {"bar_end": ..., "asset": ..., "what": ...} or None

    @property
    def reconciled(self) -> bool:
        """Per-bar PnL correlation >= 0.999 and cumulative PnL within 0.1% of the volume traded."""
        gap = abs(self.cumulative_pnl_prod - self.cumulative_pnl_research)
        return self.pnl_correlation >= 0.999 and gap <= 0.001 * max(self.gross_volume_prod, 1e-9)

    def to_dict(self) -> dict:
        return {**asdict(self), "reconciled": self.reconciled}


def reconcile(
    config: SystemConfig,
    log_dir: LogDir,
    store: CandleStore,
    holdings_tolerance: float = 10.0,
    pnl_tolerance: float = 1.0,
) -> tuple[ReconciliationSummary, dict[str, pd.DataFrame]]:
    """Compare the run in ``log_dir`` with its research portfolio; return the summary and the research tables."""
    recorded = log_dir.read_table("target_positions")[["bar_end", "asset", "prediction", "volatility", "price"]]
    bars = bar_ends(config.start, config.end, config.bar_delta)
    research = research_portfolio(config, recorded, store, bars)
    prod = log_dir.read_table("portfolio/statistics").set_index("bar_end")["pnl"].reindex(bars)
    res = research["portfolio/statistics"].set_index("bar_end")["pnl"].reindex(bars)
    both = prod.notna() & res.notna()
    correlation = float(np.corrcoef(prod[both], res[both])[0, 1]) if both.sum() > 1 else float("nan")
    first = _first_divergence(log_dir, research, holdings_tolerance, pnl_tolerance)
    summary = ReconciliationSummary(
        pnl_correlation=correlation,
        max_abs_pnl_diff=float((prod - res).abs().max()),
        cumulative_pnl_prod=float(prod.sum()),
        cumulative_pnl_research=float(res.sum()),
        gross_volume_prod=float(log_dir.read_table("portfolio/statistics")["gross_volume"].sum()),
        first_divergence=first,
    )
    return summary, research


def _first_divergence(
    log_dir: LogDir, research: dict[str, pd.DataFrame], holdings_tolerance: float, pnl_tolerance: float
) -> dict | None:
    """The earliest (bar, asset) whose holdings differ in value by more than ``holdings_tolerance``
    USDT, or whose PnL differs by more than ``pnl_tolerance`` USDT.

    The holdings tolerance absorbs production's skipped dust orders (under the 5 USDT min notional),
    which research does not skip."""
    candidates = []
    for table, column, tolerance in (
        ("portfolio/holdings_notional", "notional", holdings_tolerance),
        ("portfolio/pnl", "pnl", pnl_tolerance),
    ):
        prod = log_dir.read_table(table).set_index(["bar_end", "asset"])[column]
        res = research[table].set_index(["bar_end", "asset"])[column].reindex(prod.index)
        off = (prod - res).abs() > tolerance
        if off.any():
            bar_end, asset = off[off].index[0]
            candidates.append((bar_end, asset, column))
    if not candidates:
        return None
    bar_end, asset, what = min(candidates)
    return {"bar_end": bar_end.isoformat(), "asset": asset, "what": "holdings" if what == "notional" else what}
