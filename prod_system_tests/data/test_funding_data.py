"""Funding rates as market data: read from real Binance history (the XRP file of the fixtures) in its
ccxt/freqtrade JSON form and as the public archive's fundingRate zips, dumped into snapshots beside
the candles and read back, never known before their settlement, and refused whole when a file is bad."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from prod_system.data import BUNDLED_CANDLES
from prod_system.data.binance_archive import read_archive, read_archive_funding
from prod_system.data.funding import FUNDING_COLUMNS, normalize_funding
from prod_system.data.funding_files import read_funding_json
from prod_system.data.market_data import read_snapshot, snapshot_parts
from prod_system.data.sources import load_funding
from prod_system.errors import MarketDataError
from prod_system.runs.ingestion import page_funding
from prod_system_tests.kit.archive import write_funding, write_klines
from prod_system_tests.kit.cli import cli

XRP_FILE = Path(__file__).parent / "fixtures" / "XRP_USDT-8h-funding_rate.json"
DELAY = pd.Timedelta(seconds=10)
SHIFT = pd.Timedelta(days=10)  # the bundled candles (2023-07-20 to 07-23) moved across July's end
AUGUST = pd.Timestamp("2023-08-01", tz="UTC")


@pytest.fixture(scope="module")
def xrp() -> pd.DataFrame:
    return read_funding_json(XRP_FILE, DELAY)


def test_the_real_xrp_history_reads_as_settlements_known_after_they_settle(xrp):
    assert len(xrp) == 91 and list(xrp.columns) == FUNDING_COLUMNS
    assert (xrp["asset"] == "XRP").all()
    assert xrp["funding_time"].iloc[0] == pd.Timestamp("2021-11-18 00:00", tz="UTC")
    assert xrp["funding_time"].iloc[-1] == pd.Timestamp("2021-12-18 00:00", tz="UTC")
    assert (xrp["funding_time"].diff().dropna() == pd.Timedelta(hours=8)).all()  # stamped ms after: floored
    low = xrp.loc[xrp["rate"].idxmin()]
    assert low["funding_time"] == pd.Timestamp("2021-12-04 08:00", tz="UTC") and low["rate"] == -0.00219334
    assert xrp["mark_price"].isna().all()
    raw = pd.to_datetime([row[0] for row in json.loads(XRP_FILE.read_text())], unit="ms", utc=True)
    # known the delay after the settlement's minute (the raw stamp is a few ms after it), like a candle
    assert (xrp["knowledge_ts"].to_numpy() == (raw.floor("min") + DELAY).to_numpy()).all()
    assert (xrp["knowledge_ts"] >= xrp["funding_time"]).all()


def test_a_rate_known_before_its_settlement_is_refused(xrp):
    peeking = xrp.assign(knowledge_ts=xrp["funding_time"] - pd.Timedelta(minutes=1))
    with pytest.raises(MarketDataError, match="not known before its settlement"):
        normalize_funding(peeking, "peeking rows")


def test_archive_zips_beside_klines_read_as_the_same_history(tmp_path, xrp, candles):
    """November nested as the archive keeps it, December flat, next to kline zips: the funding reader
    takes the fundingRate zips, the kline reader leaves them alone."""
    root = tmp_path / "archive"
    month = xrp["funding_time"].dt.strftime("%Y-%m")
    raw = pd.DataFrame(json.loads(XRP_FILE.read_text())).rename(columns={0: "ms", 1: "rate"})
    raw["funding_time"] = pd.to_datetime(raw["ms"], unit="ms", utc=True)
    write_funding(root, "XRPUSDT", "2021-11", raw[month == "2021-11"])
    write_funding(root, "XRPUSDT", "2021-12", raw[month == "2021-12"], nested=False)
    btc = candles[candles["asset"] == "BTC"]
    write_klines(root, "BTCUSDT", "1m", "2023-07", btc)
    pd.testing.assert_frame_equal(read_archive_funding(root, None, DELAY), xrp)
    assert set(read_archive(root)["asset"]) == {"BTC"}
    window = (pd.Timestamp("2021-12-04", tz="UTC"), pd.Timestamp("2021-12-05", tz="UTC"))
    got = load_funding(f"binance-archive:{root}", ["XRP"], DELAY, window)  # with a day's look-behind
    assert got["funding_time"].min() == pd.Timestamp("2021-12-03", tz="UTC") and len(got) == 7
    assert load_funding(f"binance-archive:{root}", ["BTC"], DELAY).empty  # klines, no funding: none


def funding_archive(root: Path, candles: pd.DataFrame) -> pd.DataFrame:
    """BTC and ETH klines of 2023-07-30 to 08-02 (the bundled ones, moved) and their funding every 8
    hours from 07-29 on, in monthly zips of July and August; the settlements as read (known + DELAY)."""
    frames = []
    for number, asset in enumerate(["BTC", "ETH"]):
        rows = candles[candles["asset"] == asset].copy()
        rows["bar_start"] += SHIFT
        write_klines(root, f"{asset}USDT", "1m", "2023-07", rows[rows["bar_start"] < AUGUST])
        write_klines(root, f"{asset}USDT", "1m", "2023-08", rows[rows["bar_start"] >= AUGUST])
        times = pd.date_range("2023-07-29", "2023-08-02", freq="8h", tz="UTC") + pd.Timedelta(milliseconds=5)
        settled = pd.DataFrame(
            {"funding_time": times, "rate": [0.0001 * (number + 1) - 0.00003 * i for i in range(13)]}
        )
        write_funding(root, f"{asset}USDT", "2023-07", settled[settled["funding_time"] < AUGUST])
        write_funding(root, f"{asset}USDT", "2023-08", settled[settled["funding_time"] >= AUGUST], nested=False)
        frames.append(settled.assign(asset=asset, knowledge_ts=settled["funding_time"].dt.floor("min") + DELAY))
    return normalize_funding(pd.concat(frames, ignore_index=True))


def dump(source: str, out: Path, start: str, end: str):
    window = ["--start", start, "--end", end, "--universe", "BTC,ETH"]
    return cli("dump-market-data", "--source", source, *window, "--out", str(out))


def settled_in(funding: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    lo, hi = pd.Timestamp(start, tz="UTC") - pd.Timedelta(days=1), pd.Timestamp(end, tz="UTC")
    return funding[(funding["funding_time"] >= lo) & (funding["funding_time"] <= hi)].reset_index(drop=True)


def test_snapshots_carry_the_windows_funding_one_file_and_partitioned(tmp_path, candles):
    root = tmp_path / "archive"
    funding = funding_archive(root, candles)
    source = f"binance-archive:{root}"
    # one month: a one-file snapshot, its funding beside it
    one = tmp_path / "august.parquet"
    done = dump(source, one, "2023-08-01T00:00:00Z", "2023-08-02T00:00:00Z")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "august.funding.parquet").is_file() and "wrote 14 funding rates of 2 assets" in done.stdout
    pd.testing.assert_frame_equal(load_funding(str(one), [], DELAY), settled_in(funding, "2023-08-01", "2023-08-02"))
    # two months: a partitioned snapshot, its funding inside, never read as candles
    both = tmp_path / "long.parquet"
    done = dump(source, both, "2023-07-30T00:00:00Z", "2023-08-02T00:00:00Z")
    assert done.returncode == 0, done.stderr
    assert (both / "_funding.parquet").is_file() and list(snapshot_parts(both)) == ["2023-07", "2023-08"]
    assert len(read_snapshot(both)) == 2 * 3 * 1440
    whole = settled_in(funding, "2023-07-30", "2023-08-02")
    pd.testing.assert_frame_equal(load_funding(f"parquet:{both}", ["BTC", "ETH"], DELAY), whole)
    window = (pd.Timestamp("2023-08-01", tz="UTC"), pd.Timestamp("2023-08-01 12:00", tz="UTC"))
    pd.testing.assert_frame_equal(
        load_funding(str(both), ["ETH"], DELAY, window),
        settled_in(funding[funding["asset"] == "ETH"], "2023-08-01", "2023-08-01 12:00"),
    )
    # a snapshot dumped from a snapshot keeps its funding (and a replaced one-file snapshot's goes)
    again = dump(f"parquet:{both}", one, "2023-07-31T00:00:00Z", "2023-08-01T00:00:00Z")
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(load_funding(str(one), [], DELAY), settled_in(funding, "2023-07-31", "2023-08-01"))


def test_sources_without_funding_give_none(snapshot):
    """The bundled candles and snapshots written before funding existed: no rows (runs assume a rate)."""
    assert load_funding(str(snapshot), ["BTC"], DELAY).empty
    assert load_funding(f"csv:{BUNDLED_CANDLES}", ["BTC"], DELAY).empty


def test_a_csv_folder_keeps_funding_json_files_in_funding(tmp_path, xrp):
    (tmp_path / "funding").mkdir()
    (tmp_path / "funding" / XRP_FILE.name).write_text(XRP_FILE.read_text())
    pd.testing.assert_frame_equal(load_funding(f"csv:{tmp_path}", ["XRP"], DELAY), xrp)
    assert load_funding(f"csv:{tmp_path}", ["BTC"], DELAY).empty


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"PK\x03\x04 cut short", "corrupt zip"),
        ("calc_time,funding_interval_hours,last_funding_rate\n1690848000005,8,0.0001\n1690876800005,8,abc\n", "line 3"),
        ("time,rate\n1690848000005,0.0001\n", "header"),
        ("calc_time,funding_interval_hours,last_funding_rate\n1688169600000,8,0.0001\n", "outside the month"),
        ("calc_time,funding_interval_hours,last_funding_rate\n1690848000005,8,0.9\n", "bad funding row for BTC"),
    ],
)
def test_a_bad_funding_zip_is_one_error_naming_it(tmp_path, candles, content, message):
    root = tmp_path / "archive"
    funding_archive(root, candles)
    bad = spoil(root, content)
    with pytest.raises(MarketDataError, match=message) as error:
        load_funding(f"binance-archive:{root}", ["BTC", "ETH"], DELAY)
    assert bad.name in str(error.value)


def spoil(root: Path, content: bytes | str) -> Path:
    """BTC's August funding zip replaced by ``content`` (bytes: the zip's, text: its CSV's)."""
    bad = root / "BTCUSDT-fundingRate-2023-08.zip"
    bad.with_name(bad.name + ".CHECKSUM").unlink()
    if isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        with zipfile.ZipFile(bad, "w") as archive:
            archive.writestr("BTCUSDT-fundingRate-2023-08.csv", content)
    return bad


