"""Performance figures of a run from its per-bar ``portfolio/statistics``: Sharpe, Sortino, drawdown,
Calmar, hit rate, turnover, holding period, and the split of PnL into trading, fees and funding.

The book is market-neutral with no fixed capital, so returns are the net PnL of each bar divided by
the window's mean gross market value (return on the capital deployed), not net-wealth returns (the
cash balance is not at risk and would dilute them). Amounts add up (no compounding): annualised
return is the mean bar return times the bars in a year, drawdowns are of cumulative PnL in USDT.
Crypto trades all year round: a year is 365 days of 24 hours, ``periods_per_year`` the bars in it.

The definitions are in docs/performance.md; each figure is ``None`` where it is undefined (shown as
"n/a"), never a made-up zero or an infinity.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from prod_system.errors import StatisticsError

YEAR = pd.Timedelta(days=365)
DAY = pd.Timedelta(days=1)
REQUIRED = ("bar_end", "pnl", "gross_volume", "gmv", "fees")


@dataclass(frozen=True)
class Performance:
    bars: int
    bar_seconds: float
    periods_per_year: float
    first_bar_end: pd.Timestamp | None
    last_bar_end: pd.Timestamp | None
    mean_gmv: float  # USDT; the denominator of every "% of mean GMV"
    net_pnl: float  # USDT: gross_pnl - fees + funding
    gross_pnl: float  # USDT: trading PnL before fees and funding
    fees: float  # USDT paid (>= 0)
    funding: float  # USDT received (negative: paid)
    funding_recorded: bool  # False: the table predates funding (funding counted as 0)
    funding_assumed: int  # asset settlements that used an assumed rate, not data
    gross_volume: float  # USDT traded
    sharpe: float | None
    sortino: float | None
    annualised_return: float | None  # fraction of mean GMV a year
    max_drawdown: float  # USDT, >= 0
    max_drawdown_start: pd.Timestamp | None  # the peak (the window's start when it is the opening zero)
    max_drawdown_end: pd.Timestamp | None  # the trough
    calmar: float | None
    hit_rate: float | None  # bars with pnl > 0 among bars with pnl != 0
    bars_with_pnl: int
    winning_bars: int
    turnover_per_day: float | None  # gross volume / mean GMV per day
    holding_period_hours: float | None  # 2 * mean GMV / gross volume per hour

    def of_mean_gmv(self, amount: float) -> float | None:
        """An amount as a fraction of the mean GMV (None when nothing was held)."""
        return amount / self.mean_gmv if self.mean_gmv > 0 else None

    @property
    def fees_share(self) -> float | None:
        """Fees as a fraction of |gross PnL|."""
        return self.fees / abs(self.gross_pnl) if self.gross_pnl else None

    @property
    def funding_share(self) -> float | None:
        """Funding (signed: negative when paid) as a fraction of |gross PnL|."""
        return self.funding / abs(self.gross_pnl) if self.gross_pnl else None

    @property
    def max_drawdown_pct(self) -> float | None:
        return self.of_mean_gmv(self.max_drawdown)

    def to_dict(self) -> dict:
        """The figures for JSON: times as ISO strings, undefined figures as None; shares and % of mean
        GMV added."""
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, pd.Timestamp):
                data[key] = value.isoformat()
        for name in ("net_pnl", "gross_pnl", "fees", "funding", "max_drawdown"):
            data[f"{name}_pct_of_mean_gmv"] = _percent(self.of_mean_gmv(getattr(self, name)))
        data["fees_share_of_gross_pnl"] = self.fees_share
        data["funding_share_of_gross_pnl"] = self.funding_share
        data["funding_source"] = funding_note(self)
        return data


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else fraction * 100


def periods_per_year(bar: pd.Timedelta) -> float:
    """Bars in a year of 365 days of 24 hours (5-minute bars: 105,120)."""
    return YEAR / pd.Timedelta(bar)


def _column(stats: pd.DataFrame, name: str, fallback: pd.Series) -> pd.Series:
    """A column of the newer schema, or the fallback where it is absent or null (a table, or a part of
    one, written before the column existed)."""
    if name not in stats.columns:
        return fallback
    return pd.to_numeric(stats[name]).astype(float).fillna(fallback)


def _defined(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def compute(stats: pd.DataFrame, bar: pd.Timedelta) -> Performance:
    """The performance figures of a ``portfolio/statistics`` table of bars of length ``bar``.

    A table without ``trading_pnl`` / ``funding`` / ``funding_assumed`` (written before they existed)
    is read as trading PnL = pnl + fees and no funding."""
    bar = pd.Timedelta(bar)
    if bar <= pd.Timedelta(0):
        raise StatisticsError(f"bar length {bar}: must be positive")
    for name in REQUIRED:
        if name not in stats.columns:
            raise StatisticsError(f"portfolio/statistics: column {name!r} missing (columns: {list(stats.columns)})")
        if stats[name].isna().any():
            raise StatisticsError(f"portfolio/statistics: column {name!r} has {int(stats[name].isna().sum())} nulls")
    stats = stats.sort_values("bar_end", ignore_index=True)
    pnl = stats["pnl"].astype(float)
    fees = stats["fees"].astype(float)
    funding = _column(stats, "funding", pd.Series(0.0, index=stats.index))
    trading = _column(stats, "trading_pnl", pnl + fees - funding)
    assumed = _column(stats, "funding_assumed", pd.Series(0.0, index=stats.index))
    recorded = "funding" in stats.columns and bool(stats["funding"].notna().any())
    per_year = periods_per_year(bar)
    bars = len(stats)
    mean_gmv = float(stats["gmv"].mean()) if bars else 0.0
    gross_volume = float(stats["gross_volume"].sum())
    hours = bars * bar / pd.Timedelta(hours=1)

    sharpe = sortino = annual = calmar = None
    if mean_gmv > 0:
        returns = (pnl / mean_gmv).to_numpy()
        sharpe = _sharpe(returns, per_year)
        sortino = _sortino(returns, per_year)
        annual = _defined(returns.mean() * per_year) if bars else None
    drawdown, peak, trough = _max_drawdown(stats["bar_end"], pnl, bar)
    if annual is not None and drawdown > 0:
        calmar = annual / (drawdown / mean_gmv)
    nonzero, winning = int((pnl != 0).sum()), int((pnl > 0).sum())
    turnover = gross_volume / mean_gmv / (hours / 24) if mean_gmv > 0 and bars else None
    holding = 2 * mean_gmv / (gross_volume / hours) if gross_volume > 0 else None
    return Performance(
        bars=bars,
        bar_seconds=bar.total_seconds(),
        periods_per_year=per_year,
        first_bar_end=stats["bar_end"].iloc[0] if bars else None,
        last_bar_end=stats["bar_end"].iloc[-1] if bars else None,
        mean_gmv=mean_gmv,
        net_pnl=float(pnl.sum()),
        gross_pnl=float(trading.sum()),
        fees=float(fees.sum()),
        funding=float(funding.sum()),
        funding_recorded=recorded,
        funding_assumed=int(assumed.sum()),
        gross_volume=gross_volume,
        sharpe=sharpe,
        sortino=sortino,
        annualised_return=annual,
        max_drawdown=drawdown,
        max_drawdown_start=peak,
        max_drawdown_end=trough,
        calmar=calmar,
        hit_rate=winning / nonzero if nonzero else None,
        bars_with_pnl=nonzero,
        winning_bars=winning,
        turnover_per_day=turnover,
        holding_period_hours=holding,
    )


def _flat(values: np.ndarray, spread: float) -> bool:
    """A spread that is rounding noise next to the values (identical bars: no risk to divide by)."""
    return spread <= 1e-12 * max(float(np.abs(values).max()), 1e-300)


def _sharpe(returns: np.ndarray, per_year: float) -> float | None:
    """Mean over standard deviation (ddof 1) of the bar returns, times sqrt(bars a year)."""
    if len(returns) < 2:
        return None
    std = float(returns.std(ddof=1))
    if _flat(returns, std):
        return None
    return float(returns.mean() / std * math.sqrt(per_year))


def _sortino(returns: np.ndarray, per_year: float) -> float | None:
    """Mean bar return over the downside deviation sqrt(mean(min(r, 0)^2)) over all bars, times
    sqrt(bars a year); None without a losing bar (no downside to divide by)."""
    if len(returns) < 2:
        return None
    downside = math.sqrt(float((np.minimum(returns, 0.0) ** 2).mean()))
    if _flat(returns, downside):
        return None
    return float(returns.mean() / downside * math.sqrt(per_year))


def _max_drawdown(
    bar_end: pd.Series, pnl: pd.Series, bar: pd.Timedelta
) -> tuple[float, pd.Timestamp | None, pd.Timestamp | None]:
    """The largest fall of cumulative net PnL from a previous high (USDT, >= 0), with the high's time
    and the low's. The curve starts at 0 one bar before the first bar end: a first losing bar is a
    drawdown from the window's start."""
    if pnl.empty:
        return 0.0, None, None
    curve = np.concatenate([[0.0], pnl.cumsum().to_numpy()])
    times = [bar_end.iloc[0] - bar, *bar_end]
    highs = np.maximum.accumulate(curve)
    falls = highs - curve
    trough = int(falls.argmax())
    if falls[trough] <= 0:
        return 0.0, None, None
    peak = int(curve[: trough + 1].argmax())
    return float(falls[trough]), times[peak], times[trough]


