"""Market data: the visibility rule, snapshots, and bad files."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from prod_system.common.clock import SimulatedClock
from prod_system.data.market_data import (
    CandleStore,
    MarketDataReader,
    read_snapshot,
    read_snapshot_metadata,
    snapshot_parts,
    write_snapshot,
    write_snapshot_months,
)
from prod_system.data.sources import load_source
from prod_system.errors import MarketDataError

T0 = pd.Timestamp("2023-07-21T00:00:00Z")


def test_snapshot_schema(candles, snapshot):
    frame = read_snapshot(snapshot)
    assert list(frame.columns) == [
        "asset",
        "bar_start",
        "bar_end",
        "knowledge_ts",
        "open",
        "high",
        "low",
        "close",
        "volume",
    ]
    assert (frame["knowledge_ts"] - frame["bar_end"] == pd.Timedelta(seconds=10)).all()
    assert frame.groupby("asset").size().eq(3 * 1440).all()  # three full days, no gaps
    assert str(frame["bar_end"].dt.tz) == "UTC"


def test_only_known_rows_are_visible(candles):
    store = CandleStore(candles, ["BTC", "ETH"])
    clock = SimulatedClock(T0 + pd.Timedelta(seconds=9))
    reader = MarketDataReader(store, clock)
    window = reader.read(pd.Timedelta(minutes=5))
    # the candle closing at T0 is known at T0 + 10 s, not before
    assert window.index[-1] == T0 and np.isnan(window.fields["close"][-1]).all()
    clock.wait_until(T0 + pd.Timedelta(seconds=10))
    window = reader.read(pd.Timedelta(minutes=5))
    expected = candles[(candles["bar_end"] == T0) & (candles["asset"] == "BTC")]["close"].item()
    assert window.fields["close"][-1, 0] == expected
    assert window.index.max() <= clock.now()


def test_late_candle_is_hidden_until_known(candles):
    late = candles.copy()
    mask = (late["asset"] == "ETH") & (late["bar_end"] == T0)
    late.loc[mask, "knowledge_ts"] = T0 + pd.Timedelta(minutes=3)
    store = CandleStore(late, ["BTC", "ETH"])
    seen = store.visible(T0 + pd.Timedelta(minutes=1), T0 - pd.Timedelta(minutes=1))
    assert np.isnan(seen.fields["close"][0, 1]) and np.isfinite(seen.fields["close"][0, 0])
    seen = store.visible(T0 + pd.Timedelta(minutes=3), T0 - pd.Timedelta(minutes=1))
    assert np.isfinite(seen.fields["close"][0, 1])


def test_clock_never_goes_back():
    clock = SimulatedClock(T0)
    with pytest.raises(ValueError, match="cannot go back"):
        clock.wait_until(T0 - pd.Timedelta(seconds=1))


def test_bad_inputs_are_refused(tmp_path, candles):
    early = candles.head(10).copy()
    early["knowledge_ts"] = early["bar_start"]
    with pytest.raises(MarketDataError, match="known before they close"):
        write_snapshot(early, tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()
    dup = pd.concat([candles.head(3), candles.head(1)])
    with pytest.raises(MarketDataError, match="duplicate candles"):  # writing a snapshot is strict
        write_snapshot(dup, tmp_path / "dup.parquet")
    # reading screens: one copy kept, reported (test_data_guard.py covers the rest)
    (row,) = CandleStore(dup, sorted(set(dup["asset"]))).anomalies.itertuples()
    assert (row.asset, row.issue, row.action) == (candles["asset"].iloc[0], "duplicate", "kept one copy")
    with pytest.raises(MarketDataError, match="not found"):
        read_snapshot(tmp_path / "missing.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(MarketDataError, match="cannot read"):
        read_snapshot(tmp_path / "junk.parquet")
    folder = tmp_path / "csv"
    folder.mkdir()
    with gzip.open(folder / "BTC_USDT.csv.gz", "wt") as handle:
        handle.write("time,price\n1,2\n")
    with pytest.raises(MarketDataError, match="lacks columns"):
        load_source(f"csv:{folder}", ["BTC"], pd.Timedelta(seconds=10))
    with pytest.raises(MarketDataError, match="no candles for ETH"):
        load_source(f"csv:{folder}", ["ETH"], pd.Timedelta(seconds=10))
    with pytest.raises(MarketDataError, match="unknown market data source"):
        load_source("ftp://x", ["BTC"], pd.Timedelta(seconds=10))


def test_real_clock_waits_until_a_time():
    import time

    from prod_system.common.clock import RealClock

    clock = RealClock()
    target = clock.now() + pd.Timedelta(milliseconds=150)
    began = time.perf_counter()
    clock.wait_until(target)
    assert clock.now() >= target and time.perf_counter() - began >= 0.14
    clock.wait_until(target - pd.Timedelta(seconds=5))  # a time already passed returns at once


def test_reading_a_missing_sqlite_database_creates_nothing(tmp_path):
    missing = tmp_path / "market.db"
    with pytest.raises(MarketDataError, match="does not exist"):
        load_source(f"sqlite:///{missing}", ["BTC"], pd.Timedelta(seconds=10))
    assert not missing.exists()


def across_months(candles: pd.DataFrame) -> pd.DataFrame:
    """The candles dated 10 days later: 2023-07-30 to 2023-08-02, across a month's end."""
    moved = candles.copy()
    for column in ("bar_start", "bar_end", "knowledge_ts"):
        moved[column] = moved[column] + pd.Timedelta(days=10)
    return moved


