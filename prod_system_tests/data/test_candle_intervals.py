"""Candle intervals: 5-minute (and other) klines read without look-ahead, and mixed or irregular ones
refused. The 5-minute data is made from the bundled 1-minute candles exactly as Binance makes it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prod_system.common.clock import SimulatedClock
from prod_system.data.market_data import CandleStore, MarketDataReader, read_csv_dir, read_snapshot, write_snapshot
from prod_system.data.sources import load_source
from prod_system.errors import MarketDataError
from prod_system.models.dag import load_model, run_batch
from prod_system.models.features import resample_close
from prod_system_tests.kit.data import BUNDLED, aggregate_klines, bundled_klines, write_klines

ASSETS = ["BTC", "ETH"]
DELAY = pd.Timedelta(seconds=10)
FIVE = pd.Timedelta(minutes=5)
T0 = pd.Timestamp("2023-07-21T00:00:00Z")
NS = pd.Timedelta(1, unit="ns")


@pytest.fixture(scope="module")
def five_minute_dir(tmp_path_factory):
    klines = {asset: aggregate_klines(bundled_klines(asset), "5min") for asset in ASSETS}
    return write_klines(tmp_path_factory.mktemp("klines_5m"), klines)


@pytest.fixture(scope="module")
def five_minute(five_minute_dir) -> pd.DataFrame:
    return load_source(f"csv:{five_minute_dir}", ASSETS, DELAY)


def test_a_5m_file_is_read_as_5m_candles(five_minute):
    assert (five_minute["bar_start"].dt.minute % 5 == 0).all()
    assert (five_minute["bar_end"] - five_minute["bar_start"] == FIVE).all()
    assert (five_minute["knowledge_ts"] == five_minute["bar_end"] + DELAY).all()
    store = CandleStore(five_minute, ASSETS)
    assert store.interval == FIVE and store.index.freq == FIVE


def test_no_reader_sees_a_5m_close_before_its_candle_ends(five_minute):
    """For every candle of two hours: a clock at its open + 5 min + delay - 1 ns does not see its
    close; at open + 5 min + delay it does (the times are computed here from the opens, not read)."""
    store = CandleStore(five_minute, ASSETS)
    window = five_minute[(five_minute["bar_start"] >= T0) & (five_minute["bar_start"] < T0 + pd.Timedelta(hours=2))]
    clock = SimulatedClock(T0)
    reader = MarketDataReader(store, clock)
    checked = 0
    for start, rows in window.groupby("bar_start"):
        known_at = start + FIVE + DELAY
        clock.wait_until(known_at - NS)
        before = reader.read(pd.Timedelta(hours=1))
        assert before.index[-1] <= start + FIVE
        # nothing of the candle shows, on any row (a close dated at open + 1 minute would)
        assert np.isnan(before.field("close")[np.asarray(before.index > start)]).all()
        clock.wait_until(known_at)
        after = reader.read(pd.Timedelta(hours=1))
        assert after.index[-1] == start + FIVE
        for row in rows.itertuples():
            assert after.field("close")[-1, ASSETS.index(row.asset)] == row.close
            checked += 1
    assert checked == 2 * 24


@pytest.mark.parametrize("bar", ["5min", "15min", "1h"])
def test_the_model_sees_the_same_bars_on_5m_candles_as_on_1m(five_minute, bar):
    """A bar's close is the same whether made of 1-minute or 5-minute candles, so is every node of C1b."""
    bar = pd.Timedelta(bar)
    one = CandleStore(load_source(f"csv:{BUNDLED}", ASSETS, DELAY), ASSETS)
    five = CandleStore(five_minute, ASSETS)
    later = pd.Timestamp("2030-01-01", tz="UTC")  # everything known
    since, until = T0 - pd.Timedelta(days=1), T0 + pd.Timedelta(days=1)
    closes = [resample_close(store.visible(later, since, until), bar) for store in (one, five)]
    pd.testing.assert_frame_equal(*closes)
    assert closes[0].notna().all().all() and len(closes[0]) == pd.Timedelta(days=2) // bar
    dag = load_model("C1b", bar)
    bars = pd.date_range(T0 + bar, until, freq=bar)
    outputs = [run_batch(dag, store.visible(later, since, until), bars).node_outputs for store in (one, five)]
    pd.testing.assert_frame_equal(*outputs)
    assert outputs[0]["value"].notna().any()


