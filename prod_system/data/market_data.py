"""Market data: loading candles, snapshots, and the single visibility rule.

A candle is an OHLCV bar [bar_start, bar_end) of the snapshot's one candle interval (one of the
Binance kline intervals in ``INTERVALS``: 1m to 1h; the real-time database's candles are 1-minute).
Each row carries a ``knowledge_ts``: the time the system could first know it (when it was written to
the real-time database, or, for historical files that carry none, bar_end plus a configured delay).
Files carry only the open time: the interval is detected from the opens (``read_csv_dir``), so
that a 5-minute candle's close is never dated one minute after its open.

``CandleStore.visible`` is the one place that decides what data is visible: a row is returned only
if ``knowledge_ts <= now``. Every reader (the model, the mocked broker, the portfolio's marks) goes
through ``MarketDataReader``, which asks it with the injected clock's time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from prod_system.common.clock import Clock
from prod_system.common.files import write_atomically, write_folder_atomically
from prod_system.common.timeutil import format_duration
from prod_system.data.funding import FUNDING_COLUMNS, empty_funding, normalize_funding
from prod_system.errors import MarketDataError

CANDLE = pd.Timedelta(minutes=1)  # the real-time database's candles (ingestion records 1-minute klines)
# the Binance kline intervals a snapshot's candles may have: those that divide an hour
INTERVALS = {name: pd.Timedelta(name.replace("m", "min")) for name in ("1m", "3m", "5m", "15m", "30m", "1h")}
PRICE_FIELDS = ("open", "high", "low", "close")
FIELDS = (*PRICE_FIELDS, "volume")
SNAPSHOT_COLUMNS = ["asset", "bar_start", "bar_end", "knowledge_ts", *FIELDS]
_NEVER = np.iinfo(np.int64).max


# ---------------------------------------------------------------------------------------------
# Sources: turning files into the long snapshot table
# ---------------------------------------------------------------------------------------------


def interval_name(interval: pd.Timedelta) -> str:
    """'5m' for a 5-minute interval (any other duration spelled the same way: '7m', '90s')."""
    for name, value in INTERVALS.items():
        if value == interval:
            return name
    return format_duration(pd.Timedelta(interval))


def parse_interval(name: str) -> pd.Timedelta:
    """The interval a kline name gives (a Binance archive's file name, ``BTCUSDT-5m-2024-02.zip``: '5m');
    refused unless a snapshot can have it."""
    if name not in INTERVALS:
        raise MarketDataError(f"candle interval {name!r} is not one of {', '.join(INTERVALS)}")
    return INTERVALS[name]


def _when(ns: int) -> str:
    return f"{pd.Timestamp(int(ns), tz='UTC'):%Y-%m-%d %H:%M:%S}"


def _open_ns(opens: pd.Series) -> np.ndarray:
    """Sorted distinct opens, ns since the epoch (duplicates are the screening's business)."""
    values = pd.to_datetime(opens, utc=True).dt.tz_convert(None).to_numpy().astype("datetime64[ns]")
    return np.unique(values.astype(np.int64))


def _steps_interval(opens: np.ndarray, where: str, asset: str) -> int | None:
    """One asset's candle interval (ns): the smallest step between its opens, which must be a kline
    interval, with every open on its grid (so every step is a whole multiple of it: gaps are normal).
    None for a single candle (it tells nothing)."""
    steps = np.diff(opens)
    if not steps.size:
        return None
    at = int(np.argmin(steps))
    step = int(steps[at])
    if step not in {value.value for value in INTERVALS.values()}:
        raise MarketDataError(
            f"{where}: irregular candles: {asset}'s opens are {interval_name(pd.Timedelta(step))} apart "
            f"(e.g. {_when(opens[at])} then {_when(opens[at + 1])}); candles must be one of "
            f"{', '.join(INTERVALS)}, their opens on that interval's grid"
        )
    _check_aligned(opens, step, where, asset, f" of its smallest step ({_when(opens[at])} then {_when(opens[at + 1])})")
    return step


def _check_aligned(opens: np.ndarray, step: int, where: str, asset: str, why: str = "") -> None:
    off = opens % step != 0
    if off.any():
        raise MarketDataError(
            f"{where}: irregular candles: {int(off.sum())} of {asset}'s opens are off the "
            f"{interval_name(pd.Timedelta(step))} grid{why} (e.g. {_when(opens[off][0])})"
        )


def _one_interval(found: dict[str, tuple[str, int, int]], where: str) -> pd.Timedelta:
    """The interval shared by every source of ``found`` (label -> (asset, interval ns, an open)); mixed ones refused."""
    by_interval = {}
    for label, (_, step, first) in found.items():
        by_interval.setdefault(step, (label, first))
    if len(by_interval) > 1:
        examples = ", ".join(
            f"{label} is {interval_name(pd.Timedelta(step))} (e.g. open {_when(first)})"
            for step, (label, first) in sorted(by_interval.items())
        )
        raise MarketDataError(f"{where}: mixed candle intervals: {examples}; a snapshot has one interval")
    return pd.Timedelta(next(iter(by_interval), CANDLE.value))


def read_csv_dir(directory: str | Path, universe: list[str], interval: pd.Timedelta | None = None) -> pd.DataFrame:
    """Read ``{SYMBOL}_USDT.csv.gz`` files (open_time, open, high, low, close, volume) in long form.

    The files carry only the open: each candle's end is its open plus the interval detected from the
    opens (per file the smallest step between opens, one of ``INTERVALS``, every open on its grid; every
    file the same; 1-minute when no file has two candles), or checked against ``interval`` when the
    caller knows it (an archive's file name). Mixed or irregular opens are one line naming the file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MarketDataError(f"market data folder {directory} does not exist")
    frames = []
    for asset in universe:
        path = directory / f"{asset}_USDT.csv.gz"
        if not path.exists():
            raise MarketDataError(f"no candles for {asset}: {path} not found")
        try:
            frame = pd.read_csv(path)
        except Exception as error:  # pandas raises many kinds for a bad file
            raise MarketDataError(f"cannot read {path}: {error}") from None
        missing = {"open_time", *FIELDS} - set(frame.columns)
        if missing:
            raise MarketDataError(f"{path} lacks columns {sorted(missing)}")
        frame["bar_start"] = pd.to_datetime(frame.pop("open_time"), utc=True)
        frame["asset"] = asset
        frames.append(frame)
    opens, found = {}, {}
    for asset, frame in zip(universe, frames, strict=True):
        path = directory / f"{asset}_USDT.csv.gz"
        opens[path] = (asset, _open_ns(frame["bar_start"]))
        step = _steps_interval(opens[path][1], str(path), asset)
        if step is not None:
            found[path.name] = (asset, step, int(opens[path][1][0]))
    step = _one_interval(found, str(directory)) if found else (interval or CANDLE)
    if interval is not None and step != interval:
        raise MarketDataError(
            f"{directory}: the candles are {interval_name(step)} apart, not {interval_name(interval)}"
        )
    for path, (asset, values) in opens.items():
        _check_aligned(values, step.value, str(path), asset)
    candles = pd.concat(frames, ignore_index=True)
    candles["bar_end"] = candles["bar_start"] + step
    return candles


def with_knowledge_time(candles: pd.DataFrame, delay: pd.Timedelta) -> pd.DataFrame:
    """Historical files carry no knowledge time: a candle is known ``delay`` after it closes."""
    candles = candles.copy()
    candles["knowledge_ts"] = candles["bar_end"] + delay
    return candles


def snapshot_interval(frame: pd.DataFrame, where: str = "market data") -> pd.Timedelta:
    """The one candle interval of a snapshot table (bar_end - bar_start, the same on every row, one
    of ``INTERVALS``, every open on its grid; 1-minute if empty): anything else is refused with one
    line naming ``where`` and an example row, as the store's regular grid could not hold it."""
    if not len(frame):
        return CANDLE
    start = pd.to_datetime(frame["bar_start"], utc=True)
    span = pd.to_datetime(frame["bar_end"], utc=True) - start
    shortest, longest = span.min(), span.max()
    if shortest != longest:
        rows = [frame[(span == value).to_numpy()].iloc[0] for value in (shortest, longest)]
        examples = ", ".join(
            f"{row['asset']} {interval_name(value)} (open {row['bar_start']})"
            for row, value in zip(rows, (shortest, longest), strict=True)
        )
        raise MarketDataError(f"{where}: mixed candle intervals: {examples}; a snapshot has one interval")
    if shortest not in INTERVALS.values():
        row = frame.iloc[0]
        raise MarketDataError(
            f"{where}: candles of {interval_name(shortest)} (e.g. {row['asset']} {row['bar_start']} to "
            f"{row['bar_end']}): a snapshot's candles are one of {', '.join(INTERVALS)}"
        )
    off = (start.dt.tz_convert(None).to_numpy().astype("datetime64[ns]").astype(np.int64) % shortest.value) != 0
    if off.any():
        row = frame[off].iloc[0]
        raise MarketDataError(
            f"{where}: irregular candles: {int(off.sum())} open off the {interval_name(shortest)} grid "
            f"(e.g. {row['asset']} {row['bar_start']})"
        )
    return shortest


def candle_span(frame: pd.DataFrame) -> pd.Timedelta:
    """The candle interval of a table ``snapshot_interval`` has checked (every row's span is the same):
    its first row's (1-minute if empty)."""
    return pd.Timedelta(frame["bar_end"].iloc[0] - frame["bar_start"].iloc[0]) if len(frame) else CANDLE


def same_interval(seen: dict[pd.Timedelta, pd.Series], frame: pd.DataFrame, where: str) -> None:
    """The pieces of one snapshot (its months) share one candle interval: ``seen`` (interval -> a row)
    collects them piece after piece; a second interval is refused with one line."""
    if len(frame):
        seen.setdefault(candle_span(frame), frame.iloc[0])
    if len(seen) > 1:
        rows = ", ".join(
            f"{row['asset']} {interval_name(step)} (open {row['bar_start']})" for step, row in seen.items()
        )
        raise MarketDataError(f"{where}: mixed candle intervals: {rows}; a snapshot has one interval")


def normalize_snapshot(
    candles: pd.DataFrame, duplicates: str = "raise", sort: bool = True, where: str = "market data"
) -> pd.DataFrame:
    """Check and order a long candle table into the snapshot schema. Reading keeps what the data guard
    must see (``duplicates="keep"``, ``sort=False``: repeated rows and the original order, for
    ``CandleStore`` to screen and report); writing a snapshot is strict. ``where`` (a file, a source)
    is named by the errors."""
    missing = set(SNAPSHOT_COLUMNS) - set(candles.columns)
    if missing:
        raise MarketDataError(f"market data lacks columns {sorted(missing)}")
    frame = candles[SNAPSHOT_COLUMNS].copy()
    frame["asset"] = frame["asset"].astype(str)
    for column in ("bar_start", "bar_end", "knowledge_ts"):
        frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[ns, UTC]")
    for column in FIELDS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    snapshot_interval(frame, where)
    early = frame["knowledge_ts"] < frame["bar_end"]
    if early.any():
        row = frame[early].iloc[0]
        raise MarketDataError(
            f"{int(early.sum())} candles are known before they close (e.g. {row['asset']} {row['bar_end']})"
        )
    if sort:
        frame = frame.sort_values(["bar_end", "asset"], kind="stable").reset_index(drop=True)
    duplicated = frame.duplicated(["asset", "bar_end"])
    if duplicated.any() and duplicates == "raise":
        row = frame[duplicated].iloc[0]
        raise MarketDataError(f"{int(duplicated.sum())} duplicate candles (e.g. {row['asset']} {row['bar_end']})")
    return frame


# why a candle was not used as it came (the data guard reports these per bar)
INVALID_PRICE, CONFLICTING_DUPLICATE = 1, 2
SCREEN_REASONS = {INVALID_PRICE: "invalid_price", CONFLICTING_DUPLICATE: "duplicate"}
ANOMALY_COLUMNS = ["asset", "bar_end", "knowledge_ts", "issue", "action", "detail"]


def out_of_order(candles: pd.DataFrame) -> pd.DataFrame:
    """Rows that come earlier in time than the row before them of the same asset, in the order given
    (they are used, sorted; reported): the anomaly report's rows."""
    bar_end = pd.to_datetime(candles["bar_end"], utc=True)
    back = bar_end.groupby(candles["asset"].astype(str).to_numpy()).diff() < pd.Timedelta(0)
    rows = candles.loc[back.to_numpy(), ["asset"]].assign(
        bar_end=bar_end[back.to_numpy()],
        knowledge_ts=pd.to_datetime(candles.loc[back.to_numpy(), "knowledge_ts"], utc=True),
        issue="out_of_order",
        action="kept, sorted",
        detail="earlier than the row before it",
    )
    return rows[ANOMALY_COLUMNS].reset_index(drop=True)


def screen_candles(candles: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split normalized candles (duplicates kept) into the usable rows, one per (asset, minute), and a
    report of every anomaly: identical duplicates (one kept),
    conflicting duplicates and invalid prices (NaN, zero or negative, high < low, open or close
    outside [low, high]). A dropped candle stays in the usable rows with NaN prices and a reason code
    in ``screen``, so that readers see it as known but unusable, and the guard can say why."""
    anomalies = []
    frame = candles.sort_values(["asset", "bar_end", "knowledge_ts"], kind="stable")
    key = ["asset", "bar_end"]
    # sorted by key, a repeated (asset, bar_end) is a row equal to the one before it: when there is
    # none (most files), the duplicate searches (a third of a large store's load time) are skipped
    assets, ends = pd.factorize(frame["asset"])[0], frame["bar_end"].array.asi8
    has_repeats = bool(((assets[1:] == assets[:-1]) & (ends[1:] == ends[:-1])).any())
    if has_repeats:
        repeated = frame.duplicated(key, keep=False)
        identical = repeated & frame.duplicated([*key, *FIELDS], keep=False)
        if identical.any():
            rows = frame[identical].drop_duplicates(key)
            anomalies.append(rows.assign(issue="duplicate", action="kept one copy", detail="identical rows"))
        frame = frame.drop_duplicates([*key, *FIELDS], keep="last")
    conflicting = frame.duplicated(key, keep=False) if has_repeats else pd.Series(False, index=frame.index)
    screen = np.zeros(len(frame), dtype=np.int8)
    if conflicting.any():
        rows = frame[conflicting].drop_duplicates(key, keep="last")
        anomalies.append(rows.assign(issue="duplicate", action="dropped", detail="rows disagree on prices"))
        screen[conflicting.to_numpy()] = CONFLICTING_DUPLICATE
    prices = frame[list(PRICE_FIELDS)].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        invalid = ~np.isfinite(prices).all(axis=1) | (prices <= 0).any(axis=1)
        high, low = frame["high"].to_numpy(), frame["low"].to_numpy()
        body_high = frame[["open", "close"]].max(axis=1).to_numpy()
        body_low = frame[["open", "close"]].min(axis=1).to_numpy()
        invalid |= (high < low) | (body_high > high) | (body_low < low)
    invalid &= screen == 0
    if invalid.any():
        rows = frame[invalid]
        detail = [f"o h l c = {o:g} {h:g} {lo:g} {c:g}" for o, h, lo, c in rows[list(PRICE_FIELDS)].to_numpy()]
        anomalies.append(rows.assign(issue="invalid_price", action="dropped", detail=detail))
        screen[invalid] = INVALID_PRICE
    frame = frame.assign(screen=screen)
    if has_repeats:
        frame = frame.drop_duplicates(key, keep="last")  # a conflicting pair leaves one dropped row
    frame.loc[frame["screen"] > 0, list(FIELDS)] = np.nan
    frame = frame.sort_values(["bar_end", "asset"], kind="stable").reset_index(drop=True)
    report = (
        pd.concat(anomalies, ignore_index=True)[ANOMALY_COLUMNS] if anomalies else pd.DataFrame(columns=ANOMALY_COLUMNS)
    )
    return frame, report.sort_values(["bar_end", "asset"], kind="stable").reset_index(drop=True)


DROPPED_COLUMNS = ["asset", "bar_start", "bar_end", "issue", "detail"]


def screen_for_snapshot(candles: pd.DataFrame, where: str = "market data") -> tuple[pd.DataFrame, pd.DataFrame]:
    """A strict snapshot's rule, the data guard's own (``screen_candles``, one rule): the candles it
    would use (a repeated identical row once), and those it would drop (``DROPPED_COLUMNS``: invalid
    prices, conflicting duplicates), which a snapshot never holds without saying so."""
    frame = normalize_snapshot(candles, duplicates="keep", where=where)
    interval = candle_span(frame)  # normalize_snapshot checked it
    usable, report = screen_candles(frame)
    dropped = report[report["action"] == "dropped"]
    dropped = pd.DataFrame(
        {
            "asset": dropped["asset"].astype(str),
            "bar_start": dropped["bar_end"] - interval,
            "bar_end": dropped["bar_end"],
            "issue": dropped["issue"].astype(str),
            "detail": dropped["detail"].astype(str),
        },
        columns=DROPPED_COLUMNS,
    ).reset_index(drop=True)
    kept = usable[usable["screen"].to_numpy() == 0].drop(columns="screen").reset_index(drop=True)
    return kept, dropped


def select_window(candles: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Candles whose bar lies inside [start, end)."""
    mask = (candles["bar_start"] >= start) & (candles["bar_end"] <= end)
    return candles.loc[mask].reset_index(drop=True)


SNAPSHOT_METADATA_PREFIX = "prod_system."
# A snapshot spanning several calendar months is a folder of one Parquet file per month of bar_start,
# hive-style (``snapshot.parquet/month=2024-01/part.parquet``, which pyarrow, DuckDB and Spark read as
# one table): a run reads only the months of its window, a dump writes one month at a time.
MONTH_PART, PART_FILE = "month=", "part.parquet"
# A snapshot's funding rates (``data.funding``'s table): a one-file snapshot NAME.parquet has them
# beside it in NAME.funding.parquet, a partitioned one inside its folder in _funding.parquet (the
# leading underscore: pyarrow, Spark and DuckDB's hive reading skip it, and so does ``snapshot_parts``).
# A snapshot without that file has no funding data: runs use the config's assumed rate.
FUNDING_FILE, FUNDING_SUFFIX = "_funding.parquet", ".funding.parquet"
ROW_GROUP = 131_072  # rows per Parquet row group: a day's window skips the groups it does not need


def month_windows(start: pd.Timestamp, end: pd.Timestamp) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """[start, end) cut at calendar month boundaries (UTC): the pieces a long dump writes one by one."""
    pieces, lo = [], start
    while lo < end:
        hi = min(end, (lo.tz_convert(None).to_period("M") + 1).to_timestamp().tz_localize("UTC"))
        pieces.append((lo, hi))
        lo = hi
    return pieces


def _month_key(frame: pd.DataFrame) -> pd.Series:
    return frame["bar_start"].dt.strftime("%Y-%m")


def _snapshot_table(frame: pd.DataFrame, metadata: dict[str, str] | None) -> pa.Table:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    extra = {f"{SNAPSHOT_METADATA_PREFIX}{name}".encode(): text.encode() for name, text in (metadata or {}).items()}
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})


def replaceable_snapshot(path: str | Path) -> Path:
    """``path``, unless writing a snapshot there would replace a folder that is not a snapshot (a
    partitioned snapshot is replaced whole: any other folder is the user's, never deleted)."""
    path = Path(path)
    if path.is_dir() and not is_partitioned_snapshot(path) and any(path.iterdir()):
        raise MarketDataError(f"{path} is a folder but not a snapshot: it is not replaced by one")
    return path


def write_snapshot(
    candles: pd.DataFrame,
    path: str | Path,
    metadata: dict[str, str] | None = None,
    funding: pd.DataFrame | None = None,
) -> Path:
    """Write a snapshot atomically (a crash never leaves half a file under the final name): one file,
    or, for candles of several calendar months, a folder of one file per month (``write_snapshot_months``).

    ``metadata`` (name -> text, e.g. the instruments the candles trade under) travels inside the
    file (each month's), so it cannot be separated from its candles; ``read_snapshot_metadata`` gives it back.
    ``funding`` (the window's funding rates; None: none) is written with it (``snapshot_funding_path``).
    """
    path = replaceable_snapshot(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = normalize_snapshot(candles)
    months = _month_key(frame)
    if months.nunique() > 1:
        pieces = (rows for _, rows in frame.groupby(months.to_numpy(), sort=True))
        return write_snapshot_months(pieces, path, metadata, funding)
    table = _snapshot_table(frame, metadata)
    write_atomically(path, lambda tmp: pq.write_table(table, tmp, row_group_size=ROW_GROUP))
    _write_funding(path.with_suffix(FUNDING_SUFFIX), funding)
    return path


def _write_funding(path: Path, funding: pd.DataFrame | None) -> None:
    """The funding file of a snapshot, written after its candles; with no funding (None), an earlier
    snapshot's file is removed rather than left beside a new one."""
    if funding is None:
        path.unlink(missing_ok=True)
        return
    frame = normalize_funding(funding, f"funding of {path}")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    write_atomically(path, lambda tmp: pq.write_table(table, tmp, row_group_size=ROW_GROUP))


def snapshot_funding_path(path: str | Path) -> Path:
    """Where a snapshot's funding rates are: inside a partitioned snapshot, beside a one-file one."""
    path = Path(path)
    return path / FUNDING_FILE if path.is_dir() else path.with_suffix(FUNDING_SUFFIX)


def read_snapshot_funding(path: str | Path, window: tuple[pd.Timestamp, pd.Timestamp] | None = None) -> pd.DataFrame:
    """A snapshot's funding rates (``data.funding``'s table), with ``window`` (start, end) those settled
    in [start, end]; a snapshot written without any (the bundled one, older ones) has none."""
    file = snapshot_funding_path(path)
    if not file.exists():
        return empty_funding()
    filters = None
    if window is not None:
        kind = pa.timestamp("ns", tz="UTC")
        filters = [
            ("funding_time", ">=", pa.scalar(window[0].value, kind)),
            ("funding_time", "<=", pa.scalar(window[1].value, kind)),
        ]
    try:
        frame = pq.read_table(file, columns=FUNDING_COLUMNS, filters=filters).to_pandas()
    except Exception as error:
        raise MarketDataError(f"cannot read the funding rates of snapshot {path} ({file}): {error}") from None
    return normalize_funding(frame, str(file))


def write_snapshot_months(
    pieces: Iterable[pd.DataFrame],
    path: str | Path,
    metadata: dict[str, str] | None = None,
    funding: pd.DataFrame | Callable[[], pd.DataFrame] | None = None,
) -> Path:
    """Write a snapshot partitioned by month from ``pieces`` (each the candles of whole months, in any
    order, each month in one piece), one piece in memory at a time. The folder appears whole, under
    its final name, once every month is written; any failure (bad candles in a later month, a full
    disk, Ctrl-C) leaves ``path`` as it was. ``funding`` (the rates, or a function giving them once the
    candles are written) goes inside the folder, in the same swap."""
    path = replaceable_snapshot(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(folder: Path) -> None:
        intervals = {}
        for piece in pieces:
            frame = normalize_snapshot(piece)
            same_interval(intervals, frame, f"snapshot {path}")
            for month, rows in frame.groupby(_month_key(frame).to_numpy(), sort=True):
                part = folder / f"{MONTH_PART}{month}" / PART_FILE
                if part.exists():
                    raise MarketDataError(f"snapshot {path}: the candles of {month} came in two pieces")
                part.parent.mkdir()
                table = _snapshot_table(rows.reset_index(drop=True), metadata)
                pq.write_table(table, part, row_group_size=ROW_GROUP)
        if not any(folder.iterdir()):
            raise MarketDataError(f"snapshot {path}: no candles to write")
        _write_funding(folder / FUNDING_FILE, funding() if callable(funding) else funding)

    write_folder_atomically(path, write)
    path.with_suffix(FUNDING_SUFFIX).unlink(missing_ok=True)  # of a one-file snapshot this one replaced
    return path


def is_partitioned_snapshot(path: str | Path) -> bool:
    """A folder of month files written by ``write_snapshot_months`` (not a folder of CSV files)."""
    path = Path(path)
    return path.is_dir() and any(path.glob(f"{MONTH_PART}*"))


def snapshot_parts(path: str | Path) -> dict[str, Path]:
    """A partitioned snapshot's month files, by month ('2024-01'), in order."""
    path = Path(path)
    parts = {}
    for folder in sorted(path.glob(f"{MONTH_PART}*")):
        month = folder.name.removeprefix(MONTH_PART)
        if not (folder / PART_FILE).is_file():
            raise MarketDataError(f"snapshot {path}: {folder.name}/ has no {PART_FILE} (an incomplete copy?)")
        parts[month] = folder / PART_FILE
    if not parts:
        raise MarketDataError(
            f"{path} is a folder but not a snapshot partitioned by month (no {MONTH_PART}YYYY-MM/{PART_FILE})"
        )
    return parts


def read_snapshot_metadata(path: str | Path) -> dict[str, str]:
    """What ``write_snapshot`` stored beside the candles (empty for a snapshot written without any)."""
    path = Path(path)
    try:
        file = next(iter(snapshot_parts(path).values())) if path.is_dir() else path
        stored = pq.read_schema(file).metadata or {}
    except MarketDataError:
        raise
    except Exception as error:
        raise MarketDataError(f"cannot read market data snapshot {path}: {error}") from None
    prefix = SNAPSHOT_METADATA_PREFIX.encode()
    return {key[len(prefix) :].decode(): value.decode() for key, value in stored.items() if key.startswith(prefix)}


def read_snapshot(path: str | Path, window: tuple[pd.Timestamp, pd.Timestamp] | None = None) -> pd.DataFrame:
    """A snapshot's candles: a file's all; a partitioned snapshot's all, or with ``window`` only those
    opening in [start, end), read from the months that overlap it (and of those, only the row groups
    that can hold them)."""
    path = Path(path)
    if not path.exists():
        raise MarketDataError(f"market data snapshot {path} not found")
    try:
        frame = _read_months(path, window) if path.is_dir() else pd.read_parquet(path)
    except MarketDataError:
        raise
    except Exception as error:
        raise MarketDataError(f"cannot read market data snapshot {path}: {error}") from None
    return normalize_snapshot(frame, duplicates="keep", sort=False, where=f"snapshot {path}")


def _read_months(path: Path, window: tuple[pd.Timestamp, pd.Timestamp] | None) -> pd.DataFrame:
    parts = snapshot_parts(path)
    filters = None
    if window is not None:
        start, end = window
        first, last = f"{start:%Y-%m}", f"{end - pd.Timedelta(1):%Y-%m}"
        parts = {month: part for month, part in parts.items() if first <= month <= last}
        kind = pa.timestamp("ns", tz="UTC")
        filters = [("bar_start", ">=", pa.scalar(start.value, kind)), ("bar_start", "<", pa.scalar(end.value, kind))]
    if not parts:  # the schema, no rows
        return pq.read_table(next(iter(snapshot_parts(path).values()))).schema.empty_table().to_pandas()
    tables = [pq.read_table(part, filters=filters) for part in parts.values()]
    return pa.concat_tables(tables).to_pandas()


# ---------------------------------------------------------------------------------------------
# The in-memory store and the visibility rule
# ---------------------------------------------------------------------------------------------


class Candles:
    """Candles on a regular grid of ``interval`` (rows: candle bar_end; columns: assets); NaN = not visible.

    Fields are masked lazily, on first use, since most readers need only the close.
    """

    def __init__(
        self,
        first_bar_end: pd.Timestamp,
        count: int,
        assets: list[str],
        known: np.ndarray | None = None,
        raw: dict[str, np.ndarray] | None = None,
        offset: int = 0,
        screen: np.ndarray | None = None,
        interval: pd.Timedelta = CANDLE,
    ):
        self.first_bar_end = first_bar_end
        self.interval = interval
        self.count = count
        self.assets = assets
        self._fields: dict[str, np.ndarray] = {}
        self._known = known
        self._raw = raw or {}
        self._offset = offset
        self._screen = screen

    @property
    def index(self) -> pd.DatetimeIndex:
        return pd.date_range(self.first_bar_end, periods=self.count, freq=self.interval)

    def field(self, name: str) -> np.ndarray:
        if name not in self._fields:
            values = np.full((self.count, len(self.assets)), np.nan)
            if self._known is not None:
                rows = slice(self._offset, self._offset + len(self._known))
                values[rows] = np.where(self._known, self._raw[name], np.nan)
            self._fields[name] = values
        return self._fields[name]

    @property
    def fields(self) -> dict[str, np.ndarray]:
        return {name: self.field(name) for name in FIELDS}

    def screened(self) -> np.ndarray:
        """Per row and asset, why a known candle was dropped (``SCREEN_REASONS`` codes; 0 = usable or
        not known): its prices read as NaN."""
        codes = np.zeros((self.count, len(self.assets)), dtype=np.int8)
        if self._known is not None and self._screen is not None:
            rows = slice(self._offset, self._offset + len(self._known))
            codes[rows] = np.where(self._known, self._screen, 0)
        return codes


class CandleStore:
    """A snapshot held in memory as wide arrays, for fast reads of any time window."""

    def __init__(
        self, snapshot: pd.DataFrame, universe: list[str], every_asset: bool = True, funding: pd.DataFrame | None = None
    ):
        """``every_asset``: refuse a snapshot without a candle of some asset of the universe (a file
        that misses an asset is a mistake); a live session's window of the database may lack an
        asset whose candles stopped coming: its prices read as NaN, and the data guard says so.
        ``funding``: the source's funding rates (``data.funding``; none: the runs assume a rate)."""
        funding = empty_funding() if funding is None else funding
        self.funding = funding[funding["asset"].isin(universe)].reset_index(drop=True)
        disorder = out_of_order(snapshot)
        snapshot, anomalies = screen_candles(normalize_snapshot(snapshot, duplicates="keep"))
        unknown = sorted(set(universe) - set(snapshot["asset"].unique()))
        if unknown and every_asset:
            raise MarketDataError(f"market data has no candles for {unknown}")
        snapshot = snapshot[snapshot["asset"].isin(universe)]
        anomalies = pd.concat([disorder, anomalies], ignore_index=True) if len(disorder) else anomalies
        # what the screening found: reported by whoever loads the store (the guard reports per bar)
        self.anomalies = anomalies[anomalies["asset"].isin(universe)].reset_index(drop=True)
        self.assets = list(universe)
        # the snapshot's one candle interval (checked by normalize_snapshot): the grid's step
        self.interval = candle_span(snapshot)
        first, last = snapshot["bar_end"].min(), snapshot["bar_end"].max()
        self.index = pd.date_range(first, last, freq=self.interval)
        rows = ((snapshot["bar_end"] - first) // self.interval).to_numpy()
        codes, names = pd.factorize(snapshot["asset"])  # a few names looked up, not a row each
        cols = pd.Index(self.assets).get_indexer(names)[codes]
        shape = (len(self.index), len(self.assets))
        self._fields: dict[str, np.ndarray] = {}
        for name in FIELDS:
            values = np.full(shape, np.nan)
            values[rows, cols] = snapshot[name].to_numpy()
            self._fields[name] = values
        self._screen = np.zeros(shape, dtype=np.int8)
        self._screen[rows, cols] = snapshot["screen"].to_numpy()
        self._knowledge = np.full(shape, _NEVER, dtype=np.int64)
        self._knowledge[rows, cols] = (
            snapshot["knowledge_ts"].dt.tz_convert(None).to_numpy().astype("datetime64[ns]").astype(np.int64)
        )
        self._first_ns = first.value

    @property
    def first_bar_end(self) -> pd.Timestamp:
        return self.index[0]

    @property
    def last_bar_end(self) -> pd.Timestamp:
        return self.index[-1]

    @property
    def last_knowledge_ts(self) -> pd.Timestamp:
        """When the last candle of the store became known: every candle is visible from then on."""
        known = self._knowledge[self._knowledge != _NEVER]
        return pd.Timestamp(int(known.max()), tz="UTC") if known.size else self.last_bar_end

    def visible(self, now: pd.Timestamp, since: pd.Timestamp, until: pd.Timestamp | None = None) -> Candles:
        """Candles with bar_end in (since, min(now, until)] that are known at ``now`` (knowledge_ts <= now).

        THE visibility rule of the system. The grid is regular (the snapshot's candle interval); a
        candle not yet known (or missing) is NaN. Rows are never returned past ``now``: a candle
        cannot be known before it closes.
        """
        step = self.interval.value
        last = now if until is None else min(now, until)
        first_row = (since.value - self._first_ns) // step + 1  # the grid's first bar_end after since
        count = max(0, (last.value - self._first_ns) // step + 1 - first_row)
        first_end = pd.Timestamp(self._first_ns + first_row * step, tz="UTC")
        lo, hi = max(first_row, 0), min(first_row + count, len(self.index))
        if hi <= lo:
            return Candles(first_end, count, self.assets, interval=self.interval)
        known = self._knowledge[lo:hi] <= now.value
        raw = {name: values[lo:hi] for name, values in self._fields.items()}
        screen = self._screen[lo:hi]
        return Candles(
            first_end,
            count,
            self.assets,
            known=known,
            raw=raw,
            offset=lo - first_row,
            screen=screen,
            interval=self.interval,
        )


class MarketDataReader:
    """Reads market data as of the injected clock's now; nothing else in the system reads candles."""

    def __init__(self, store: CandleStore, clock: Clock):
        self.store = store
        self.clock = clock

    @property
    def assets(self) -> list[str]:
        return self.store.assets

    def read(
        self,
        lookback: pd.Timedelta,
        since: pd.Timestamp | None = None,
        until: pd.Timestamp | None = None,
        asof: pd.Timestamp | None = None,
    ) -> Candles:
        """The candles of the last ``lookback`` (or since ``since``, up to ``until``) visible now, or as
        of an earlier ``asof`` (what a bar decided late could have known at its deadline)."""
        now = self.clock.now() if asof is None else min(asof, self.clock.now())
        if since is None:
            since = (now - lookback).floor(self.store.interval)
        return self.store.visible(now, since, until)
