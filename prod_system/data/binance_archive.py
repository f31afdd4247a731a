"""Binance's public data archive (data.binance.vision) of USDT-M futures klines, read as users download it.

The archive keeps one zip per symbol, interval and month or day, each holding one CSV of 12 columns
(open_time, open, high, low, close, volume, close_time, quote_volume, count, taker_buy_volume,
taker_buy_quote_volume, ignore), with a ``.CHECKSUM`` file (sha256sum's format) beside it:

    data/futures/um/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip
    data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-02-01.zip

Newer files start with a header row, older ones (until 2022) do not. Times are milliseconds since the
epoch; Binance moved its spot files to microseconds from 2025-01-01, so the unit is taken from each
value's size rather than assumed. The folder may keep the archive's nested layout or hold the zips
flat: only the file names count. A daily file repeating a monthly one's rows is read once; rows that
disagree are kept for the data guard (and a strict dump) to judge.

Funding rates sit in the same archive, one zip per symbol and month, a CSV with a header
``calc_time,funding_interval_hours,last_funding_rate`` (calc_time: the settlement, in ms, a few ms
after the hour):

    data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-01.zip

A folder may hold both; each reader takes its own files by name.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from prod_system.data.funding import empty_funding, known_after, normalize_funding
from prod_system.data.market_data import interval_name, parse_interval
from prod_system.errors import MarketDataError

QUOTE = "USDT"
KLINE_COLUMNS = [
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
]
NAME_FORMAT = "SYMBOL-INTERVAL-YYYY-MM.zip or SYMBOL-INTERVAL-YYYY-MM-DD.zip (e.g. BTCUSDT-1m-2024-01.zip)"
_NAME = re.compile(
    r"^(?P<symbol>[A-Z0-9]+)-(?P<interval>\d+[smhdw]|1mo)-(?P<year>\d{4})-(?P<month>\d{2})(?:-(?P<day>\d{2}))?$"
)
FUNDING_HEADER = "calc_time,funding_interval_hours,last_funding_rate"
FUNDING_NAME_FORMAT = "SYMBOL-fundingRate-YYYY-MM.zip (e.g. BTCUSDT-fundingRate-2024-01.zip)"
_FUNDING_NAME = re.compile(r"^(?P<symbol>[A-Z0-9]+)-fundingRate-(?P<year>\d{4})-(?P<month>\d{2})$")
# open_time below this is in milliseconds (until the year 5138), at or above it in microseconds (after 1973)
_MICROSECONDS_FROM = 10**14


@dataclass(frozen=True)
class ArchiveFile:
    """One zip of the archive, as its name describes it."""

    path: Path
    symbol: str
    interval: str
    start: pd.Timestamp  # the first moment of its month or day
    end: pd.Timestamp  # exclusive

    @property
    def asset(self) -> str:
        return self.symbol.removesuffix(QUOTE)

    @property
    def step(self) -> pd.Timedelta:
        return interval_delta(self.interval, self.path)


def interval_delta(interval: str, path: Path) -> pd.Timedelta:
    """The length of a kline interval named as the archive names it (1m, 5m, 1h...), if a snapshot can
    have it."""
    try:
        return parse_interval(interval)
    except MarketDataError as error:
        raise MarketDataError(f"{path}: {error}") from None


def parse_name(path: Path) -> ArchiveFile:
    """The symbol, interval and period of an archive zip, from its name alone."""
    match = _NAME.match(path.name.removesuffix(".zip"))
    if not match or not path.name.endswith(".zip"):
        raise MarketDataError(f"{path}: the file name does not parse as a Binance kline file: {NAME_FORMAT}")
    year, month, day = match["year"], match["month"], match["day"]
    try:
        start = pd.Timestamp(f"{year}-{month}-{day or '01'}", tz="UTC")
    except ValueError:
        raise MarketDataError(f"{path}: {year}-{month}{'-' + day if day else ''} is not a date") from None
    end = start + (pd.Timedelta(days=1) if day else pd.DateOffset(months=1))
    return ArchiveFile(path, match["symbol"], match["interval"], start, end)


def archive_files(directory: str | Path) -> list[ArchiveFile]:
    """Every USDT-M kline zip under ``directory`` (nested as the archive is, or flat), by name; files of
    symbols not quoted in USDT are not ours and are left out."""
    files = [parse_name(path) for path in _zips(directory) if not _is_funding(path)]
    files = [file for file in files if file.symbol.endswith(QUOTE) and file.asset]
    if not files:
        raise MarketDataError(f"no {QUOTE} kline zip files in {directory}: expected {NAME_FORMAT}")
    return files


def _zips(directory: str | Path) -> list[Path]:
    """Every zip under ``directory``, nested or flat, in name order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MarketDataError(f"Binance archive folder {directory} does not exist")
    return sorted(directory.rglob("*.zip"))


