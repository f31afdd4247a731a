"""Funding rates of perpetual futures: market data with a knowledge time, and the settlements a run pays.

A funding row: ``asset``, ``funding_time`` (the settlement, UTC, to the minute: Binance stamps it a few
milliseconds after the hour), ``rate`` (per settlement; positive: longs pay shorts), ``mark_price``
(the exchange's mark price at the settlement; NaN when the source has none, and the close of the bar
that contains it is used) and ``knowledge_ts`` (when the row became known, as for candles).

A run's settlements (``funding_schedule``) are the data's rows of its assets; an asset the data has no
row of near the window settles at the config's assumed rate every ``interval`` from 00:00 UTC, marked
``assumed`` so that every report can say so. ``FundingSchedule.due`` is the one place that decides
which settlements a bar may apply: those at or before the bar's end that are known now (the funding
twin of ``CandleStore.visible``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from prod_system.config import FundingConfig
from prod_system.errors import MarketDataError

FUNDING_COLUMNS = ["asset", "funding_time", "rate", "mark_price", "knowledge_ts"]
MAX_RATE = 0.05  # |rate| per settlement: Binance's caps are a few percent; more is a bad row, not a market
# a live session books a settlement whose rate is recorded after its bar's deadline at the first bar that
# knows it: the reconciliation allows production this delay before a funding gap counts
FUNDING_LAG = pd.Timedelta(minutes=15)
LOOK_BEHIND = pd.Timedelta(days=1)  # a source with a row of the asset this long before the window has data


def known_after(settled: pd.DatetimeIndex, delay: pd.Timedelta) -> pd.DatetimeIndex:
    """When a settlement of a history file (the archive, a download) became known: ``delay`` after its
    minute, like a candle closing then. Binance stamps a settlement a few milliseconds after the hour; from
    the stamp, the rate of the 08:00 settlement would be known a few milliseconds after the 08:00 bar is
    decided, and a run would book it a bar late (its last one: never)."""
    return pd.DatetimeIndex(settled).floor("min") + delay


def empty_funding() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "asset": pd.Series(dtype=object),
            "funding_time": pd.Series(dtype="datetime64[ns, UTC]"),
            "rate": pd.Series(dtype="float64"),
            "mark_price": pd.Series(dtype="float64"),
            "knowledge_ts": pd.Series(dtype="datetime64[ns, UTC]"),
        }
    )


def normalize_funding(frame: pd.DataFrame, where: str = "funding data") -> pd.DataFrame:
    """The funding table in its one shape: typed columns, times in UTC floored to the minute, one row per
    (asset, funding_time) (of copies, the one known last), sorted. A bad row is a ``MarketDataError``
    naming ``where``, the asset and the time."""
    missing = [column for column in ("asset", "funding_time", "rate", "knowledge_ts") if column not in frame]
    if missing:
        raise MarketDataError(f"{where}: funding rates need columns {missing}")
    if frame.empty:
        return empty_funding()
    out = pd.DataFrame(
        {
            "asset": frame["asset"].astype(str).str.upper().to_numpy(dtype=object),
            "funding_time": _utc(frame["funding_time"], where).dt.floor("min"),
            "rate": pd.to_numeric(frame["rate"], errors="coerce").astype("float64"),
            "mark_price": pd.to_numeric(frame["mark_price"], errors="coerce").astype("float64")
            if "mark_price" in frame
            else np.nan,
            "knowledge_ts": _utc(frame["knowledge_ts"], where),
        }
    )
    bad = ~np.isfinite(out["rate"]) | (out["rate"].abs() > MAX_RATE)
    bad |= out["mark_price"].notna() & ~(out["mark_price"] > 0)
    bad |= out["knowledge_ts"] < out["funding_time"]
    if bad.any():
        row = out[bad].iloc[0]
        raise MarketDataError(
            f"{where}: bad funding row for {row['asset']} at {row['funding_time'].isoformat()}: rate {row['rate']}, "
            f"mark price {row['mark_price']}, known at {row['knowledge_ts'].isoformat()} (a rate is finite and at "
            f"most {MAX_RATE:.0%} in size, a mark price positive, and a rate is not known before its settlement)"
        )
    out = out.sort_values(["asset", "funding_time", "knowledge_ts"], kind="stable")
    out = out.drop_duplicates(["asset", "funding_time"], keep="last")
    return out.reset_index(drop=True)[FUNDING_COLUMNS]


def _utc(values: pd.Series, where: str) -> pd.Series:
    try:
        times = pd.to_datetime(values, utc=True)
    except (ValueError, TypeError, OverflowError) as error:
        raise MarketDataError(f"{where}: funding times are not times: {error}") from None
    if times.isna().any():
        raise MarketDataError(f"{where}: a funding row has no time")
    return times.dt.as_unit("ns")


def settlement_times(start: pd.Timestamp, end: pd.Timestamp, interval: pd.Timedelta) -> pd.DatetimeIndex:
    """The settlements in (start, end] every ``interval`` from 00:00 UTC."""
    first = start.floor(interval) + interval
    return pd.date_range(first, end, freq=interval) if first <= end else pd.DatetimeIndex([], tz="UTC")


def funding_schedule(
    funding: pd.DataFrame, assets: list[str], start: pd.Timestamp, end: pd.Timestamp, config: FundingConfig
) -> pd.DataFrame:
    """The settlements of ``assets`` in (start, end], by time: the data's rows, and for an asset the data
    has no row of in (start - 1 day, end], the assumed rate every ``config.interval`` (known in advance:
    the config says it). ``mode`` 'assumed' ignores the data; 'off' has no settlement."""
    if config.mode == "off":
        return _schedule([], [], [], [], [], [])
    data = funding if config.mode == "data" else funding.iloc[:0]
    near = data[(data["funding_time"] > start - LOOK_BEHIND) & (data["funding_time"] <= end)]
    with_data = set(near["asset"])
    rows = near[near["asset"].isin(assets) & (near["funding_time"] > start)]
    times = settlement_times(start, end, config.interval_delta).as_unit("ns").tz_convert(None).to_numpy()
    assumed = [asset for asset in assets if asset not in with_data]
    count = len(assumed) * len(times)
    out = _schedule(
        np.concatenate([rows["asset"].to_numpy(dtype=object), np.tile(np.asarray(assumed, dtype=object), len(times))]),
        np.concatenate([_naive(rows["funding_time"]), np.repeat(times, len(assumed))]),
        np.concatenate([rows["rate"].to_numpy(dtype="float64"), np.full(count, config.assumed_rate)]),
        np.concatenate([rows["mark_price"].to_numpy(dtype="float64"), np.full(count, np.nan)]),
        np.concatenate([_naive(rows["knowledge_ts"]), np.repeat(times, len(assumed))]),
        np.concatenate([np.zeros(len(rows), dtype=bool), np.ones(count, dtype=bool)]),
    )
    if len(rows):  # the data's rows come by asset: put every row in time order
        out = out.sort_values(["funding_time", "asset"], kind="stable", ignore_index=True)
    return out


def _naive(times: pd.Series) -> np.ndarray:
    return times.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")


def _schedule(assets, times, rates, marks, known, assumed) -> pd.DataFrame:
    """The schedule's columns as one typed frame (times as UTC nanoseconds)."""
    return pd.DataFrame(
        {
            "asset": np.asarray(assets, dtype=object),
            "funding_time": pd.DatetimeIndex(np.asarray(times, dtype="datetime64[ns]")).tz_localize("UTC"),
            "rate": np.asarray(rates, dtype="float64"),
            "mark_price": np.asarray(marks, dtype="float64"),
            "knowledge_ts": pd.DatetimeIndex(np.asarray(known, dtype="datetime64[ns]")).tz_localize("UTC"),
            "assumed": np.asarray(assumed, dtype=bool),
        }
    )


