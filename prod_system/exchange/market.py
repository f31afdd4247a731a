"""Candle replay on the exchange's own clock: the market the local exchange trades on.

The exchange's "now" comes from a ``ReplayClock`` (shifted, original or manual). A candle is part of
the market once it has opened (klines show it in progress) and sets the price once it has closed:
the price of a symbol at ``now`` is the close of the last candle with ``bar_end <= now``. Past the
end of the data no candle opens any more and the price stays at the last close.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from prod_system.data.market_data import CANDLE, interval_name, is_partitioned_snapshot, snapshot_interval
from prod_system.data.sources import load_funding, load_source
from prod_system.errors import MarketDataError

MINUTE_MS = 60_000
CLOCK_MODES = ("shifted", "original", "manual")


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def to_ms(value: int | str | pd.Timestamp) -> int:
    """Milliseconds since the epoch of an int (already ms), an ISO string or a timestamp (UTC if naive)."""
    if isinstance(value, int | np.integer):
        return int(value)
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.value // 1_000_000


def _source(source: str | Path) -> tuple[str, str, str]:
    """(source, kind, location), a bare folder of candle files read as 'csv:DIR'."""
    source = str(source)
    kind, _, location = source.partition(":")
    if kind != "csv" and Path(source).is_dir() and not is_partitioned_snapshot(source):
        return f"csv:{source}", "csv", source
    return source, kind, location


def load_market_funding(source: str | Path, assets: list[str]) -> pd.DataFrame:
    """The funding rates of the source's assets (``load_funding``: a snapshot's funding file, the
    archive's or a csv folder's), known at their settlement whatever the source's knowledge times (a
    snapshot's are a client's, some seconds later): the exchange sets them, settles at them and publishes
    them at once, as Binance does. Empty without."""
    funding = load_funding(_source(source)[0], assets, pd.Timedelta(0))
    return funding.assign(knowledge_ts=funding["funding_time"])


def load_candles(source: str | Path) -> pd.DataFrame:
    """All assets of a source: 'parquet:FILE', a .parquet snapshot (a file or a folder of months), 'csv:DIR'
    or a folder of *_USDT.csv.gz, 'binance-archive:DIR'."""
    source, kind, location = _source(source)
    if kind == "csv":
        # csv sources need the asset list up front; the exchange lists every file of the folder
        assets = sorted(path.name.removesuffix("_USDT.csv.gz") for path in Path(location).glob("*_USDT.csv.gz"))
        if not assets:
            raise MarketDataError(f"no {{ASSET}}_USDT.csv.gz candle files in {location}")
        return load_source(f"csv:{location}", assets, pd.Timedelta(0))
    return load_source(source, [], pd.Timedelta(0))


@dataclass
class ReplayClock:
    """The exchange's clock: ``origin_market_ms`` at the wall time ``origin_wall_ms``, running at ``speed``.

    A manual clock ignores the wall clock and moves only when set, never backwards.
    """

    mode: str
    speed: float
    origin_wall_ms: int
    origin_market_ms: int
    manual_ms: int | None = None
    wall: Callable[[], int] = wall_ms

    @classmethod
    def start(cls, mode: str, first_open_ms: int, speed: float = 1.0, wall: Callable[[], int] = wall_ms):
        """A clock starting now: shifted at the wall time, original and manual at ``first_open_ms`` (the
        first candle's open, or later by the history the exchange starts with)."""
        if mode not in CLOCK_MODES:
            raise ValueError(f"unknown clock mode {mode!r}: use one of {', '.join(CLOCK_MODES)}")
        if not speed > 0:
            raise ValueError(f"clock speed must be positive, got {speed}")
        started = wall()
        market = started if mode == "shifted" else first_open_ms
        return cls(mode, speed, started, market, market if mode == "manual" else None, wall)

    def now_ms(self) -> int:
        if self.manual_ms is not None:
            return self.manual_ms
        return self.origin_market_ms + int((self.wall() - self.origin_wall_ms) * self.speed)

    def set_ms(self, now_ms: int) -> None:
        if self.mode != "manual":
            raise ValueError(f"the clock is {self.mode}: only a manual clock can be set")
        if now_ms < self.manual_ms:
            raise ValueError(f"the clock cannot go back from {self.manual_ms} to {now_ms}")
        self.manual_ms = now_ms

    def to_state(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key != "wall"}

    @classmethod
    def from_state(cls, state: dict, wall: Callable[[], int] = wall_ms) -> ReplayClock:
        return cls(**state, wall=wall)


def _epoch_ms(column: pd.Series) -> np.ndarray:
    return column.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ms]").astype(np.int64)


