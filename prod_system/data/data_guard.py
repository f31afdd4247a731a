"""The data guard: per bar, which assets the system must not trade on the data it has, and why.

The model and the marks read candles through the visibility rule (``CandleStore.visible``), where the
screening has already turned unusable candles (invalid prices, conflicting duplicates) into NaN. The
guard looks at the bar being decided and gates the orders: an asset whose bar has a dropped candle,
whose last candle is not known at the decision (a gap, or a candle that arrives late), that
has had no candle for a long time (a delisted symbol), or whose close jumped by more than
``max_jump`` from the previous bar's is not traded on that bar: its target is dropped, its holdings
stay, and the issue is recorded in the log dir's ``data_quality`` table and the log.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from prod_system.data.market_data import SCREEN_REASONS, Candles
from prod_system.log_dir import columns

DATA_QUALITY_COLUMNS = columns("data_quality")
ONE_HOUR = pd.Timedelta(hours=1)


@dataclass(frozen=True)
class DataGuard:
    """``max_jump``: largest accepted |close / previous bar's close - 1|; ``delisted_after``: how long
    without any candle before an asset counts as delisted (rather than missing one bar)."""

    bar: pd.Timedelta
    max_jump: float = 0.5
    delisted_after: pd.Timedelta = ONE_HOUR

    @property
    def window(self) -> pd.Timedelta:
        """The history ``check`` needs before the bar's end."""
        return max(2 * self.bar, self.delisted_after)

    def check(self, bar_end: pd.Timestamp, candles: Candles) -> pd.DataFrame:
        """The issues of the bar ending at ``bar_end``, one row per asset not to trade, from the
        candles of (bar_end - window, bar_end] as visible at the decision."""
        index = candles.index
        close = candles.field("close")
        codes = candles.screened()
        in_bar = np.asarray(index > bar_end - self.bar)
        before = np.asarray((index > bar_end - 2 * self.bar) & (index <= bar_end - self.bar))
        last = np.asarray(index == bar_end)  # the bar's last candle: the price it decides on
        # the common case (nothing wrong) in whole-array steps; only flagged assets are looked at one by one
        dropped_any = (codes[in_bar] > 0).any(axis=0)
        last_known = np.isfinite(close[last]).any(axis=0)
        bar_closes, previous_closes = _last_finite(close[in_bar]), _last_finite(close[before])
        with np.errstate(divide="ignore", invalid="ignore"):
            moves = bar_closes / previous_closes - 1
        jumped = np.isfinite(previous_closes) & (np.abs(moves) > self.max_jump)
        rows = []
        for j in np.flatnonzero(dropped_any | ~last_known | jumped):
            asset = candles.assets[j]
            if dropped_any[j]:
                dropped = codes[in_bar, j]
                reason = SCREEN_REASONS[int(dropped[dropped > 0][-1])]
                when = index[in_bar][dropped > 0]
                rows.append((asset, reason, f"{len(when)} candle(s) dropped, last at {when[-1].isoformat()}"))
            elif not last_known[j]:
                seen = np.isfinite(close[:, j])
                if not seen.any():
                    rows.append((asset, "delisted", f"no candle for {_minutes(self.window)} or more"))
                else:
                    last_seen = index[seen][-1]
                    if bar_end - last_seen >= self.delisted_after:
                        rows.append((asset, "delisted", f"no candle since {last_seen.isoformat()}"))
                    else:
                        rows.append((asset, "missing", "the bar's last candle is not known at the decision"))
            else:
                bar_close, previous = bar_closes[j], previous_closes[j]
                rows.append((asset, "jump", f"close {bar_close:g} is {moves[j]:+.0%} from {previous:g}"))
        return quality_frame([(bar_end, *row) for row in rows])


def quality_frame(rows: list[tuple]) -> pd.DataFrame:
    """The ``data_quality`` table, with the same column types whether it has rows or not."""
    if not rows:  # most bars: a copy of one empty table (building a frame each bar cost ~3 ms)
        return _EMPTY_QUALITY.copy()
    return _quality_frame(rows)


def _quality_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=DATA_QUALITY_COLUMNS)
    frame["bar_end"] = pd.to_datetime(frame["bar_end"], utc=True).astype("datetime64[ns, UTC]")
    return frame.astype({"asset": "str", "issue": "str", "detail": "str"})


_EMPTY_QUALITY = _quality_frame([])


def _last_finite(values: np.ndarray) -> np.ndarray:
    """Per column, the last finite value of the rows (NaN where there is none)."""
    out = np.full(values.shape[1], np.nan)
    if len(values):
        rows = np.where(np.isfinite(values), np.arange(len(values))[:, None], -1).max(axis=0)
        has = np.flatnonzero(rows >= 0)
        out[has] = values[rows[has], has]
    return out


def _minutes(delta: pd.Timedelta) -> str:
    return f"{int(delta / pd.Timedelta(minutes=1))} minutes"
