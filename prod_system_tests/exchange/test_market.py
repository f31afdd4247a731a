"""The local exchange's market: the sources it replays (load_candles), 1-minute candles only (its klines,
and the live ingestion reading them, are made of them: a 5-minute candle served as one would be known
4 minutes early)."""

from __future__ import annotations

import pandas as pd
import pytest

from prod_system.data.market_data import with_knowledge_time, write_snapshot
from prod_system.errors import MarketDataError
from prod_system.exchange.market import MarketReplay, ReplayClock, load_candles
from prod_system_tests.kit.archive import write_klines
from prod_system_tests.kit.data import aggregate_klines, bundled_klines


def test_the_exchange_replays_a_partitioned_snapshot_and_the_archive(tmp_path, candles):
    moved = candles.copy()
    for column in ("bar_start", "bar_end", "knowledge_ts"):
        moved[column] = moved[column] + pd.Timedelta(days=10)  # across July's end: a folder of two months
    folder = write_snapshot(moved, tmp_path / "months.parquet")
    one = load_candles(write_snapshot(moved[moved["bar_start"].dt.month == 8], tmp_path / "august.parquet"))
    for source in (folder, f"parquet:{folder}"):
        replayed = load_candles(source)
        assert len(replayed) == len(moved) and sorted(set(replayed["asset"])) == sorted(set(moved["asset"]))
    assert len(one) == (moved["bar_start"].dt.month == 8).sum()
    for asset in ("BTC", "ETH"):
        rows = moved[moved["asset"] == asset]
        write_klines(tmp_path / "archive", f"{asset}USDT", "1m", "2023-08", rows[rows["bar_start"].dt.month == 8])
    archive = load_candles(f"binance-archive:{tmp_path / 'archive'}")  # every asset of the folder
    assert sorted(set(archive["asset"])) == ["BTC", "ETH"] and len(archive) == 2 * 1440  # August 1st


def test_a_snapshot_of_5m_candles_is_refused():
    five = aggregate_klines(bundled_klines("BTC"), "5min").rename(columns={"open_time": "bar_start"})
    candles = five.assign(asset="BTC", bar_end=five["bar_start"] + pd.Timedelta(minutes=5))
    candles = with_knowledge_time(candles, pd.Timedelta(0))
    clock = ReplayClock.start("original", int(candles["bar_start"].min().value // 1_000_000))
    with pytest.raises(MarketDataError, match="replays 1-minute candles, and the market data's are 5m"):
        MarketReplay(candles, clock)
    one = candles.assign(bar_end=candles["bar_start"] + pd.Timedelta(minutes=1))  # the same rows as 1-minute ones
    assert MarketReplay(with_knowledge_time(one, pd.Timedelta(0)), clock).assets == ["BTC"]