def _bar_name(seconds: float) -> str:
    """A bar length for a reader: 5-minute, 1-hour, 30-second."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            return f"{seconds / size:g}-{unit}"
    return f"{seconds:g}-second"


def _usdt(value: float) -> str:
    return f"{value:,.2f} USDT"


def _share(fraction: float | None, of: str) -> str:
    return "n/a" if fraction is None else f"{fraction * 100:,.3f}% of {of}"


def _number(value: float | None, fmt: str = "{:,.2f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _amount(perf: Performance, value: float) -> str:
    return f"{_usdt(value)} ({_share(perf.of_mean_gmv(value), 'mean GMV')})"


def _when(time: pd.Timestamp | None) -> str:
    return "-" if time is None else f"{time:%Y-%m-%d %H:%M}"


def funding_note(perf: Performance) -> str:
    """Where the funding figure comes from: data, an assumed rate, or nothing recorded."""
    if not perf.funding_recorded:
        return "funding: not recorded (counted as 0)"
    if perf.funding_assumed:
        return f"funding: assumed rate ({perf.funding_assumed} asset settlements without data)"
    return "funding: from data"


def rows(perf: Performance) -> list[tuple[str, str]]:
    """The figures as (name, value) rows for a report's table."""
    drawdown = (
        "none"
        if perf.max_drawdown_start is None
        else f"{_amount(perf, perf.max_drawdown)}, from {_when(perf.max_drawdown_start)} "
        f"to {_when(perf.max_drawdown_end)} UTC"
    )
    hit = (
        "n/a (no bar with PnL)"
        if perf.hit_rate is None
        else f"{perf.hit_rate * 100:.1f}% ({perf.winning_bars} of {perf.bars_with_pnl} bars with nonzero PnL)"
    )
    bars = f"{_bar_name(perf.bar_seconds)} bars, {perf.periods_per_year:,.0f} a year"
    return [
        ("returns", f"net PnL per bar / mean GMV ({perf.mean_gmv:,.0f} USDT); {bars}"),
        ("Sharpe (annualised)", _number(perf.sharpe)),
        ("Sortino (annualised)", _number(perf.sortino)),
        ("annualised return", _share(perf.annualised_return, "mean GMV")),
        ("max drawdown", drawdown),
        ("Calmar", _number(perf.calmar)),
        ("hit rate", hit),
        ("turnover", _number(perf.turnover_per_day, "{:,.2f}x mean GMV a day")),
        ("average holding period", _number(perf.holding_period_hours, "{:,.2f} h")),
        ("gross PnL (before fees and funding)", _amount(perf, perf.gross_pnl)),
        ("fees", f"{_amount(perf, perf.fees)}; {_share(perf.fees_share, 'abs(gross PnL)')}"),
        ("funding (received)", f"{_amount(perf, perf.funding)}; {_share(perf.funding_share, 'abs(gross PnL)')}"),
        ("net PnL", _amount(perf, perf.net_pnl)),
        ("funding source", funding_note(perf)),
    ]


def markdown(perf: Performance) -> list[str]:
    """The figures as a Markdown table (lines), for pnl_report.md and the investor statistics."""
    return ["| figure | value |", "|---|---|", *[f"| {name} | {value} |" for name, value in rows(perf)]]
