"""Binance's public data archive as users download it: zips of monthly and daily klines, with and
without the header row, in milliseconds and microseconds, nested or flat, checksummed; dumped by the
CLI into a snapshot holding exactly the archive's candles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prod_system.data.binance_archive import read_archive
from prod_system.data.market_data import FIELDS, CandleStore, read_snapshot, snapshot_parts
from prod_system.data.sources import load_source
from prod_system.errors import MarketDataError
from prod_system_tests.kit.archive import write_klines
from prod_system_tests.kit.cli import cli

SHIFT = pd.Timedelta(days=10)  # the bundled candles (2023-07-20 to 07-23) moved across a month's end
DELAY = pd.Timedelta(seconds=10)
AUGUST = pd.Timestamp("2023-08-01", tz="UTC")


@pytest.fixture(scope="module")
def source(candles) -> pd.DataFrame:
    """BTC, ETH and SOL from 2023-07-30 to 2023-08-02: real candles, dated across July's end."""
    frame = candles[candles["asset"].isin(["BTC", "ETH", "SOL"])].copy()
    for column in ("bar_start", "bar_end", "knowledge_ts"):
        frame[column] = frame[column] + SHIFT
    return frame.sort_values(["asset", "bar_start"], ignore_index=True)


def build_archive(root: Path, source: pd.DataFrame) -> Path:
    """The archive as downloaded, every variant at once: BTC nested, July monthly (old style: no header,
    ms) and August daily (new style: header, µs), plus a daily file of July 31 repeating the monthly's
    rows; ETH flat, monthly files without checksums; SOL nested monthly, header and ms; and files that
    are not ours (a USDC symbol, checksums of other files)."""
    rows = {asset: frame for asset, frame in source.groupby("asset")}
    july = {asset: frame[frame["bar_start"] < AUGUST] for asset, frame in rows.items()}
    august = {asset: frame[frame["bar_start"] >= AUGUST] for asset, frame in rows.items()}
    write_klines(root, "BTCUSDT", "1m", "2023-07", july["BTC"], unit="ms", header=False)
    for day, frame in august["BTC"].groupby(august["BTC"]["bar_start"].dt.strftime("%Y-%m-%d")):
        write_klines(root, "BTCUSDT", "1m", day, frame, unit="us", header=True)
    last_day = july["BTC"][july["BTC"]["bar_start"] >= AUGUST - pd.Timedelta(days=1)]
    write_klines(root, "BTCUSDT", "1m", "2023-07-31", last_day, unit="ms", header=True)
    write_klines(root, "ETHUSDT", "1m", "2023-07", july["ETH"], unit="ms", nested=False, checksum=False)
    write_klines(root, "ETHUSDT", "1m", "2023-08", august["ETH"], unit="us", nested=False, checksum=False)
    write_klines(root, "SOLUSDT", "1m", "2023-07", july["SOL"], header=True)
    write_klines(root, "SOLUSDT", "1m", "2023-08", august["SOL"], header=True)
    write_klines(root, "BTCUSDC", "1m", "2023-07", july["BTC"], nested=False)  # not a USDT symbol: not read
    return root


def dump(archive: Path, out: Path, start: str, end: str, *extra: str):
    window = ["--start", start, "--end", end, "--universe", "BTC,ETH,SOL"]
    return cli("dump-market-data", "--source", f"binance-archive:{archive}", *window, "--out", str(out), *extra)


def same_candles(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    columns = ["asset", "bar_start", "bar_end", "knowledge_ts", *FIELDS]
    got = got[columns].sort_values(["asset", "bar_start"], ignore_index=True)
    expected = expected[columns].sort_values(["asset", "bar_start"], ignore_index=True)
    pd.testing.assert_frame_equal(got.astype({"asset": str}), expected.astype({"asset": str}), check_dtype=False)


def test_an_archive_as_downloaded_dumps_exactly_its_candles(tmp_path, source):
    archive = build_archive(tmp_path / "archive", source)
    start, end = "2023-07-30T00:00:00Z", "2023-08-02T00:00:00Z"
    done = dump(archive, tmp_path / "long.parquet", start, end)
    assert done.returncode == 0, done.stderr
    assert f"wrote {3 * 3 * 1440:,} candles of 3 assets" in done.stdout
    assert "2/2 months" in done.stderr  # read and written one month at a time
    # a window over two months: a snapshot partitioned by month, holding every candle once, as the files say
    assert list(snapshot_parts(tmp_path / "long.parquet")) == ["2023-07", "2023-08"]
    same_candles(read_snapshot(tmp_path / "long.parquet"), source)
    # a window inside one month: one file
    done = dump(archive, tmp_path / "august.parquet", "2023-08-01T00:00:00Z", end)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "august.parquet").is_file()
    same_candles(read_snapshot(tmp_path / "august.parquet"), source[source["bar_start"] >= AUGUST])


