"""Production vs research: compare a run's portfolio with its research equivalent.

The research portfolio is rebuilt from the predictions the run recorded (``target_positions``) and
the market data, with the same costs; the comparison gives the figures of ``summary.json``: the
correlation of per-bar PnL, the largest per-bar difference, both cumulative PnLs, and the first bar
and asset where targets, holdings, fees, funding or PnL diverge beyond a tolerance. It also times the
run: each DAG node per bar, and the orders' delay after the bar's close.

The gap (production's PnL minus research's), per bar and asset, is attributed to

    execution = traded_shares_prod x research_price - traded_notional_prod  (fill prices vs research's)
    fees      = -(fees_prod - fees_research)
    funding   = funding_prod - funding_research
    holdings  = (shares_prod - shares_research)_{t-1} x (mark_t - mark_{t-1})
                + (traded_shares_prod - traded_shares_research)_t x (mark_t - research_price_t)
    residual  = gap - the four above  (valued at research's marks: what no component explains)

The verdict judges what should not differ: with the mocked broker, production and research fill at
the same prices with the same costs, so nothing is explained and the whole gap is judged (and any bar
and asset beyond tolerance fails); through an exchange, execution, fees, funding and holdings
legitimately differ, and only the residual is judged. The bound is the run's own scale: 0.1% of its
gross PnL (the sum over bars of |research's PnL before costs|), at least 1 USDT.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from prod_system.analysis.research import bar_prices, research_portfolio
from prod_system.common.timeutil import bar_ends
from prod_system.config import SystemConfig
from prod_system.data.funding import FUNDING_LAG
from prod_system.data.market_data import CandleStore
from prod_system.errors import ReconciliationError
from prod_system.log_dir import LogDir
from prod_system.trading.portfolio import long_table

COMPONENTS = ("execution", "fees", "funding", "holdings")
EXPLAINED = {"mocked": (), "ccxt": COMPONENTS}  # by broker kind: the components allowed to differ
RESIDUAL_FRACTION = 0.001  # of the run's gross PnL: the judged gap's bound
RESIDUAL_FLOOR = 1.0  # USDT: the bound of a run that has hardly traded
COST_TOLERANCE = 0.01  # USDT: fees and funding of a bar and asset agree to the cent


@dataclass
class ReconciliationSummary:
    pnl_correlation: float
    max_abs_pnl_diff: float
    cumulative_pnl_prod: float
    cumulative_pnl_research: float
    gross_volume_prod: float
    first_divergence: dict | None  # {"bar_end", "asset", "what": target|holdings|fees|funding|pnl} or None
    bars: int
    # the cumulative gap and its parts (USDT): gap, execution, fees, funding, holdings, residual
    attribution: dict = field(default_factory=dict)
    explained: tuple[str, ...] = ()  # the components allowed to differ (see EXPLAINED)
    gross_pnl_scale: float = 0.0  # sum over bars of |research's PnL before costs|
    costs: dict = field(default_factory=dict)  # fees and funding of both sides, and where funding came from

    @property
    def identical_and_flat(self) -> bool:
        """Per-bar PnL constant on both sides (nothing traded yet: the correlation is undefined) and
        equal to the cent on every bar: production and research agree exactly."""
        return bool(not np.isfinite(self.pnl_correlation) and self.max_abs_pnl_diff < 0.005)

    @property
    def judged(self) -> float:
        """The part of the cumulative gap nothing explains: the residual and every component not allowed
        to differ (all of the gap with the mocked broker)."""
        if not self.attribution:
            return self.cumulative_pnl_prod - self.cumulative_pnl_research
        unexplained = [c for c in COMPONENTS if c not in self.explained]
        return float(self.attribution["residual"] + sum(self.attribution[c] for c in unexplained))

    @property
    def bound(self) -> float:
        return max(RESIDUAL_FLOOR, RESIDUAL_FRACTION * self.gross_pnl_scale)

    @property
    def dominant(self) -> str | None:
        """The component of the largest cumulative size (the residual included), None with no gap."""
        parts = {k: v for k, v in self.attribution.items() if k != "gap"}
        if not parts or max(abs(v) for v in parts.values()) < 0.005:
            return None
        return max(parts, key=lambda k: abs(parts[k]))

    @property
    def reconciled(self) -> bool:
        """The judged gap within the bound; with the mocked broker, also no bar and asset beyond the
        tolerances (a fill at the wrong bar moves little PnL but a whole position)."""
        if abs(self.judged) > self.bound:
            return False
        return bool(self.explained or self.first_divergence is None)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "explained": list(self.explained),
            "judged": self.judged,
            "bound": self.bound,
            "bound_rule": self.bound_rule(),
            "dominant": self.dominant,
            "reconciled": self.reconciled,
        }

    def bound_rule(self) -> str:
        return (
            f"|{'residual' if self.explained else 'gap'}| <= max({RESIDUAL_FLOOR:g} USDT, {RESIDUAL_FRACTION:.1%} of "
            f"gross pnl {self.gross_pnl_scale:,.2f}) = {self.bound:,.2f} USDT"
        )

    def verdict(self) -> str:
        """One line a person can act on."""
        what = "residual" if self.explained else "gap"
        judged = f"{what} {self.judged:,.2f} USDT within {self.bound:,.2f}"
        if np.isfinite(self.pnl_correlation):
            correlation = f"{self.pnl_correlation:.6f}"
        elif self.bars < 2:
            correlation = "undefined (a single bar)"
        else:
            correlation = f"undefined (per-bar pnl constant over the {self.bars} bars: nothing traded yet?)"
        if self.reconciled and self.first_divergence is None:
            if self.identical_and_flat:
                return f"reconciled: identical per-bar pnl over {self.bars} bars (flat: nothing traded yet)"
            return f"reconciled: pnl correlation {correlation} over {self.bars} bars; {judged}"
        where = (
            f"first divergence at {self.first_divergence['bar_end']} on {self.first_divergence['asset']} "
            f"({self.first_divergence['what']})"
            if self.first_divergence
            else "no single bar beyond tolerance"
        )
        gap = self.cumulative_pnl_prod - self.cumulative_pnl_research
        parts = ", ".join(f"{c} {self.attribution[c]:,.2f}" for c in (*COMPONENTS, "residual") if self.attribution)
        dominant = f"; mostly {self.dominant}" if self.dominant else ""
        if self.reconciled:
            state = f"reconciled ({judged}; {', '.join(self.explained)} explained), but"
        elif abs(self.judged) > self.bound:
            state = f"NOT reconciled: {what} {self.judged:,.2f} USDT beyond {self.bound:,.2f};"
        else:
            state = f"NOT reconciled: {judged}, but a bar and asset differ beyond tolerance;"
        return (
            f"{state} pnl correlation {correlation}, cumulative pnl prod - research "
            f"{gap:,.2f} USDT on {self.gross_volume_prod:,.0f} USDT traded ({parts}{dominant}); {where}"
        )


@dataclass
class Reconciliation:
    """Everything the observer shows about one run over one window."""

    summary: ReconciliationSummary
    per_bar: pd.DataFrame  # bar_end, pnl_prod, pnl_research, cumulative_*, gross_volume_*, gmv_*, the gap's parts
    side_by_side: pd.DataFrame  # bar_end, asset, {target,holdings,pnl,fees,funding}_{prod,research} (+ shares)
    attribution: pd.DataFrame  # bar_end, asset, gap, execution, fees, funding, holdings, residual
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
    _, start_marks = bar_prices(store, pd.DatetimeIndex([config.start]), config.bar_delta)
    attribution = attribute(log_dir, research, bars, config.universe, start_marks[0])
    attribution = attribution[attribution["bar_end"].isin(window)].reset_index(drop=True)
    parts = attribution.groupby("bar_end")[["gap", *COMPONENTS, "residual"]].sum().reindex(window, fill_value=0.0)
    per_bar = per_bar.join(parts.add_prefix("gap_").rename(columns={"gap_gap": "gap"}), on="bar_end")
    prod, res = per_bar["pnl_prod"], per_bar["pnl_research"]
    both = prod.notna() & res.notna()
    correlation = _correlation(prod[both].to_numpy(), res[both].to_numpy())
    research_stats = research["portfolio/statistics"].set_index("bar_end").reindex(window)
    summary = ReconciliationSummary(
        pnl_correlation=correlation,
        max_abs_pnl_diff=float((prod - res).abs().max()),
        cumulative_pnl_prod=float(prod.sum()),
        cumulative_pnl_research=float(res.sum()),
        gross_volume_prod=float(per_bar["gross_volume_prod"].sum()),
        first_divergence=_first_divergence(
            side, holdings_tolerance, pnl_tolerance, -(-FUNDING_LAG // config.bar_delta)
        ),
        bars=len(window),
        attribution={name: float(value) for name, value in parts.sum().items()},
        explained=EXPLAINED[config.broker.kind],
        gross_pnl_scale=float(research_stats["trading_pnl"].abs().sum()),
        costs=_costs(prod_stats.set_index("bar_end").reindex(window), research_stats, config, not store.funding.empty),
    )
    node_timing, bar_timing, timing = _timing(log_dir, window)
    return Reconciliation(summary, per_bar, side, attribution, node_timing, bar_timing, timing)


def _costs(prod: pd.DataFrame, research: pd.DataFrame, config: SystemConfig, has_data: bool) -> dict:
    """Fees and funding of both sides over the window, and what the funding came from (``has_data``: the
    market data has funding rates of some asset of the run)."""
    assumed = int(research["funding_assumed"].sum())
    funding = config.costs.funding
    rate = f"the assumed rate {funding.assumed_rate:g} per {funding.interval}"
    if funding.mode == "off":
        source = "off (not modelled)"
    elif assumed and has_data and funding.mode == "data":
        source = f"market data, and {rate} for {assumed} settlements of assets without data"
    elif assumed:
        source = f"{rate} ({assumed} settlements)"
    else:
        source = "market data" if has_data and funding.mode == "data" else "no settlement in the window"
    return {
        "fees_prod": float(prod["fees"].fillna(0).sum()),
        "fees_research": float(research["fees"].sum()),
        "funding_prod": float(prod["funding"].fillna(0).sum()) if "funding" in prod else 0.0,
        "funding_research": float(research["funding"].sum()),
        "funding_source": source,
        "taker_fee": config.costs.fees.taker,
    }


def _wide(frame: pd.DataFrame, column: str, bars: pd.DatetimeIndex, assets: list[str]) -> np.ndarray:
    """A long table's column as (bars x assets); a bar or asset without a row is 0."""
    if frame.empty:
        return np.zeros((len(bars), len(assets)))
    wide = frame.pivot_table(index="bar_end", columns="asset", values=column, aggfunc="sum")
    return wide.reindex(index=bars, columns=assets).fillna(0.0).to_numpy(dtype="float64")