class _Series:
    """One asset's candles as arrays sorted by open time, in exchange time (shifted)."""

    def __init__(self, frame: pd.DataFrame, shift_ms: int):
        frame = frame.sort_values("bar_start")
        self.open_ms = _epoch_ms(frame["bar_start"]) + shift_ms
        self.close_ms = self.open_ms + MINUTE_MS
        self.open = frame["open"].to_numpy()
        self.high = frame["high"].to_numpy()
        self.low = frame["low"].to_numpy()
        self.close = frame["close"].to_numpy()
        self.volume = frame["volume"].to_numpy()


@dataclass(frozen=True)
class ClosedCandle:
    """A candle that closed, in exchange time: what resting limit orders are matched against."""

    asset: str
    open_ms: int
    close_ms: int
    high: float
    low: float


def check_history(candles: pd.DataFrame, history_ms: int) -> None:
    """The history (closed before start-up) must be whole minutes and leave candles to replay."""
    if history_ms < 0 or history_ms % MINUTE_MS:
        raise ValueError(f"the history must be whole minutes >= 0, got {history_ms / MINUTE_MS:g} minutes")
    opens = _epoch_ms(candles["bar_start"])
    span_ms = int(opens.max() - opens.min()) if len(opens) else 0
    if history_ms and history_ms >= span_ms + MINUTE_MS:
        raise ValueError(
            f"a history of {history_ms // MINUTE_MS} minutes leaves nothing to replay: the market data holds "
            f"{span_ms // MINUTE_MS + 1} minutes"
        )


class MarketReplay:
    """The snapshot's candles replayed on the clock; in shifted mode every timestamp moves by ``shift_ms``.

    ``history_ms`` of the candles lie before the clock's start: closed at start-up, so klines serve
    them and prices exist at once (a live session warms up from them, a market order fills).
    """

    def __init__(self, candles: pd.DataFrame, clock: ReplayClock, history_ms: int = 0):
        if candles.empty:
            raise MarketDataError("the market data holds no candles")
        interval = snapshot_interval(candles)
        if interval != CANDLE:  # its klines (and the ingestion that reads them) are made of 1-minute candles
            raise MarketDataError(
                f"the local exchange replays 1-minute candles, and the market data's are {interval_name(interval)}: "
                f"give exchange-sim a 1-minute snapshot"
            )
        check_history(candles, history_ms)
        self.clock = clock
        self.history_ms = history_ms
        data_first_open_ms = int(_epoch_ms(candles["bar_start"]).min())
        self.shift_ms = 0
        if clock.mode == "shifted":
            self.shift_ms = clock.origin_market_ms // MINUTE_MS * MINUTE_MS - history_ms - data_first_open_ms
        self.first_open_ms = data_first_open_ms + self.shift_ms
        self._series = {asset: _Series(frame, self.shift_ms) for asset, frame in candles.groupby("asset", sort=True)}
        self.assets = list(self._series)
        self.last_close_ms = max(int(series.close_ms[-1]) for series in self._series.values())

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def _closed_count(self, series: _Series, now_ms: int) -> int:
        """How many candles of the series have closed at ``now_ms``."""
        return int(np.searchsorted(series.close_ms, now_ms, side="right"))

    def price(self, asset: str, now_ms: int) -> float | None:
        """The close of the last closed candle; None before the first candle closes."""
        series = self._series[asset]
        closed = self._closed_count(series, now_ms)
        return float(series.close[closed - 1]) if closed else None

    def closed_candles(self, asset: str, after_ms: int, until_ms: int) -> list[ClosedCandle]:
        """Candles that closed in (after_ms, until_ms], oldest first."""
        series = self._series[asset]
        lo, hi = self._closed_count(series, after_ms), self._closed_count(series, until_ms)
        return [
            ClosedCandle(
                asset, int(series.open_ms[i]), int(series.close_ms[i]), float(series.high[i]), float(series.low[i])
            )
            for i in range(lo, hi)
        ]

    def klines(
        self, asset: str, now_ms: int, start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[tuple[int, float, float, float, float, float]]:
        """(open_ms, o, h, l, c, volume) of candles opened at or before now, like Binance's klines.

        The candle in progress is the last row, flat at its open with no volume: what is known of it.
        With ``start_ms`` the first ``limit`` candles from there, otherwise the last ``limit`` up to ``end_ms``.
        """
        series = self._series[asset]
        opens = series.open_ms
        last = min(now_ms, end_ms) if end_ms is not None else now_ms
        hi = int(np.searchsorted(opens, last, side="right"))
        lo = int(np.searchsorted(opens, start_ms, side="left")) if start_ms is not None else 0
        rows = range(lo, min(hi, lo + limit)) if start_ms is not None else range(max(lo, hi - limit), hi)
        result = []
        for i in rows:
            open_ms = int(opens[i])
            if open_ms + MINUTE_MS > now_ms:
                first = float(series.open[i])
                result.append((open_ms, first, first, first, first, 0.0))
            else:
                values = (series.open[i], series.high[i], series.low[i], series.close[i], series.volume[i])
                result.append((open_ms, *(float(value) for value in values)))
        return result