class FundingSchedule:
    """A run's settlements, handed out bar by bar as they become known.

    ``since``: the run's start. A settlement at or before it was the business of whatever held the
    positions then (an earlier session, whose state says how far it paid: ``funded_until``); the schedule
    may hold such settlements (a run builds it from a day before its start), so that one an earlier
    session could not book, its rate published after that session's last bar, is booked now."""

    def __init__(self, schedule: pd.DataFrame, since: pd.Timestamp | None = None):
        self.schedule = schedule.sort_values(["asset", "funding_time"], kind="stable").reset_index(drop=True)
        self.since = since
        frame = self.schedule
        self._codes, self._assets = pd.factorize(frame["asset"]) if len(frame) else (np.zeros(0, int), pd.Index([]))
        self._times = _ns(frame["funding_time"])
        self._known = _ns(frame["knowledge_ts"])
        self._order = np.argsort(self._times, kind="stable")  # rows by time, for the bar's slice

    def due(self, now: pd.Timestamp, bar_end: pd.Timestamp, funded_until: dict[str, pd.Timestamp]) -> pd.DataFrame:
        """The settlements a bar applies: per asset, those after ``funded_until[asset]`` (else after
        ``since``) and at or before ``bar_end``, in order, up to the first one not known at ``now`` (a rate
        published late is applied at the first bar that knows it, never before it is known)."""
        if self.schedule.empty:
            return self.schedule
        upto = self._order[: np.searchsorted(self._times[self._order], bar_end.value, side="right")]
        if not len(upto):
            return self.schedule.iloc[:0]
        floor = np.iinfo(np.int64).min if self.since is None else self.since.value
        after = np.array([funded_until[a].value if a in funded_until else floor for a in self._assets], dtype=np.int64)
        rows = upto[self._times[upto] > after[self._codes[upto]]]
        if not len(rows):
            return self.schedule.iloc[:0]
        rows = np.sort(rows)  # by asset, then time (the schedule's order)
        unknown = pd.Series(self._known[rows] > now.value)
        # per asset, stop at the first settlement not known yet: the later ones wait for it
        blocked = unknown.groupby(self._codes[rows]).cummax().to_numpy()
        return self.schedule.iloc[rows[~blocked]].sort_values(["funding_time", "asset"], kind="stable")

    def describe(self) -> str:
        """'data', 'assumed', 'data and assumed' or 'none': what the run's funding comes from."""
        if self.schedule.empty:
            return "none"
        kinds = set(self.schedule["assumed"])
        return "data and assumed" if len(kinds) == 2 else ("assumed" if True in kinds else "data")


def _ns(times: pd.Series) -> np.ndarray:
    """UTC times as int64 nanoseconds."""
    return times.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]").astype(np.int64)
