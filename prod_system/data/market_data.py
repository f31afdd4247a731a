"""Market data: loading candles, snapshots, and the single visibility rule.

A candle is a 1-minute OHLCV bar [bar_start, bar_end). Each row carries a ``knowledge_ts``: the
time the system could first know it (when it was written to the real-time database, or, for
historical files that carry none, bar_end plus a configured delay).

``CandleStore.visible`` is the one place that decides what data is visible: a row is returned only
if ``knowledge_ts <= now``. Every reader (the model, the mocked broker, the portfolio's marks) goes
through ``MarketDataReader``, which asks it with the injected clock's time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from prod_system.common.clock import Clock
from prod_system.common.files import write_atomically
from prod_system.errors import MarketDataError

CANDLE = pd.Timedelta(minutes=1)
PRICE_FIELDS = ("open", "high", "low", "close")
FIELDS = (*PRICE_FIELDS, "volume")
SNAPSHOT_COLUMNS = ["asset", "bar_start", "bar_end", "knowledge_ts", *FIELDS]
_NEVER = np.iinfo(np.int64).max


# ---------------------------------------------------------------------------------------------
# Sources: turning files into the long snapshot table
# ---------------------------------------------------------------------------------------------


def read_csv_dir(directory: str | Path, universe: list[str]) -> pd.DataFrame:
    """Read ``{SYMBOL}_USDT.csv.gz`` files (open_time, open, high, low, close, volume) in long form."""
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
    candles = pd.concat(frames, ignore_index=True)
    candles["bar_end"] = candles["bar_start"] + CANDLE
    return candles


def with_knowledge_time(candles: pd.DataFrame, delay: pd.Timedelta) -> pd.DataFrame:
    """Historical files carry no knowledge time: a candle is known ``delay`` after it closes."""
    candles = candles.copy()
    candles["knowledge_ts"] = candles["bar_end"] + delay
    return candles


def normalize_snapshot(candles: pd.DataFrame, duplicates: str = "raise", sort: bool = True) -> pd.DataFrame:
    """Check and order a long candle table into the snapshot schema. Reading keeps what the data guard
    must see (``duplicates="keep"``, ``sort=False``: repeated rows and the original order, for
    ``CandleStore`` to screen and report); writing a snapshot is strict."""
    missing = set(SNAPSHOT_COLUMNS) - set(candles.columns)
    if missing:
        raise MarketDataError(f"market data lacks columns {sorted(missing)}")
    frame = candles[SNAPSHOT_COLUMNS].copy()
    frame["asset"] = frame["asset"].astype(str)
    for column in ("bar_start", "bar_end", "knowledge_ts"):
        frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[ns, UTC]")
    for column in FIELDS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    if (frame["bar_end"] - frame["bar_start"] != CANDLE).any():
        raise MarketDataError("market data rows must be 1-minute candles (bar_end = bar_start + 1 minute)")
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
    repeated = frame.duplicated(key, keep=False)
    identical = repeated & frame.duplicated([*key, *FIELDS], keep=False)
    if identical.any():
        rows = frame[identical].drop_duplicates(key)
        anomalies.append(rows.assign(issue="duplicate", action="kept one copy", detail="identical rows"))
    frame = frame.drop_duplicates([*key, *FIELDS], keep="last")
    conflicting = frame.duplicated(key, keep=False)
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
    frame = frame.drop_duplicates(key, keep="last")  # a conflicting pair leaves one dropped row
    frame.loc[frame["screen"] > 0, list(FIELDS)] = np.nan
    frame = frame.sort_values(["bar_end", "asset"], kind="stable").reset_index(drop=True)
    report = (
        pd.concat(anomalies, ignore_index=True)[ANOMALY_COLUMNS] if anomalies else pd.DataFrame(columns=ANOMALY_COLUMNS)
    )
    return frame, report.sort_values(["bar_end", "asset"], kind="stable").reset_index(drop=True)


def select_window(candles: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Candles whose bar lies inside [start, end)."""
    mask = (candles["bar_start"] >= start) & (candles["bar_end"] <= end)
    return candles.loc[mask].reset_index(drop=True)


SNAPSHOT_METADATA_PREFIX = "prod_system."