def test_a_snapshot_over_several_months_is_one_file_per_month_read_by_window(tmp_path, candles):
    moved = across_months(candles)
    path = write_snapshot(moved, tmp_path / "long.parquet", metadata={"instruments": "{}"})
    assert list(snapshot_parts(path)) == ["2023-07", "2023-08"] and path.is_dir()
    assert read_snapshot_metadata(path) == {"instruments": "{}"}  # every month carries it
    pd.testing.assert_frame_equal(read_snapshot(path), read_snapshot(write_snapshot(moved, tmp_path / "one.parquet")))
    august = pd.Timestamp("2023-08-01", tz="UTC")
    whole = read_snapshot(path)
    for start, end in [
        (august, august + pd.Timedelta(hours=6)),
        (august - pd.Timedelta(hours=1), august + pd.Timedelta(hours=1)),
    ]:
        got = read_snapshot(path, (start, end))
        expected = whole[(whole["bar_start"] >= start) & (whole["bar_start"] < end)].reset_index(drop=True)
        assert len(got) == len(moved[(moved["bar_start"] >= start) & (moved["bar_start"] < end)]) > 0
        pd.testing.assert_frame_equal(got, expected)
    # a window's months alone are opened: July's file broken, August's window still reads
    (path / "month=2023-07" / "part.parquet").write_text("not parquet")
    assert len(read_snapshot(path, (august, august + pd.Timedelta(days=1)))) == 1440 * 8
    with pytest.raises(MarketDataError, match="cannot read market data snapshot"):
        read_snapshot(path)


def test_a_partitioned_snapshot_is_written_whole_or_not_at_all(tmp_path, candles):
    moved = across_months(candles)
    path = write_snapshot(moved.head(100), tmp_path / "snap.parquet")  # what was there before
    august = moved[moved["bar_start"] >= pd.Timestamp("2023-08-01", tz="UTC")]
    bad = august.copy()
    bad["knowledge_ts"] = bad["bar_start"]  # August's candles known before they close: refused

    def months():
        yield moved[moved["bar_start"] < pd.Timestamp("2023-08-01", tz="UTC")]
        yield bad

    with pytest.raises(MarketDataError, match="known before they close"):
        write_snapshot_months(months(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap.parquet"] and path.is_file()
    assert len(read_snapshot(path)) == 100  # July was written, then thrown away with the rest
    write_snapshot_months([moved], path)  # a folder over the file, and a file over the folder
    assert list(snapshot_parts(path)) == ["2023-07", "2023-08"]
    write_snapshot(moved.head(100), path)
    assert path.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["snap.parquet"]
    (tmp_path / "folder").mkdir()
    with pytest.raises(MarketDataError, match="not a snapshot partitioned by month"):
        read_snapshot(tmp_path / "folder")
    (tmp_path / "folder" / "mine.txt").write_text("a user's folder")
    for write in (write_snapshot, lambda frame, path: write_snapshot_months([frame], path)):
        with pytest.raises(MarketDataError, match="is a folder but not a snapshot"):
            write(moved, tmp_path / "folder")
    assert [p.name for p in (tmp_path / "folder").iterdir()] == ["mine.txt"]