def _is_funding(path: Path) -> bool:
    return "-fundingRate-" in path.name


def archive_assets(directory: str | Path) -> list[str]:
    """The assets the archive folder has klines of (BTCUSDT -> BTC)."""
    return sorted({file.asset for file in archive_files(directory)})


def read_archive(
    directory: str | Path,
    universe: list[str] | None = None,
    window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> pd.DataFrame:
    """Candles (asset, bar_start, bar_end, open, high, low, close, volume) of ``universe`` (every asset
    of the folder if None or empty) from the archive files; with ``window``, only the files whose
    month or day overlaps it are opened, and only the candles opening inside it are kept."""
    files = archive_files(directory)
    assets = list(universe) if universe else sorted({file.asset for file in files})
    intervals = {file.interval for file in files if file.asset in assets}
    if len(intervals) > 1:
        raise MarketDataError(
            f"{directory} holds klines of several intervals ({', '.join(sorted(intervals))}): "
            "a snapshot has one; keep one interval's files in the folder"
        )
    frames = []
    for asset in assets:
        mine = [file for file in files if file.asset == asset]
        if not mine:
            raise MarketDataError(f"no candles for {asset}: no {asset}{QUOTE}-*.zip file in {directory}")
        if window is not None:
            mine = [file for file in mine if file.start < window[1] and file.end > window[0]]
        mine.sort(key=lambda file: (file.start, file.end))
        overlap, reach = False, None
        for file in mine:
            overlap = overlap or (reach is not None and file.start < reach)
            reach = file.end if reach is None else max(reach, file.end)
        read = []
        for file in mine:
            verify_checksum(file.path)
            read.append(read_kline_zip(file))
        if overlap:  # a daily file beside its month's file repeats its rows: identical copies are one candle
            read = [pd.concat(read, ignore_index=True).drop_duplicates()]
        frames.extend(read)
    if not frames:
        return _empty()
    candles = pd.concat(frames, ignore_index=True)
    if window is not None:
        candles = candles[(candles["bar_start"] >= window[0]) & (candles["bar_start"] < window[1])]
    return candles.reset_index(drop=True)


def verify_checksum(path: Path) -> None:
    """Compare the zip with the ``.CHECKSUM`` beside it, if there is one: a download cut short or
    damaged is refused rather than read as fewer candles."""
    checksum = path.with_name(path.name + ".CHECKSUM")
    if not checksum.exists():
        return
    expected = checksum.read_text(errors="replace").split()
    if not expected or not re.fullmatch(r"[0-9a-fA-F]{64}", expected[0]):
        raise MarketDataError(f"{checksum}: not a sha256 checksum line ('<64 hex digits>  {path.name}')")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected[0].lower():
        raise MarketDataError(f"{path}: its sha256 does not match {checksum.name} (a corrupt or partial download)")


def zip_csv(path: Path) -> bytes:
    """The one CSV file of an archive zip (klines or funding rates); a zip without exactly one, or a
    corrupt one, is a ``MarketDataError`` naming the file."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [name for name in archive.namelist() if name.lower().endswith(".csv")]
            if len(members) != 1:
                raise MarketDataError(f"{path}: expected one CSV file inside, found {len(members)}")
            return archive.read(members[0])
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise MarketDataError(f"{path}: corrupt zip file ({error})") from None


def read_kline_zip(file: ArchiveFile) -> pd.DataFrame:
    """The candles of one archive zip, checked against what its name says (interval and period)."""
    path = file.path
    text = zip_csv(path)
    header = not text[:1].isdigit()  # newer files name their columns
    if not text.strip():
        return _empty()
    lines = text.split(b"\n", 2)
    fields = lines[1 if header and len(lines) > 1 else 0].rstrip(b"\r")
    if fields.count(b",") + 1 != len(KLINE_COLUMNS):
        raise MarketDataError(
            f"{path}: {fields.count(b',') + 1} columns, a kline file has {len(KLINE_COLUMNS)} "
            f"({', '.join(KLINE_COLUMNS)})"
        )
    try:  # Arrow's reader: several times pandas' speed on a year of 1-minute files
        options = pa_csv.ReadOptions(autogenerate_column_names=True, skip_rows=1 if header else 0)
        raw = pa_csv.read_csv(io.BytesIO(text), read_options=options).to_pandas()
        raw.columns = range(raw.shape[1])
    except pa.ArrowInvalid as error:
        raise MarketDataError(f"{path}: not a kline CSV ({str(error).strip()})") from None
    opens, open_tick = _epoch_ns(raw[0], path, "open_time", header)
    closes, _ = _epoch_ns(raw[6], path, "close_time", header)
    _check_interval(file, opens, closes, open_tick)
    bar_start = pd.to_datetime(opens, utc=True)
    if len(bar_start) and (bar_start.min() < file.start or bar_start.max() >= file.end):
        outside = bar_start[(bar_start < file.start) | (bar_start >= file.end)][0]
        raise MarketDataError(
            f"{path}: holds a candle opening at {outside}, outside the period its name says "
            f"({file.start:%Y-%m-%d} to {file.end:%Y-%m-%d})"
        )
    frame = pd.DataFrame({"asset": file.asset, "bar_start": bar_start, "bar_end": bar_start + file.step})
    for position, name in enumerate(KLINE_COLUMNS[1:6], start=1):
        frame[name] = pd.to_numeric(raw[position], errors="coerce")  # a bad price is the data guard's to report
    return frame


def _empty() -> pd.DataFrame:
    times = {name: pd.Series(dtype="datetime64[ns, UTC]") for name in ("bar_start", "bar_end")}
    prices = {name: pd.Series(dtype="float64") for name in KLINE_COLUMNS[1:6]}
    return pd.DataFrame({"asset": pd.Series(dtype=str), **times, **prices})


def _epoch_ns(values: pd.Series, path: Path, column: str, header: bool) -> tuple[np.ndarray, np.ndarray]:
    """Nanoseconds since the epoch of archive times, each read as milliseconds or microseconds by its
    size, and the length of one tick of its unit (ns)."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = (numbers.isna() | (numbers != numbers.round())).to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise MarketDataError(
            f"{path}: {column} {values.iloc[row]!r} (line {row + 1 + int(header)}) is not a time in ms or µs"
        )
    ticks = numbers.to_numpy(dtype=np.int64)
    tick = np.where(ticks >= _MICROSECONDS_FROM, 1_000, 1_000_000)
    return ticks * tick, tick


