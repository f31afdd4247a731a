"""The local exchange's market: the sources it replays (load_candles)."""

from __future__ import annotations

import pandas as pd

from prod_system.data.market_data import write_snapshot
from prod_system.exchange.market import load_candles
from prod_system_tests.kit.archive import write_klines


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
