"""Binance public-data archive files as the archive publishes them (data.binance.vision): a zip per
symbol, interval and month or day holding one 12-column kline CSV, and a sha256sum ``.CHECKSUM``
beside it. For the archive reader's tests and the snapshot benchmark."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"
)
TICKS = {"ms": 1_000_000, "us": 1_000}  # nanoseconds per tick of each time unit


def kline_csv(candles: pd.DataFrame, interval: pd.Timedelta, unit: str = "ms", header: bool = True) -> str:
    """The CSV text of ``candles`` (bar_start, open, high, low, close, volume) in the archive's format:
    times in ``unit`` since the epoch, close_time the candle's last tick, the other volumes made up."""
    tick = TICKS[unit]
    opens = pd.to_datetime(candles["bar_start"], utc=True).dt.as_unit("ns").astype("int64").to_numpy() // tick
    closes = opens + interval.value // tick - 1
    volume = candles["volume"].to_numpy(dtype=float)
    quote = volume * candles["close"].to_numpy(dtype=float)
    table = pd.DataFrame(
        {
            "open_time": opens,
            "open": candles["open"].to_numpy(),
            "high": candles["high"].to_numpy(),
            "low": candles["low"].to_numpy(),
            "close": candles["close"].to_numpy(),
            "volume": volume,
            "close_time": closes,
            "quote_volume": quote,
            "count": np.arange(len(candles)) % 97 + 1,
            "taker_buy_volume": volume / 2,
            "taker_buy_quote_volume": quote / 2,
            "ignore": 0,
        }
    )
    buffer = io.BytesIO()  # Arrow's writer: ten times pandas' speed, for the benchmark's 26M rows
    pa_csv.write_csv(
        pa.Table.from_pandas(table, preserve_index=False), buffer, pa_csv.WriteOptions(include_header=False)
    )
    return (HEADER + "\n" if header else "") + buffer.getvalue().decode()


def archive_path(root: Path, symbol: str, interval: str, period: str, nested: bool = True) -> Path:
    """Where the archive keeps a file (``period`` YYYY-MM: monthly, YYYY-MM-DD: daily), or ``root/name``."""
    name = f"{symbol}-{interval}-{period}.zip"
    if not nested:
        return root / name
    cadence = "daily" if len(period) == 10 else "monthly"
    return root / "data" / "futures" / "um" / cadence / "klines" / symbol / interval / name


def write_zip(path: Path, text: str, checksum: bool = True) -> Path:
    """``text`` as the one CSV of the zip at ``path`` (named like the zip), with its ``.CHECKSUM``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(path.name.removesuffix(".zip") + ".csv", text)
    if checksum:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        path.with_name(path.name + ".CHECKSUM").write_text(f"{digest}  {path.name}\n")
    return path


def write_klines(
    root: Path,
    symbol: str,
    interval: str,
    period: str,
    candles: pd.DataFrame,
    unit: str = "ms",
    header: bool = True,
    nested: bool = True,
    checksum: bool = True,
) -> Path:
    """One archive file of ``candles`` for ``symbol`` over ``period``, as the archive publishes it."""
    text = kline_csv(candles, pd.Timedelta(interval.replace("m", "min")), unit, header)
    return write_zip(archive_path(root, symbol, interval, period, nested), text, checksum)


def write_funding(
    root: Path, symbol: str, month: str, settlements: pd.DataFrame, nested: bool = True, checksum: bool = True
) -> Path:
    """One monthly fundingRate zip of ``settlements`` (funding_time, rate) for ``symbol``, as the
    archive publishes it: header ``calc_time,funding_interval_hours,last_funding_rate``, times in ms."""
    times = pd.to_datetime(settlements["funding_time"], utc=True).dt.as_unit("ns").astype("int64") // 1_000_000
    lines = [f"{ms},8,{rate!r}" for ms, rate in zip(times, settlements["rate"].astype(float), strict=True)]
    text = "calc_time,funding_interval_hours,last_funding_rate\n" + "".join(line + "\n" for line in lines)
    name = f"{symbol}-fundingRate-{month}.zip"
    folder = root / "data" / "futures" / "um" / "monthly" / "fundingRate" / symbol if nested else root
    return write_zip(folder / name, text, checksum)


def hour_of_candles(start: str = "2023-07-21T00:00:00Z", minutes: int = 60, step: str = "1min") -> pd.DataFrame:
    """``minutes`` made-up candles of one step from ``start`` (prices near 30000, all valid)."""
    opens = pd.date_range(start, periods=minutes, freq=step)
    close = 30_000 + np.arange(minutes, dtype=float)
    return pd.DataFrame(
        {"bar_start": opens, "open": close - 0.5, "high": close + 1, "low": close - 1, "close": close, "volume": 2.5}
    )


def write_bad_archives(root: Path) -> None:
    """One archive folder per way a download goes wrong, each holding BTCUSDT around 2023-07-21 00:00
    (the bad-input table's dump windows): ``arch-corrupt`` (a zip cut short), ``arch-checksum`` (a zip
    its .CHECKSUM does not match), ``arch-11-columns``, ``arch-bad-name`` (a zip whose name does not
    parse), ``arch-empty`` (no zip at all), ``arch-interval`` (5-minute candles in a file named 1m),
    ``arch-late-corrupt`` (July whole, August's file cut short: fails after July is written); and
    ``notes.parquet``, a folder of the user's that no snapshot may replace."""
    (root / "notes.parquet").mkdir()
    (root / "notes.parquet" / "mine.txt").write_text("not a snapshot\n")
    candles = hour_of_candles()
    good = kline_csv(candles, pd.Timedelta(minutes=1))
    cut = write_zip(archive_path(root / "arch-corrupt", "BTCUSDT", "1m", "2023-07"), good, checksum=False)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    wrong = write_zip(archive_path(root / "arch-checksum", "BTCUSDT", "1m", "2023-07"), good)
    wrong.with_name(wrong.name + ".CHECKSUM").write_text(f"{'0' * 64}  {wrong.name}\n")
    eleven = "\n".join(",".join(line.split(",")[:11]) for line in good.splitlines()) + "\n"
    write_zip(archive_path(root / "arch-11-columns", "BTCUSDT", "1m", "2023-07"), eleven)
    write_zip(root / "arch-bad-name" / "BTCUSDT_1m_2023-07.zip", good)
    (root / "arch-empty").mkdir()
    five = kline_csv(hour_of_candles(step="5min", minutes=12), pd.Timedelta(minutes=5))
    write_zip(archive_path(root / "arch-interval", "BTCUSDT", "1m", "2023-07"), five)
    write_zip(archive_path(root / "arch-late-corrupt", "BTCUSDT", "1m", "2023-07"), good)
    august = kline_csv(hour_of_candles("2023-08-01T00:00:00Z"), pd.Timedelta(minutes=1))
    late = write_zip(archive_path(root / "arch-late-corrupt", "BTCUSDT", "1m", "2023-08"), august, checksum=False)
    late.write_bytes(late.read_bytes()[:100])