def write_snapshot(candles: pd.DataFrame, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a snapshot atomically (a crash never leaves half a file under the final name).

    ``metadata`` (name -> text, e.g. the instruments the candles trade under) travels inside the
    file, so it cannot be separated from its candles; ``read_snapshot_metadata`` gives it back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = normalize_snapshot(candles)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    extra = {f"{SNAPSHOT_METADATA_PREFIX}{name}".encode(): text.encode() for name, text in (metadata or {}).items()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    write_atomically(path, lambda tmp: pq.write_table(table, tmp))
    return path


def read_snapshot_metadata(path: str | Path) -> dict[str, str]:
    """What ``write_snapshot`` stored beside the candles (empty for a snapshot written without any)."""
    path = Path(path)
    try:
        stored = pq.read_schema(path).metadata or {}
    except Exception as error:
        raise MarketDataError(f"cannot read market data snapshot {path}: {error}") from None
    prefix = SNAPSHOT_METADATA_PREFIX.encode()
    return {key[len(prefix) :].decode(): value.decode() for key, value in stored.items() if key.startswith(prefix)}


def read_snapshot(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise MarketDataError(f"market data snapshot {path} not found")
    try:
        frame = pd.read_parquet(path)
    except Exception as error:
        raise MarketDataError(f"cannot read market data snapshot {path}: {error}") from None
    return normalize_snapshot(frame, duplicates="keep", sort=False)


# ---------------------------------------------------------------------------------------------
# The in-memory store and the visibility rule
# ---------------------------------------------------------------------------------------------


class Candles:
    """Candles on a regular 1-minute grid (rows: candle bar_end; columns: assets); NaN = not visible.

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
    ):
        self.first_bar_end = first_bar_end
        self.count = count
        self.assets = assets
        self._fields: dict[str, np.ndarray] = {}
        self._known = known
        self._raw = raw or {}
        self._offset = offset
        self._screen = screen

    @property
    def index(self) -> pd.DatetimeIndex:
        return pd.date_range(self.first_bar_end, periods=self.count, freq=CANDLE)

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

    def __init__(self, snapshot: pd.DataFrame, universe: list[str], every_asset: bool = True):
        """``every_asset``: refuse a snapshot without a candle of some asset of the universe (a file
        that misses an asset is a mistake); a live session's window of the database may lack an
        asset whose candles stopped coming: its prices read as NaN, and the data guard says so."""
        disorder = out_of_order(snapshot)
        snapshot, anomalies = screen_candles(normalize_snapshot(snapshot, duplicates="keep"))
        unknown = sorted(set(universe) - set(snapshot["asset"]))
        if unknown and every_asset:
            raise MarketDataError(f"market data has no candles for {unknown}")
        snapshot = snapshot[snapshot["asset"].isin(universe)]
        anomalies = pd.concat([disorder, anomalies], ignore_index=True) if len(disorder) else anomalies
        # what the screening found: reported by whoever loads the store (the guard reports per bar)
        self.anomalies = anomalies[anomalies["asset"].isin(universe)].reset_index(drop=True)
        self.assets = list(universe)
        first, last = snapshot["bar_end"].min(), snapshot["bar_end"].max()
        self.index = pd.date_range(first, last, freq=CANDLE)
        rows = ((snapshot["bar_end"] - first) // CANDLE).to_numpy()
        cols = pd.Index(self.assets).get_indexer(snapshot["asset"])
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

        THE visibility rule of the system. The grid is regular; a candle not yet known (or missing)
        is NaN. Rows are never returned past ``now``: a candle cannot be known before it closes.
        """
        step = CANDLE.value
        last = now if until is None else min(now, until)
        count = max(0, (last.value - since.value) // step)
        first_row = (since.value + step - self._first_ns) // step
        lo, hi = max(first_row, 0), min(first_row + count, len(self.index))
        if hi <= lo:
            return Candles(since + CANDLE, count, self.assets)
        known = self._knowledge[lo:hi] <= now.value
        raw = {name: values[lo:hi] for name, values in self._fields.items()}
        screen = self._screen[lo:hi]
        return Candles(since + CANDLE, count, self.assets, known=known, raw=raw, offset=lo - first_row, screen=screen)


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
            since = (now - lookback).floor(CANDLE)
        return self.store.visible(now, since, until)
