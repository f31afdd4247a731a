"""Production vs research: compare a run's portfolio with its research equivalent.

The research portfolio is rebuilt from the predictions the run recorded (``target_positions``) and
the market data; the comparison gives the figures of ``summary.json``: the correlation of per-bar
PnL, the largest per-bar difference, both cumulative PnLs, and the first bar and asset where
targets, holdings or PnL diverge beyond a tolerance. It also times the run: each DAG node per bar,
and the orders' delay after the bar's close.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from prod_system.analysis.research import research_portfolio
from prod_system.common.timeutil import bar_ends
from prod_system.config import SystemConfig
from prod_system.data.market_data import CandleStore
from prod_system.errors import ReconciliationError
from prod_system.log_dir import LogDir


@dataclass
class ReconciliationSummary:
    pnl_correlation: float
    max_abs_pnl_diff: float
    cumulative_pnl_prod: float
    cumulative_pnl_research: float
    gross_volume_prod: float
    first_divergence: dict | None  # {"bar_end": ..., "asset": ..., "what": "target"|"holdings"|"pnl"} or None
    bars: int

    @property
    def identical_and_flat(self) -> bool:
        """Per-bar PnL constant on both sides (nothing traded yet: the correlation is undefined) and
        equal to the cent on every bar: production and research agree exactly."""
        return bool(not np.isfinite(self.pnl_correlation) and self.max_abs_pnl_diff < 0.005)

    @property
    def reconciled(self) -> bool:
        """Per-bar PnL correlation >= 0.999 and cumulative PnL within 0.1% of the volume traded (or
        both sides flat and identical, where a correlation is undefined)."""
        if self.identical_and_flat:
            return True
        gap = abs(self.cumulative_pnl_prod - self.cumulative_pnl_research)
        return bool(self.pnl_correlation >= 0.999 and gap <= 0.001 * max(self.gross_volume_prod, 1e-9))

    def to_dict(self) -> dict:
        return {**asdict(self), "reconciled": self.reconciled}

    def verdict(self) -> str:
        """One line a person can act on."""
        if self.reconciled and self.first_divergence is None:
            if self.identical_and_flat:
                return f"reconciled: identical per-bar pnl over {self.bars} bars (flat: nothing traded yet)"
            return f"reconciled: pnl correlation {self.pnl_correlation:.6f} over {self.bars} bars"
        where = (
            f"first divergence at {self.first_divergence['bar_end']} on {self.first_divergence['asset']} "
            f"({self.first_divergence['what']})"
            if self.first_divergence
            else "no single bar beyond tolerance"
        )
        gap = self.cumulative_pnl_prod - self.cumulative_pnl_research
        state = "NOT reconciled" if not self.reconciled else "reconciled in total, but"
        if np.isfinite(self.pnl_correlation):
            correlation = f"{self.pnl_correlation:.4f}"
        elif self.bars < 2:
            correlation = "undefined (a single bar)"
        else:
            correlation = f"undefined (per-bar pnl constant over the {self.bars} bars: nothing traded yet?)"
        return (
            f"{state}: pnl correlation {correlation}, cumulative pnl prod - research "
            f"{gap:,.2f} USDT on {self.gross_volume_prod:,.0f} USDT traded; {where}"
        )


@dataclass
class Reconciliation:
    """Everything the observer shows about one run over one window."""

    summary: ReconciliationSummary
    per_bar: pd.DataFrame  # bar_end, pnl_prod, pnl_research, cumulative_*, gross_volume_*, gmv_*
    side_by_side: pd.DataFrame  # bar_end, asset, {target,holdings,pnl}_{prod,research} (+ shares)
    node_timing: pd.DataFrame  # per DAG node: bars, median/p95/max ms, share of time, peak memory
    bar_timing: pd.DataFrame  # per bar: seconds of each node, dag_seconds, decision and order delays
    timing: dict  # headline timing figures


def reconcile(
    config: SystemConfig,
    log_dir: LogDir,
    store: CandleStore,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    holdings_tolerance: float = 10.0,
    pnl_tolerance: float = 1.0,
) -> Reconciliation:
    """Compare the run in ``log_dir`` with its research portfolio over the bars ending in (start, end].

    The research portfolio starts where the run started (flat, at ``config.start``) and runs to the
    last bar the run has recorded, so a live run can be reconciled while it is still trading.
    """
    try:
        prod_stats = log_dir.read_table("portfolio/statistics").sort_values("bar_end")
        recorded = log_dir.read_table("target_positions")
    except FileNotFoundError as error:
        raise ReconciliationError(f"cannot reconcile {log_dir.path}: {error}") from None
    if prod_stats.empty:
        raise ReconciliationError(f"cannot reconcile {log_dir.path}: the run has recorded no bar yet")
    if prod_stats["bar_end"].duplicated().any():
        twice = prod_stats.loc[prod_stats["bar_end"].duplicated(), "bar_end"].iloc[0]
        raise ReconciliationError(f"{log_dir.path}: the statistics of {twice.isoformat()} are recorded more than once")
    last = prod_stats["bar_end"].max()
    if store.first_bar_end > config.start + config.bar_delta or store.last_bar_end < last:
        raise ReconciliationError(
            f"the market data ({store.first_bar_end} to {store.last_bar_end}) does not cover the run "
            f"({config.start} to {last}): research needs the same candles"
        )
    bars = bar_ends(config.start, min(last, config.end), config.bar_delta)
    research = research_portfolio(
        config, recorded[["bar_end", "asset", "prediction", "volatility", "price"]], store, bars
    )
    lo = config.start if start is None else max(start, config.start)
    hi = last if end is None else min(end, last)
    window = bars[(bars > lo) & (bars <= hi)]
    if window.empty:
        raise ReconciliationError(f"no bar of {log_dir.path} ends in ({lo}, {hi}]")

    per_bar = _per_bar(prod_stats, research["portfolio/statistics"], window)
    side = _side_by_side(log_dir, recorded, research, window)
    prod, res = per_bar["pnl_prod"], per_bar["pnl_research"]
    both = prod.notna() & res.notna()
    correlation = _correlation(prod[both].to_numpy(), res[both].to_numpy())
    summary = ReconciliationSummary(
        pnl_correlation=correlation,
        max_abs_pnl_diff=float((prod - res).abs().max()),
        cumulative_pnl_prod=float(prod.sum()),
        cumulative_pnl_research=float(res.sum()),
        gross_volume_prod=float(per_bar["gross_volume_prod"].sum()),
        first_divergence=_first_divergence(side, holdings_tolerance, pnl_tolerance),
        bars=len(window),
    )
    node_timing, bar_timing, timing = _timing(log_dir, window)
    return Reconciliation(summary, per_bar, side, node_timing, bar_timing, timing)


def _correlation(prod: np.ndarray, research: np.ndarray) -> float:
    """The correlation of the per-bar PnLs; NaN when it is undefined: fewer than two bars, or a side
    whose PnL does not vary (a session that has not traded yet: all zeros)."""
    if len(prod) < 2 or not (np.std(prod) > 0 and np.std(research) > 0):
        return float("nan")
    return float(np.corrcoef(prod, research)[0, 1])


def _per_bar(prod: pd.DataFrame, research: pd.DataFrame, window: pd.DatetimeIndex) -> pd.DataFrame:
    columns = ["pnl", "gross_volume", "gmv", "net_wealth"]
    p = prod.set_index("bar_end")[columns].reindex(window)
    r = research.set_index("bar_end")[columns].reindex(window)
    out = p.add_suffix("_prod").join(r.add_suffix("_research"))
    out["cumulative_pnl_prod"] = out["pnl_prod"].cumsum()
    out["cumulative_pnl_research"] = out["pnl_research"].cumsum()
    return out.rename_axis("bar_end").reset_index()


def _side_by_side(
    log_dir: LogDir, recorded: pd.DataFrame, research: dict[str, pd.DataFrame], window: pd.DatetimeIndex
) -> pd.DataFrame:
    """Per bar and asset: targets, holdings and PnL of production next to research (USDT, and shares)."""
    index = pd.MultiIndex.from_product([window, research["target_positions"]["asset"].unique()])
    index = index.set_names(["bar_end", "asset"])
    pairs = {  # name: (production table, research table, column)
        "target": (recorded, research["target_positions"], "target_notional"),
        "holdings": (
            log_dir.read_table("portfolio/holdings_notional"),
            research["portfolio/holdings_notional"],
            "notional",
        ),
        "pnl": (log_dir.read_table("portfolio/pnl"), research["portfolio/pnl"], "pnl"),
        "target_shares": (recorded, research["target_positions"], "target_shares"),
        "holdings_shares": (
            log_dir.read_table("portfolio/holdings_shares"),
            research["portfolio/holdings_shares"],
            "shares",
        ),
    }
    frames = {}
    for name, (prod, res, column) in pairs.items():
        keyed = prod.set_index(["bar_end", "asset"])[column]
        if keyed.index.has_duplicates:
            bar_end, asset = keyed.index[keyed.index.duplicated()][0]
            raise ReconciliationError(
                f"{log_dir.path}: the {name} of {asset} at {bar_end.isoformat()} is recorded more than once"
            )
        frames[f"{name}_prod"] = keyed.reindex(index)
        frames[f"{name}_research"] = res.set_index(["bar_end", "asset"])[column].reindex(index)
    return pd.DataFrame(frames).reset_index()


def _first_divergence(side: pd.DataFrame, holdings_tolerance: float, pnl_tolerance: float) -> dict | None:
    """The earliest (bar, asset) whose target or holdings differ in value by more than
    ``holdings_tolerance`` USDT, or whose PnL differs by more than ``pnl_tolerance`` USDT.

    The holdings tolerance absorbs production's skipped dust orders (under the 5 USDT min notional),
    which research does not skip."""
    tolerances = {"target": holdings_tolerance, "holdings": holdings_tolerance, "pnl": pnl_tolerance}
    candidates = []
    for name, tolerance in tolerances.items():
        gap = (side[f"{name}_prod"] - side[f"{name}_research"]).abs()
        # a value on one side only (a missing row) is a divergence too
        off = (gap > tolerance) | (side[f"{name}_prod"].isna() != side[f"{name}_research"].isna())
        if off.any():
            row = side[off].iloc[0]
            candidates.append((row["bar_end"], list(tolerances).index(name), row["asset"], name))
    if not candidates:
        return None
    bar_end, _, asset, what = min(candidates)
    return {"bar_end": bar_end.isoformat(), "asset": asset, "what": what}


def _quantiles(values: pd.Series, scale: float = 1.0) -> dict:
    values = values.dropna()
    if values.empty:
        return {"median": None, "p95": None, "max": None}
    return {
        "median": float(values.median() * scale),
        "p95": float(values.quantile(0.95) * scale),
        "max": float(values.max() * scale),
    }


def _timing(log_dir: LogDir, window: pd.DatetimeIndex) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Execution time per DAG node and per bar, and the orders' delay after the bar's close."""
    profiling = log_dir.read_table("dag/profiling")
    profiling = profiling[profiling["bar_end"].isin(window)]
    per_node = profiling.groupby("node", sort=False)
    node_timing = pd.DataFrame(
        {
            "bars": per_node.size(),
            "median_ms": per_node["seconds"].median() * 1e3,
            "p95_ms": per_node["seconds"].quantile(0.95) * 1e3,
            "max_ms": per_node["seconds"].max() * 1e3,
            "share_of_dag_time": per_node["seconds"].sum() / max(profiling["seconds"].sum(), 1e-12),
            "peak_memory_mb_max": per_node["peak_memory_bytes"].max() / 1e6,
        }
    ).rename_axis("node")
    bar_timing = profiling.pivot_table(index="bar_end", columns="node", values="seconds", aggfunc="sum")
    bar_timing = bar_timing.reindex(index=window, columns=list(node_timing.index))
    bar_timing["dag_seconds"] = bar_timing.sum(axis=1, min_count=1)
    decided = profiling.groupby("bar_end")["decided_at"].max().reindex(window)
    bar_timing["decision_delay_seconds"] = (decided - window).dt.total_seconds().to_numpy()
    orders = log_dir.read_table("orders")
    orders = orders[orders["bar_end"].isin(window)]
    delay = (orders["submitted_at"] - orders["bar_end"]).dt.total_seconds()
    bar_timing["order_delay_seconds"] = delay.groupby(orders["bar_end"]).max().reindex(window).to_numpy()
    timing = {
        "dag_ms_per_bar": _quantiles(bar_timing["dag_seconds"], 1e3),
        "decision_delay_seconds": _quantiles(bar_timing["decision_delay_seconds"]),
        "order_delay_seconds": _quantiles(delay),
        "orders": len(orders),
        "slowest_node": str(node_timing["median_ms"].idxmax()) if len(node_timing) else None,
    }
    return node_timing.reset_index(), bar_timing.rename_axis("bar_end").reset_index(), timing
