"""Market data: the visibility rule, snapshots, and bad files."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from prod_system.common.clock import SimulatedClock
from prod_system.data.market_data import CandleStore, MarketDataReader, read_snapshot, write_snapshot
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
