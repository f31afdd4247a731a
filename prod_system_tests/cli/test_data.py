"""``dump-market-data``: strict snapshots (a candle the data guard would drop refuses the dump, or is
left out and listed with --drop-bad) and candle intervals (5-minute files dump as 5-minute candles)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prod_system.data.market_data import (
    MONTH_PART,
    PART_FILE,
    CandleStore,
    read_snapshot,
    with_knowledge_time,
    write_snapshot,
    write_snapshot_months,
)
from prod_system.data.sources import load_source
from prod_system.errors import MarketDataError
from prod_system_tests.kit.cli import cli
from prod_system_tests.kit.data import BUNDLED, aggregate_klines, bundled_klines, write_klines

DAY = ["--start", "2023-07-19T00:00:00Z", "--end", "2023-07-20T00:00:00Z"]
DELAY = pd.Timedelta(seconds=10)


def bad_eth() -> pd.DataFrame:
    """ETH's candles of 2023-07-19 with 60 negative lows, a NaN close and a high below its low."""
    eth = bundled_klines("ETH")
    eth.loc[100:159, "low"] = -eth.loc[100:159, "low"]
    eth.loc[200, "close"] = np.nan
    eth.loc[300, ["high", "low"]] = eth.loc[300, ["low", "high"]].to_numpy()
    return eth


@pytest.fixture
def bad_dir(tmp_path):
    return write_klines(tmp_path / "bad", {"BTC": bundled_klines("BTC"), "ETH": bad_eth()})


def _errors(done) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error: ")]


def test_bad_candles_refuse_the_dump_with_one_line(tmp_path, bad_dir):
    out = tmp_path / "out" / "x.parquet"
    done = cli("dump-market-data", "--source", f"csv:{bad_dir}", "--universe", "BTC,ETH", *DAY, "--out", str(out))
    assert done.returncode == 2, done.stderr
    (error,) = _errors(done)
    assert f"62 candles the data guard would drop (62 invalid_price; ETH_USDT.csv.gz 62) in csv:{bad_dir}" in error
    assert "--drop-bad" in done.stderr.splitlines()[-1]
    assert not out.parent.exists() or not any(out.parent.iterdir())  # nothing written


def test_drop_bad_writes_the_rest_and_lists_the_dropped(tmp_path, bad_dir):
    out = tmp_path / "x.parquet"
    done = cli(
        "dump-market-data", "--source", f"csv:{bad_dir}", "--universe", "BTC,ETH", *DAY, "--out", str(out), "--drop-bad"
    )
    assert done.returncode == 0, done.stderr
    assert (
        "left out 62 candles the data guard would drop" in done.stderr
        and str(tmp_path / "x.dropped.csv") in done.stderr
    )
    assert "wrote 2,818 candles" in done.stdout
    snapshot = read_snapshot(out)
    assert len(snapshot) == 2 * 1440 - 62
    store = CandleStore(snapshot, ["BTC", "ETH"])
    assert store.anomalies.empty  # a strict snapshot holds nothing the guard would drop
    report = pd.read_csv(tmp_path / "x.dropped.csv")
    assert list(report.columns) == ["asset", "bar_start", "bar_end", "issue", "detail"]
    assert len(report) == 62 and set(report["asset"]) == {"ETH"} and set(report["issue"]) == {"invalid_price"}
    eth = bad_eth().iloc[[*range(100, 160), 200, 300]]
    assert sorted(pd.to_datetime(report["bar_start"], utc=True)) == sorted(eth["open_time"])
    # a clean dump with --drop-bad replaces the report by an empty one: no stale list beside the snapshot
    done = cli("dump-market-data", "--universe", "BTC", *DAY, "--out", str(out), "--drop-bad")
    assert done.returncode == 0, done.stderr
    assert pd.read_csv(tmp_path / "x.dropped.csv").empty


def test_conflicting_duplicates_refuse_the_dump(tmp_path):
    candles = load_source(f"csv:{BUNDLED}", ["BTC"], DELAY).head(100)
    conflicting = candles.iloc[[10]].assign(close=candles["close"].iloc[10] * 1.001)
    identical = candles.iloc[[20]]
    raw = tmp_path / "raw.parquet"
    pd.concat([candles, conflicting, identical], ignore_index=True).to_parquet(raw)  # written by someone else
    args = ["dump-market-data", "--source", f"parquet:{raw}", "--universe", "BTC", "--start", "2023-07-19T00:00:00Z"]
    done = cli(*args, "--end", "2023-07-19T02:00:00Z", "--out", str(tmp_path / "x.parquet"))
    assert done.returncode == 2 and "1 candles the data guard would drop (1 duplicate; BTC 1)" in _errors(done)[0]
    done = cli(*args, "--end", "2023-07-19T02:00:00Z", "--out", str(tmp_path / "x.parquet"), "--drop-bad")
    assert done.returncode == 0, done.stderr
    assert len(read_snapshot(tmp_path / "x.parquet")) == 99  # the identical copy kept once, the conflict out
    assert pd.read_csv(tmp_path / "x.dropped.csv")["detail"].tolist() == ["rows disagree on prices"]


def test_5m_files_dump_as_5m_candles(tmp_path):
    folder = write_klines(tmp_path / "k5", {"BTC": aggregate_klines(bundled_klines("BTC"), "5min")})
    done = cli(
        "dump-market-data", "--source", f"csv:{folder}", "--universe", "BTC", *DAY, "--out", str(tmp_path / "x.parquet")
    )
    assert done.returncode == 0, done.stderr
    assert "wrote 288 candles" in done.stdout and "to 2023-07-20 00:00:00" in done.stdout
    snapshot = read_snapshot(tmp_path / "x.parquet")
    assert (snapshot["bar_end"] - snapshot["bar_start"] == pd.Timedelta(minutes=5)).all()
    assert (snapshot["knowledge_ts"] == snapshot["bar_start"] + pd.Timedelta(minutes=5) + DELAY).all()


def _month_of(candles: pd.DataFrame, shift: pd.Timedelta) -> pd.DataFrame:
    return candles.assign(**{c: candles[c] + shift for c in ("bar_start", "bar_end", "knowledge_ts")})


def test_a_snapshot_of_several_months_has_one_interval(tmp_path):
    july = load_source(f"csv:{BUNDLED}", ["BTC"], DELAY)
    five = aggregate_klines(bundled_klines("BTC"), "5min").rename(columns={"open_time": "bar_start"})
    five = with_knowledge_time(five.assign(asset="BTC", bar_end=five["bar_start"] + pd.Timedelta(minutes=5)), DELAY)
    august = _month_of(five, pd.Timedelta(days=31))
    with pytest.raises(MarketDataError, match=r"mixed candle intervals: BTC 1m .* BTC 5m"):
        write_snapshot_months([july, august], tmp_path / "mixed.parquet")
    assert not (tmp_path / "mixed.parquet").exists()
    # a partitioned source whose months differ (made by hand): the dump refuses it with the source named
    source = tmp_path / "source.parquet"
    write_snapshot(july, source / f"{MONTH_PART}2023-07" / PART_FILE)
    write_snapshot(august, source / f"{MONTH_PART}2023-08" / PART_FILE)
    done = cli(
        "dump-market-data", "--source", f"parquet:{source}", "--universe", "BTC", "--start", "2023-07-19T00:00:00Z",
        "--end", "2023-08-28T00:00:00Z", "--out", str(tmp_path / "x.parquet"),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "mixed candle intervals" in _errors(done)[0] and str(source) in _errors(done)[0]
    assert not (tmp_path / "x.parquet").exists()