@pytest.mark.parametrize("interval", ["3min", "15min", "30min", "1h"])
def test_every_interval_that_divides_an_hour_is_read(tmp_path, interval):
    klines = aggregate_klines(bundled_klines("BTC"), interval)
    frame = read_csv_dir(write_klines(tmp_path, {"BTC": klines}), ["BTC"])
    assert (frame["bar_end"] - frame["bar_start"] == pd.Timedelta(interval)).all()


def test_gaps_are_normal(tmp_path):
    klines = aggregate_klines(bundled_klines("BTC"), "5min").drop(index=[3, 4, 10])  # 15 and 10 minutes apart
    frame = read_csv_dir(write_klines(tmp_path, {"BTC": klines}), ["BTC"])
    assert (frame["bar_end"] - frame["bar_start"] == FIVE).all()


def test_mixed_intervals_are_refused(tmp_path):
    folder = write_klines(
        tmp_path, {"BTC": bundled_klines("BTC"), "ETH": aggregate_klines(bundled_klines("ETH"), "5min")}
    )
    with pytest.raises(MarketDataError, match="mixed candle intervals") as caught:
        load_source(f"csv:{folder}", ASSETS, DELAY)
    assert "BTC_USDT.csv.gz is 1m" in str(caught.value) and "ETH_USDT.csv.gz is 5m" in str(caught.value)
    assert str(folder) in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("shift", "message"),
    [
        (lambda opens: opens.iloc[0] + pd.Timedelta(minutes=7) * np.arange(len(opens)), "opens are 7m apart"),
        (lambda opens: opens + pd.Timedelta(minutes=1), "off the 5m grid"),
        (lambda opens: opens.where(opens.index != 5, opens + pd.Timedelta(minutes=2)), "off the 3m grid"),
    ],
    ids=["7-minute-steps", "unaligned-opens", "one-unaligned-open"],
)
def test_irregular_candles_are_refused(tmp_path, shift, message):
    klines = aggregate_klines(bundled_klines("BTC"), "5min")
    klines["open_time"] = shift(klines["open_time"])
    folder = write_klines(tmp_path, {"BTC": klines})
    with pytest.raises(MarketDataError, match="irregular candles") as caught:
        read_csv_dir(folder, ["BTC"])
    assert message in str(caught.value) and "BTC_USDT.csv.gz" in str(caught.value)


def test_an_interval_named_by_the_caller_must_be_the_data_s(five_minute_dir):
    assert (read_csv_dir(five_minute_dir, ASSETS, interval=FIVE)["bar_end"].dt.minute % 5 == 0).all()
    with pytest.raises(MarketDataError, match="5m apart, not 1m"):
        read_csv_dir(five_minute_dir, ASSETS, interval=pd.Timedelta(minutes=1))


def test_a_snapshot_has_one_interval_of_binance_s(tmp_path, five_minute, candles):
    path = write_snapshot(five_minute, tmp_path / "five.parquet")
    assert (read_snapshot(path)["bar_end"] - read_snapshot(path)["bar_start"] == FIVE).all()
    one = candles[candles["asset"] == "BTC"]
    mixed = pd.concat([one, five_minute[five_minute["asset"] == "ETH"]], ignore_index=True)
    with pytest.raises(MarketDataError, match=r"mixed candle intervals: BTC 1m .*, ETH 5m"):
        write_snapshot(mixed, tmp_path / "mixed.parquet")
    mixed.to_parquet(tmp_path / "mixed_raw.parquet")  # written by someone else
    with pytest.raises(MarketDataError, match=f"snapshot {tmp_path / 'mixed_raw.parquet'}: mixed candle intervals"):
        read_snapshot(tmp_path / "mixed_raw.parquet")
    odd = one.assign(bar_end=one["bar_start"] + pd.Timedelta(minutes=2), knowledge_ts=one["bar_start"] + DELAY * 13)
    with pytest.raises(MarketDataError, match=r"candles of 2m .* one of 1m, 3m, 5m, 15m, 30m, 1h"):
        write_snapshot(odd, tmp_path / "odd.parquet")
    late = five_minute.assign(
        bar_start=five_minute["bar_start"] + pd.Timedelta(minutes=1),
        bar_end=five_minute["bar_end"] + pd.Timedelta(minutes=1),
        knowledge_ts=five_minute["knowledge_ts"] + pd.Timedelta(minutes=1),
    )
    with pytest.raises(MarketDataError, match="off the 5m grid"):
        write_snapshot(late, tmp_path / "late.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["five.parquet", "mixed_raw.parquet"]
