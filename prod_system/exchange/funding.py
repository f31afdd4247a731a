"""The local exchange's funding: when each symbol settles, at which rate and mark price, and what is published.

A symbol settles at its funding data's times (moved in time as the replay moves the candles, so the
mark price of a settlement is the candle of the same moment), or, for an asset the data has no row of
near the replay (``funding_schedule``'s rule), at the assumed rate every interval from 00:00 UTC of the
exchange's clock, as Binance's 00:00, 08:00 and 16:00. A data row's rate is published (premiumIndex,
fundingRate) once its knowledge time has passed, never before: no client learns a rate early.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pandas as pd

from prod_system.config import FundingConfig
from prod_system.data.funding import funding_schedule


@dataclass(frozen=True)
class Settlement:
    """One settlement in exchange time; ``mark`` is None when the data has none (the candle close is used)."""

    asset: str
    time_ms: int
    rate: Decimal
    mark: Decimal | None
    known_ms: int


def _decimal(value: float) -> Decimal:
    return Decimal(repr(float(value)))


def _ms(times: pd.Series) -> np.ndarray:
    return times.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ms]").astype(np.int64)


class ExchangeFunding:
    """Every symbol's settlements on the exchange's clock: the data's rows, or the assumed schedule."""

    def __init__(
        self,
        funding: pd.DataFrame | None,
        assets: list[str],
        data_start: pd.Timestamp,
        data_end: pd.Timestamp,
        shift_ms: int,
        config: FundingConfig,
    ):
        """``funding``: the funding table (``normalize_funding``'s shape) or None; ``data_start``/``data_end``:
        the candles' span in data time; ``shift_ms``: how far the replay moves the candles."""
        self.config = config
        self.assumed_rate = _decimal(config.assumed_rate) if config.mode != "off" else Decimal(0)
        self.interval_ms = int(config.interval_delta / pd.Timedelta(milliseconds=1))
        self._rows: dict[str, list[Settlement]] = {}
        if config.mode == "data" and funding is not None and not funding.empty:
            rows = funding_schedule(funding, assets, data_start, data_end, config)
            rows = rows[~rows["assumed"]]
            times, known = _ms(rows["funding_time"]) + shift_ms, _ms(rows["knowledge_ts"]) + shift_ms
            for asset, time_ms, rate, mark, known_ms in zip(
                rows["asset"], times, rows["rate"], rows["mark_price"], known, strict=True
            ):
                mark = None if math.isnan(mark) else _decimal(mark)
                self._rows.setdefault(asset, []).append(
                    Settlement(asset, int(time_ms), _decimal(rate), mark, int(known_ms))
                )
        self._times = {asset: [row.time_ms for row in rows] for asset, rows in self._rows.items()}

    def describe(self) -> str:
        """Where the settlements come from, for the start-up line."""
        if self.config.mode == "off":
            return "no funding"
        assumed = f"the assumed rate {self.assumed_rate} every {self.config.interval}"
        if not self._rows:
            return f"funding at {assumed}"
        return f"funding data for {len(self._rows)} assets, {assumed} for the others"

    def from_data(self, asset: str) -> bool:
        return asset in self._rows

    def between(self, asset: str, after_ms: int, until_ms: int) -> list[Settlement]:
        """The asset's settlements in (after_ms, until_ms], oldest first."""
        if asset in self._rows:
            times = self._times[asset]
            return self._rows[asset][bisect_right(times, after_ms) : bisect_right(times, until_ms)]
        if self.config.mode == "off":
            return []
        first = after_ms // self.interval_ms + 1
        last = until_ms // self.interval_ms
        return [self._assumed(asset, k * self.interval_ms) for k in range(first, last + 1)]

    def _assumed(self, asset: str, time_ms: int) -> Settlement:
        return Settlement(asset, time_ms, self.assumed_rate, None, time_ms)

    def published(self, asset: str, first_ms: int, now_ms: int) -> list[Settlement]:
        """The settlements in [first_ms, now] whose rate is known at now, oldest first."""
        if asset in self._rows:
            rows = self._rows[asset][bisect_left(self._times[asset], first_ms) :]
            return [row for row in rows if row.time_ms <= now_ms and row.known_ms <= now_ms]
        return self.between(asset, first_ms - 1, now_ms)

    def last_known_rate(self, asset: str, now_ms: int) -> Decimal:
        """The rate premiumIndex shows: the latest data rate known at now (the assumed rate before any)."""
        if asset in self._rows:
            rows = self._rows[asset][: bisect_right(self._times[asset], now_ms)]
            known = [row for row in rows if row.known_ms <= now_ms]
            return known[-1].rate if known else self.assumed_rate
        return self.assumed_rate

    def next_time(self, asset: str, now_ms: int) -> int:
        """The next settlement after now: the data's next row, else the next interval boundary."""
        if asset in self._rows:
            times = self._times[asset]
            index = bisect_right(times, now_ms)
            if index < len(times):
                return times[index]
        return (now_ms // self.interval_ms + 1) * self.interval_ms
