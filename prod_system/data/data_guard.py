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
        rows = []
        last = np.asarray(index == bar_end)  # the bar's last candle: the price it decides on
        for j, asset in enumerate(candles.assets):
            dropped = codes[in_bar, j]
            bar_close = _last(close[in_bar, j])
            if dropped.any():
                reason = SCREEN_REASONS[int(dropped[dropped > 0][-1])]
                when = index[in_bar][dropped > 0]
                rows.append((asset, reason, f"{len(when)} candle(s) dropped, last at {when[-1].isoformat()}"))
            elif not np.isfinite(close[last, j]).any():
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
                previous = _last(close[before, j])
                if np.isfinite(previous) and abs(bar_close / previous - 1) > self.max_jump:
                    move = bar_close / previous - 1
                    rows.append((asset, "jump", f"close {bar_close:g} is {move:+.0%} from {previous:g}"))
        return quality_frame([(bar_end, *row) for row in rows])


def quality_frame(rows: list[tuple]) -> pd.DataFrame:
    """The ``data_quality`` table, with the same column types whether it has rows or not."""
    frame = pd.DataFrame(rows, columns=DATA_QUALITY_COLUMNS)
    frame["bar_end"] = pd.to_datetime(frame["bar_end"], utc=True).astype("datetime64[ns, UTC]")
    return frame.astype({"asset": "str", "issue": "str", "detail": "str"})


def _last(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if finite.size else float("nan")


def _minutes(delta: pd.Timedelta) -> str:
    return f"{int(delta / pd.Timedelta(minutes=1))} minutes"