def _check_interval(file: ArchiveFile, opens: np.ndarray, closes: np.ndarray, tick: np.ndarray) -> None:
    """The interval in the name must be the data's: each candle closes one interval after it opens
    (close_time is the candle's last tick), and candles are whole intervals apart."""
    step = file.step.value
    lengths = closes - opens + tick
    gaps = np.diff(np.unique(opens))
    wrong = lengths != step
    if wrong.any() or (gaps % step).any():
        seen = pd.Timedelta(int(lengths[wrong][0]) if wrong.any() else int(gaps[(gaps % step) != 0][0]))
        raise MarketDataError(
            f"{file.path}: the name says {file.interval} candles but the data's are {interval_name(seen)} long "
            "(or apart): rename the file or use the matching interval"
        )


# ---------------------------------------------------------------------------------------------
# Funding rates
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FundingFile:
    """One monthly funding-rate zip of the archive, as its name describes it."""

    path: Path
    symbol: str
    start: pd.Timestamp
    end: pd.Timestamp  # exclusive

    @property
    def asset(self) -> str:
        return self.symbol.removesuffix(QUOTE)


def funding_files(directory: str | Path) -> list[FundingFile]:
    """Every USDT-M funding-rate zip under ``directory`` (nested or flat), by name; none is no error
    (a folder of klines only has no funding data)."""
    files = []
    for path in _zips(directory):
        if not _is_funding(path):
            continue
        match = _FUNDING_NAME.match(path.name.removesuffix(".zip"))
        if not match:
            raise MarketDataError(
                f"{path}: the file name does not parse as a Binance funding file: {FUNDING_NAME_FORMAT}"
            )
        try:
            start = pd.Timestamp(f"{match['year']}-{match['month']}-01", tz="UTC")
        except ValueError:
            raise MarketDataError(f"{path}: {match['year']}-{match['month']} is not a month") from None
        if match["symbol"].endswith(QUOTE) and match["symbol"] != QUOTE:
            files.append(FundingFile(path, match["symbol"], start, start + pd.DateOffset(months=1)))
    return files