def _prod_table(log_dir: LogDir, name: str) -> pd.DataFrame:
    """A portfolio table of the run; an older run without fees or funding tables had none of either."""
    try:
        return log_dir.read_table(name)
    except FileNotFoundError:
        if name in ("portfolio/fees", "portfolio/funding"):
            return pd.DataFrame(columns=["bar_end", "asset", name.rsplit("/", 1)[1]])
        raise


def attribute(
    log_dir: LogDir,
    research: dict[str, pd.DataFrame],
    bars: pd.DatetimeIndex,
    assets: list[str],
    start_marks: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per bar and asset, production's PnL minus research's, split into execution, fees, funding,
    holdings and the residual (the module's docstring gives the formulas), valued at research's prices."""

    def prod(name: str, column: str) -> np.ndarray:
        return _wide(_prod_table(log_dir, name), column, bars, assets)

    def res(name: str, column: str) -> np.ndarray:
        return _wide(research[name], column, bars, assets)

    held = _prod_table(log_dir, "portfolio/holdings_shares")
    # a bar production did not trade (skipped live) holds what the previous bar held
    shares_p = (
        held.pivot_table(index="bar_end", columns="asset", values="shares", aggfunc="last")
        .reindex(index=bars, columns=assets)
        .ffill()
        .fillna(0.0)
        .to_numpy(dtype="float64")
    )
    shares_r = res("portfolio/holdings_shares", "shares")
    traded_p, traded_r = (
        prod("portfolio/executed_trades_shares", "shares"),
        res("portfolio/executed_trades_shares", "shares"),
    )
    notional_p = prod("portfolio/executed_trades_notional", "notional")
    mark, price = res("bar_prices", "mark"), res("bar_prices", "trade_price")

    def before(values: np.ndarray, first: np.ndarray | None = None) -> np.ndarray:
        """Each bar's previous row; for the first bar, ``first`` (what held at the start), else zeros."""
        start = np.zeros((1, values.shape[1])) if first is None else np.nan_to_num(first)[None, :]
        return np.vstack([start, values[:-1]])

    # production may start with holdings (a session carried over from the previous one), research flat
    held_p = before(shares_p, shares_p[0] - traded_p[0])
    at_start = mark[0] if start_marks is None else np.where(np.isfinite(start_marks), start_marks, mark[0])
    mark_before = before(mark, at_start)

    gap = prod("portfolio/pnl", "pnl") - res("portfolio/pnl", "pnl")
    execution = traded_p * price - notional_p
    fees = -(prod("portfolio/fees", "fees") - res("portfolio/fees", "fees"))
    funding = prod("portfolio/funding", "funding") - res("portfolio/funding", "funding")
    holdings = (held_p - before(shares_r)) * (mark - mark_before) + (traded_p - traded_r) * (mark - price)
    residual = gap - execution - fees - funding - holdings
    out = long_table(bars, assets, gap, "gap")
    for name, values in zip(
        ("execution", "fees", "funding", "holdings", "residual"),
        (execution, fees, funding, holdings, residual),
        strict=True,
    ):
        out[name] = values.ravel()
    return out


def _correlation(prod: np.ndarray, research: np.ndarray) -> float:
    """The correlation of the per-bar PnLs; NaN when it is undefined: fewer than two bars, or a side
    whose PnL does not vary (a session that has not traded yet: all zeros)."""
    if len(prod) < 2 or not (np.std(prod) > 0 and np.std(research) > 0):
        return float("nan")
    return float(np.corrcoef(prod, research)[0, 1])


def _per_bar(prod: pd.DataFrame, research: pd.DataFrame, window: pd.DatetimeIndex) -> pd.DataFrame:
    columns = ["pnl", "trading_pnl", "fees", "funding", "gross_volume", "gmv", "net_wealth"]
    prod = prod.assign(**{c: prod.get(c, np.nan) for c in columns})  # an older run: no cost columns
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
        "fees": (_prod_table(log_dir, "portfolio/fees"), research["portfolio/fees"], "fees"),
        "funding": (_prod_table(log_dir, "portfolio/funding"), research["portfolio/funding"], "funding"),
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


def _first_divergence(
    side: pd.DataFrame, holdings_tolerance: float, pnl_tolerance: float, lag_bars: int = 1
) -> dict | None:
    """The earliest (bar, asset) whose target or holdings differ in value by more than
    ``holdings_tolerance`` USDT, whose fees or funding differ by more than a cent, or whose PnL differs
    by more than ``pnl_tolerance`` USDT; at the same bar, named in that order (a fee that differs
    explains the PnL that differs).

    The holdings tolerance absorbs production's skipped dust orders (under the 5 USDT min notional),
    which research does not skip. Funding is compared cumulatively per asset, and only a gap that
    lasts ``lag_bars`` bars counts: a live session books a settlement whose rate it learns late at the
    first bar that knows it (``FundingSchedule.due``, within ``data.funding.FUNDING_LAG``)."""
    tolerances = {
        "target": holdings_tolerance,
        "holdings": holdings_tolerance,
        "fees": COST_TOLERANCE,
        "funding": COST_TOLERANCE,
        "pnl": pnl_tolerance,
    }
    candidates = []
    for name, tolerance in tolerances.items():
        prod, research = side[f"{name}_prod"], side[f"{name}_research"]
        if name == "funding":
            cumulative = (prod.fillna(0) - research.fillna(0)).groupby(side["asset"]).cumsum()
            later = cumulative.groupby(side["asset"]).shift(-lag_bars).fillna(cumulative)
            off = (cumulative.abs() > tolerance) & (later.abs() > tolerance)
        else:
            if name == "pnl":  # without funding, which the lagged check above judges
                prod, research = prod - side["funding_prod"].fillna(0), research - side["funding_research"].fillna(0)
            # a value on one side only (a missing row) is a divergence too
            off = ((prod - research).abs() > tolerance) | (prod.isna() != research.isna())
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
