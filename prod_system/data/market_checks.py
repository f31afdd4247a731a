"""Checks of recorded candles: what must be true before a model trades on them.

Each check returns a ``CheckResult``: passed or not, a one-line description, and the offending rows
(a few) for the report. The same checks run as Dagster asset checks on the ingested market data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from prod_system.data.market_data import CANDLE


@dataclass
class CheckResult:
    name: str
    passed: bool
    description: str
    examples: list[dict] = field(default_factory=list)
    count: int = 0


def _examples(frame: pd.DataFrame, limit: int = 5) -> list[dict]:
    return [{k: str(v) for k, v in row.items()} for row in frame.head(limit).to_dict("records")]


def missing_bars(candles: pd.DataFrame, assets: list[str], start: pd.Timestamp, end: pd.Timestamp) -> CheckResult:
    """Every asset has a candle for every minute of [start, end)."""
    expected = pd.MultiIndex.from_product([assets, pd.date_range(start, end - CANDLE, freq=CANDLE)])
    present = pd.MultiIndex.from_frame(candles[["asset", "bar_start"]]) if len(candles) else expected[:0]
    absent = expected.difference(present)
    frame = absent.to_frame(index=False, name=["asset", "bar_start"])
    by_asset = frame.groupby("asset").size().to_dict() if len(frame) else {}
    text = "no missing candle" if not len(frame) else f"{len(frame)} missing candles: {by_asset}"
    return CheckResult("no_missing_bars", not len(frame), text, _examples(frame), len(frame))


def stale(candles: pd.DataFrame, assets: list[str], now: pd.Timestamp, within: pd.Timedelta) -> CheckResult:
    """Every asset's latest candle closed no longer than ``within`` before now (plus the open minute)."""
    last = candles.groupby("asset")["bar_end"].max() if len(candles) else pd.Series(dtype="datetime64[ns, UTC]")
    last = last.reindex(assets)
    limit = now.floor(CANDLE) - within
    late = last[last.isna() | (last < limit)]
    frame = late.rename("last_bar_end").reset_index()
    text = "every asset is fresh" if late.empty else f"stale since {limit}: " + ", ".join(late.index)
    return CheckResult("not_stale", late.empty, text, _examples(frame), len(late))


def duplicates(candles: pd.DataFrame) -> CheckResult:
    dup = candles[candles.duplicated(["asset", "bar_start"], keep=False)]
    text = "no duplicate candle" if dup.empty else f"{len(dup)} rows share an (asset, minute)"
    return CheckResult("no_duplicates", dup.empty, text, _examples(dup), len(dup))


def bad_prices(candles: pd.DataFrame) -> CheckResult:
    """Prices are positive and finite; high >= low, and open and close lie within [low, high]."""
    prices = candles[["open", "high", "low", "close"]].to_numpy(dtype="float64")
    invalid = ~np.isfinite(prices).all(axis=1) | (prices <= 0).any(axis=1)
    inverted = candles["high"].to_numpy() < candles["low"].to_numpy()
    outside = (
        (candles[["open", "close"]].max(axis=1) > candles["high"])
        | (candles[["open", "close"]].min(axis=1) < candles["low"])
    ).to_numpy()
    bad = candles[invalid | inverted | outside]
    text = "prices are valid" if bad.empty else f"{len(bad)} candles with NaN, non-positive or inverted prices"
    return CheckResult("valid_prices", bad.empty, text, _examples(bad), len(bad))


def price_jumps(candles: pd.DataFrame, max_jump: float = 0.5) -> CheckResult:
    """No close moves by more than ``max_jump`` (a fraction) from the asset's previous candle's close."""
    frame = candles.sort_values(["asset", "bar_end"])
    previous = frame.groupby("asset")["close"].shift()
    move = frame["close"] / previous - 1
    jumps = frame.assign(previous_close=previous, move=move)[move.abs() > max_jump]
    text = "no price jump" if jumps.empty else f"{len(jumps)} closes moved more than {max_jump:.0%} in a minute"
    return CheckResult("no_price_jumps", jumps.empty, text, _examples(jumps), len(jumps))


def run_all(
    candles: pd.DataFrame,
    assets: list[str],
    start: pd.Timestamp,
    end: pd.Timestamp,
    now: pd.Timestamp,
    within: pd.Timedelta,
) -> list[CheckResult]:
    return [
        missing_bars(candles, assets, start, end),
        stale(candles, assets, now, within),
        duplicates(candles),
        bad_prices(candles),
        price_jumps(candles),
    ]