def read_archive_funding(
    directory: str | Path,
    universe: list[str] | None,
    delay: pd.Timedelta,
    window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> pd.DataFrame:
    """The funding rates of ``universe`` (every asset of the folder if None or empty) from the archive's
    fundingRate zips, known at calc_time + ``delay``; with ``window`` (start, end), only the settlements
    in [start, end] (the months that overlap it are opened). No such zip: an empty table."""
    files = funding_files(directory)
    if universe:
        files = [file for file in files if file.asset in set(universe)]
    if window is not None:
        files = [file for file in files if file.start <= window[1] and file.end > window[0]]
    frames = []
    for file in files:
        verify_checksum(file.path)
        frames.append(read_funding_zip(file, delay))
    if not frames:
        return empty_funding()
    funding = pd.concat(frames, ignore_index=True)
    if window is not None:
        funding = funding[(funding["funding_time"] >= window[0]) & (funding["funding_time"] <= window[1])]
    return normalize_funding(funding, f"{directory}")


def read_funding_zip(file: FundingFile, delay: pd.Timedelta) -> pd.DataFrame:
    """The settlements of one funding zip: header checked, every value a number, every time inside the
    month its name says; a bad one is a ``MarketDataError`` naming the file and the line."""
    path = file.path
    text = zip_csv(path).decode("utf-8", errors="replace")
    lines = text.splitlines()
    header = bool(lines) and not lines[0][:1].isdigit()
    if header and lines[0].strip().replace(" ", "") != FUNDING_HEADER:
        raise MarketDataError(f"{path}: header {lines[0].strip()!r}, a funding file has {FUNDING_HEADER!r}")
    rows = [line for line in lines[int(header) :] if line.strip()]
    times, rates = [], []
    for number, line in enumerate(rows, start=1 + int(header)):
        fields = line.split(",")
        try:
            if len(fields) != 3:
                raise ValueError(f"{len(fields)} fields, not 3")
            calc_ms, rate = int(fields[0]), float(fields[2])
            when = pd.Timestamp(calc_ms, unit="ms", tz="UTC")
        except (ValueError, OverflowError) as error:
            raise MarketDataError(f"{path}: line {number} {line.strip()!r} is not a funding row ({error})") from None
        if not file.start <= when < file.end:
            raise MarketDataError(
                f"{path}: line {number} settles at {when}, outside the month its name says ({file.start:%Y-%m})"
            )
        times.append(when)
        rates.append(rate)
    if not times:
        return empty_funding()
    settled = pd.DatetimeIndex(times)
    frame = pd.DataFrame(
        {"asset": file.asset, "funding_time": settled, "rate": rates, "knowledge_ts": known_after(settled, delay)}
    )
    return normalize_funding(frame, str(path))