def test_only_the_files_of_the_window_are_opened(tmp_path, source):
    archive = build_archive(tmp_path / "archive", source)
    broken = next(archive.rglob("BTCUSDT-1m-2023-07.zip"))
    broken.write_bytes(b"not a zip")  # July's file is never opened for an August window
    window = (AUGUST, AUGUST + pd.Timedelta(hours=1))
    candles = read_archive(archive, ["BTC"], window)
    assert len(candles) == 60 and candles["bar_start"].min() == AUGUST
    with pytest.raises(MarketDataError, match=r"BTCUSDT-1m-2023-07\.zip: its sha256 does not match"):
        read_archive(archive, ["BTC"])


def test_times_in_microseconds_read_as_in_milliseconds(tmp_path, source):
    day = source[(source["asset"] == "BTC") & (source["bar_start"] >= AUGUST)]
    for unit in ("ms", "us"):
        write_klines(
            tmp_path / unit,
            "BTCUSDT",
            "1m",
            "2023-08-01",
            day[day["bar_start"] < AUGUST + pd.Timedelta(days=1)],
            unit=unit,
        )
    ms, us = (read_archive(tmp_path / unit, ["BTC"]) for unit in ("ms", "us"))
    pd.testing.assert_frame_equal(ms, us)
    assert ms["bar_start"].iloc[0] == AUGUST and ms["bar_end"].iloc[0] == AUGUST + pd.Timedelta(minutes=1)


def test_every_asset_of_the_folder_for_an_empty_universe(tmp_path, source):
    archive = build_archive(tmp_path / "archive", source)
    candles = load_source(f"binance-archive:{archive}", [], DELAY)
    assert sorted(set(candles["asset"])) == ["BTC", "ETH", "SOL"]  # BTCUSDC is not a USDT-M kline of ours
    # July 31 comes in two files (the month's and the day's): one candle each, nothing for the guard to report
    assert not candles.duplicated(["asset", "bar_start"]).any() and len(candles) == 3 * 3 * 1440
    assert CandleStore(candles, ["BTC", "ETH", "SOL"]).anomalies.empty
    with pytest.raises(MarketDataError, match="no candles for DOGE: no DOGEUSDT-"):
        load_source(f"binance-archive:{archive}", ["DOGE"], DELAY)


def test_conflicting_copies_are_left_to_the_data_guard_and_refuse_a_strict_dump(tmp_path, source):
    archive = build_archive(tmp_path / "archive", source)
    btc = source[(source["asset"] == "BTC") & (source["bar_start"] >= AUGUST)]
    btc = btc[btc["bar_start"] < AUGUST + pd.Timedelta(days=1)].copy()
    btc.loc[btc.index[5], "close"] = btc["close"].iloc[5] * 1.01
    monthly = source[(source["asset"] == "BTC") & (source["bar_start"] >= AUGUST)]
    write_klines(archive, "BTCUSDT", "1m", "2023-08", monthly)  # August whole, beside its daily files
    write_klines(archive, "BTCUSDT", "1m", "2023-08-01", btc, unit="us")  # the daily file, one close changed
    candles = load_source(f"binance-archive:{archive}", ["BTC"], DELAY)
    (row,) = CandleStore(candles, ["BTC"]).anomalies.itertuples()
    assert (row.issue, row.action, row.bar_end) == ("duplicate", "dropped", btc["bar_end"].iloc[5])
    done = dump(archive, tmp_path / "x.parquet", "2023-08-01T00:00:00Z", "2023-08-02T00:00:00Z")
    assert done.returncode == 2 and "1 candles the data guard would drop (1 duplicate" in done.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_five_minute_archive_files(tmp_path, source):
    """The interval comes from the file names; the candles end one interval after they open."""
    btc = source[source["asset"] == "BTC"].set_index("bar_start")
    five = btc.resample("5min").agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    five = five.reset_index()
    for period, rows in five.groupby(five["bar_start"].dt.strftime("%Y-%m")):
        write_klines(tmp_path / "archive", "BTCUSDT", "5m", period, rows, unit="us" if period == "2023-08" else "ms")
    out = tmp_path / "five.parquet"
    done = cli(
        "dump-market-data", "--source", f"binance-archive:{tmp_path / 'archive'}", "--universe", "BTC",
        "--start", "2023-07-30T00:00:00Z", "--end", "2023-08-02T00:00:00Z", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    snapshot = read_snapshot(out).sort_values("bar_start", ignore_index=True)
    assert len(snapshot) == 3 * 288
    assert (snapshot["bar_end"] - snapshot["bar_start"] == pd.Timedelta(minutes=5)).all()
    assert (snapshot["knowledge_ts"] == snapshot["bar_end"] + DELAY).all()
    np.testing.assert_array_equal(snapshot["close"].to_numpy(), five["close"].to_numpy())
    np.testing.assert_array_equal(snapshot["high"].to_numpy(), five["high"].to_numpy())