def test_a_bad_funding_zip_refuses_the_dump_and_nothing_is_written(tmp_path, candles):
    root = tmp_path / "archive"
    funding_archive(root, candles)
    bad = spoil(root, b"PK\x03\x04 cut short")
    out = tmp_path / "out.parquet"
    done = dump(f"binance-archive:{root}", out, "2023-08-01T00:00:00Z", "2023-08-02T00:00:00Z")
    assert done.returncode != 0 and "corrupt zip" in done.stderr and bad.name in done.stderr
    assert not out.exists() and not (tmp_path / "out.funding.parquet").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not a funding JSON file"),
        ('{"a": 1}', "a list of"),
        ('[[1637193600017, 0.0001], ["x", 1]]', "row 1"),
    ],
)
def test_a_bad_funding_json_is_one_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "XRP_USDT-8h-funding_rate.json"
    path.write_text(text)
    with pytest.raises(MarketDataError, match=message) as error:
        read_funding_json(path, DELAY)
    assert str(path) in str(error.value)


def test_paging_the_history_returns_every_settlement_once(xrp):
    """ccxt's history answers at most a page from ``since`` (here 10 of the 91): paged to the end,
    every settlement once, none past ``until``."""
    rows = [{"timestamp": row[0], "fundingRate": row[1]} for row in json.loads(XRP_FILE.read_text())]

    def fetch(since: int, limit: int) -> list[dict]:
        return [row for row in rows if row["timestamp"] >= since][:limit]

    got = page_funding(fetch, rows[0]["timestamp"], rows[-1]["timestamp"], limit=10)
    assert got == rows
    assert page_funding(fetch, rows[0]["timestamp"], rows[29]["timestamp"], limit=10) == rows[:30]
