"""The real-time market database on SQLite and on a real PostgreSQL, and the ingestion into it."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import inspect

from prod_system.common.clock import SimulatedClock
from prod_system.data.market_data import CandleStore
from prod_system.data.market_db import MarketDatabase, UpsertResult
from prod_system.data.sources import load_funding, load_source
from prod_system.errors import MarketDataError
from prod_system.exchange import LocalExchange
from prod_system.runs.ingestion import Ingestor
from prod_system_tests.kit.cli import cli
from prod_system_tests.kit.data import UNIVERSE
from prod_system_tests.kit.exchange import exchange_funding

T0 = pd.Timestamp("2023-07-21T00:00:00Z")
FUNDING = "GET /fapi/v1/fundingRate"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'market.db'}"
    return request.getfixturevalue("postgres_url")


def minutes(candles: pd.DataFrame, start: pd.Timestamp, count: int) -> pd.DataFrame:
    rows = candles[(candles["bar_start"] >= start) & (candles["bar_start"] < start + pd.Timedelta(minutes=count))]
    return rows[["asset", "bar_start", "open", "high", "low", "close", "volume"]].reset_index(drop=True)


def test_schema_upsert_revisions_and_visibility(database_url, candles):
    db = MarketDatabase(database_url)
    MarketDatabase(database_url).close()  # a second open finds the schema: idempotent set-up
    names = set(inspect(db.engine).get_table_names())
    assert {"candles", "candle_revisions"} <= names
    batch = minutes(candles, T0, 10)
    known = T0 + pd.Timedelta(minutes=10, seconds=3)
    first = db.upsert(batch, known)
    assert (first.new, first.revised, first.unchanged) == (80, 0, 0)
    again = db.upsert(batch, known + pd.Timedelta(minutes=1))
    assert (again.new, again.revised, again.unchanged) == (0, 0, 80)  # idempotent
    revised = batch.copy()
    revised.loc[(revised["asset"] == "BTC") & (revised["bar_start"] == T0 + pd.Timedelta(minutes=9)), "close"] += 5.0
    later = known + pd.Timedelta(minutes=2)
    assert db.upsert(revised, later).revised == 1
    # as of before the revision: the original close; after: the revised one; nothing from the future
    window = (T0, T0 + pd.Timedelta(minutes=10))
    before = db.snapshot(UNIVERSE, *window, now=known + pd.Timedelta(seconds=1)).set_index(["asset", "bar_start"])
    after = db.snapshot(UNIVERSE, *window, now=later).set_index(["asset", "bar_start"])
    key = ("BTC", T0 + pd.Timedelta(minutes=9))
    original = batch.set_index(["asset", "bar_start"]).loc[key, "close"]
    assert before.loc[key, "close"] == original and after.loc[key, "close"] == original + 5.0
    assert before.loc[key, "knowledge_ts"] == known and after.loc[key, "knowledge_ts"] == later
    assert db.snapshot(UNIVERSE, *window, now=known - pd.Timedelta(seconds=1)).empty
    assert len(db.snapshot(UNIVERSE, *window)) == 80
    assert db.last_bar_ends(["BTC", "NOPE"]) == {"BTC": T0 + pd.Timedelta(minutes=10), "NOPE": None}
    assert db.missing(["BTC", "ETH"], T0 + pd.Timedelta(minutes=10)) == []
    assert db.missing(["BTC", "ETH"], T0 + pd.Timedelta(minutes=11)) == ["BTC", "ETH"]
    with pytest.raises(MarketDataError, match="before it has closed"):
        db.upsert(minutes(candles, T0 + pd.Timedelta(minutes=20), 1), T0 + pd.Timedelta(minutes=20, seconds=30))
    db.close()


def test_bad_database_urls_are_clear(tmp_path):
    with pytest.raises(MarketDataError, match="not a database URL"):
        MarketDatabase("sqlite:/:bad")
    with pytest.raises(MarketDataError, match="PGPASSWORD"):
        MarketDatabase("postgresql://user:secret@127.0.0.1:5432/db")
    with pytest.raises(MarketDataError, match="cannot open the market database"):
        MarketDatabase(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'market.db'}")


def test_ingestion_writes_closed_candles_once(database_url, snapshot, candles):
    with LocalExchange(f"parquet:{snapshot}") as exchange:
        now = T0 + pd.Timedelta(minutes=30, seconds=20)
        exchange.set_time(now)
        db = MarketDatabase(database_url)
        clock = SimulatedClock(now)
        ingestor = Ingestor(db, UNIVERSE, clock, exchange.url, backfill=pd.Timedelta(minutes=20))
        report = ingestor.ingest_once()
        assert report.failed == {} and report.result.new == 20 * 8
        stored = db.snapshot(UNIVERSE, T0, now + pd.Timedelta(hours=1))
        assert stored["bar_end"].max() == T0 + pd.Timedelta(minutes=30)  # the open candle is not written
        expected = candles.set_index(["asset", "bar_start"])
        got = stored.set_index(["asset", "bar_start"])
        pd.testing.assert_frame_equal(
            got[["open", "close", "volume"]], expected.loc[got.index, ["open", "close", "volume"]]
        )
        assert (got["knowledge_ts"] == now).all()
        assert ingestor.ingest_once().result.new == 0  # nothing new: idempotent
        later = now + pd.Timedelta(minutes=2)
        exchange.set_time(later)
        clock.wait_until(later)
        report = ingestor.ingest_once()
        assert (report.result.new, report.result.revised) == (16, 0)
        # an exchange that fails for a while: reported, the next pass catches up
        exchange.set_faults([{"endpoint": "GET /fapi/v1/klines", "kind": "server_error", "count": 100}])
        clock.wait_until(later + pd.Timedelta(minutes=1))
        exchange.set_time(later + pd.Timedelta(minutes=1))
        assert set(ingestor.ingest_once().failed) == set(UNIVERSE)
        exchange.set_faults([])
        assert ingestor.ingest_once().result.new == 8
        ingestor.close()
        # what the model reads from the database is what the visibility rule lets it see
        store = CandleStore(load_source(database_url, UNIVERSE, pd.Timedelta(0)), UNIVERSE)
        assert store.last_bar_end == T0 + pd.Timedelta(minutes=33)
        db.close()


def test_ingestion_records_settled_funding_once_known(tmp_path, snapshot):
    """Through the local exchange and ccxt: the settlements of the last day, known when ingested; a
    pass in the same hour asks nothing; a settlement the exchange publishes late (5 s after it) is
    asked for again at the next pass and recorded then, with that pass's time."""
    table = exchange_funding()
    with LocalExchange(f"parquet:{snapshot}", funding=table) as exchange:
        now = T0 + pd.Timedelta(minutes=30, seconds=20)
        exchange.set_time(now)
        db = MarketDatabase(f"sqlite:///{tmp_path / 'market.db'}")
        clock = SimulatedClock(now)
        ingestor = Ingestor(db, ["BTC", "ETH"], clock, exchange.url, funding=True)
        report = ingestor.ingest_once()
        assert report.failed == {} and report.funding.new == 2 * 3  # 07-20 08:00 and 16:00, 07-21 00:00
        stored = db.funding(["BTC", "ETH"], T0 - pd.Timedelta(days=2), now)
        expected = table[(table["funding_time"] > now - pd.Timedelta(days=1)) & (table["funding_time"] <= now)]
        assert stored["rate"].tolist() == expected["rate"].tolist()
        assert stored["mark_price"].tolist() == expected["mark_price"].tolist()
        assert (stored["knowledge_ts"] == now).all()
        counts = exchange.request_counts()
        clock.wait_until(now + pd.Timedelta(minutes=1))
        exchange.set_time(now + pd.Timedelta(minutes=1))
        assert ingestor.ingest_once().funding == UpsertResult()  # same hour, nothing due: not asked
        assert exchange.request_counts().get(FUNDING, 0) == counts[FUNDING]
        settled = T0 + pd.Timedelta(hours=8, seconds=1)  # before the 08:00 rate is published (08:00:05)
        clock.wait_until(settled)
        exchange.set_time(settled)
        assert ingestor.ingest_once().funding.new == 0
        clock.wait_until(settled + pd.Timedelta(minutes=1))
        exchange.set_time(settled + pd.Timedelta(minutes=1))
        assert ingestor.ingest_once().funding.new == 2  # due and missing: asked again
        late = db.funding(["BTC"], T0 + pd.Timedelta(hours=8), T0 + pd.Timedelta(hours=8))
        assert late["knowledge_ts"].tolist() == [settled + pd.Timedelta(minutes=1)]
        clock.wait_until(settled + pd.Timedelta(minutes=2))
        exchange.set_time(settled + pd.Timedelta(minutes=2))
        before = exchange.request_counts()[FUNDING]
        ingestor.ingest_once()
        assert exchange.request_counts()[FUNDING] == before  # here: nothing due until 16:00
        ingestor.close()
        db.close()


def test_a_backfill_pages_through_the_klines_and_reaches_no_further_back(tmp_path, snapshot, candles):
    """20 hours of backfill (1,200 candles an asset: more than a page of klines) are written whole, and
    only they: the database's older last candle does not pull the pass back to it."""
    with LocalExchange(f"parquet:{snapshot}") as exchange:
        now = T0 + pd.Timedelta(seconds=20)
        exchange.set_time(now)
        db = MarketDatabase(f"sqlite:///{tmp_path / 'market.db'}")
        old = minutes(candles, T0 - pd.Timedelta(days=1), 1)
        db.upsert(old, T0 - pd.Timedelta(days=1) + pd.Timedelta(minutes=2))
        ingestor = Ingestor(db, UNIVERSE, SimulatedClock(now), exchange.url)
        report = ingestor.ingest_once(backfill=pd.Timedelta(hours=20))
        ingestor.close()
        assert report.failed == {} and report.result.new == 1200 * len(UNIVERSE)
        stored = db.snapshot(UNIVERSE, T0 - pd.Timedelta(hours=20), T0)
        db.close()
    assert stored.groupby("asset").size().to_dict() == dict.fromkeys(UNIVERSE, 1200)


def settlements(assets: list[str], times: list[str], rate: float = 0.0001, known_after: str = "5s") -> pd.DataFrame:
    """Funding rows of ``assets`` at ``times``, stamped a few ms after the time as Binance does."""
    when = pd.DatetimeIndex(pd.to_datetime(times, utc=True)) + pd.Timedelta(milliseconds=4)
    return pd.DataFrame(
        {
            "asset": [asset for asset in assets for _ in when],
            "funding_time": list(when) * len(assets),
            "rate": rate,
            "mark_price": 30_000.0,
            "knowledge_ts": list(when + pd.Timedelta(known_after)) * len(assets),
        }
    )


def test_funding_rates_upsert_revise_and_read(database_url):
    db = MarketDatabase(database_url)
    assert "funding_rates" in set(inspect(db.engine).get_table_names())
    times = ["2023-07-20T16:00", "2023-07-21T00:00", "2023-07-21T08:00"]
    rows = settlements(["BTC", "ETH"], times)
    assert (db.upsert_funding(rows).new, db.upsert_funding(rows).unchanged) == (6, 6)  # a re-fetch: no copy
    refetched = rows.assign(knowledge_ts=rows["knowledge_ts"] + pd.Timedelta(hours=1), mark_price=float("nan"))
    assert db.upsert_funding(refetched).unchanged == 6  # later, without the mark price: nothing changes
    got = db.funding(["BTC", "ETH"], pd.Timestamp("2023-07-20", tz="UTC"), pd.Timestamp("2023-07-22", tz="UTC"))
    assert len(got) == 6 and (got["mark_price"] == 30_000.0).all()
    assert (got["funding_time"] == got["funding_time"].dt.floor("min")).all()
    assert (got["knowledge_ts"] == got["funding_time"] + pd.Timedelta(seconds=5, milliseconds=4)).all()
    revised = settlements(["BTC"], ["2023-07-21T00:00"], rate=0.0003, known_after="2h")
    assert db.upsert_funding(revised).revised == 1
    btc = db.funding(["BTC"], T0, T0).iloc[0]
    assert btc["rate"] == 0.0003 and btc["knowledge_ts"] == revised["knowledge_ts"].iloc[0]
    assert len(db.funding([], T0, T0 + pd.Timedelta(hours=8))) == 4  # [start, end], every asset
    assert len(db.funding(["ETH"], T0, T0 + pd.Timedelta(hours=8), now=T0 + pd.Timedelta(hours=1))) == 1
    assert db.last_funding_times(["BTC", "NOPE"]) == {"BTC": T0 + pd.Timedelta(hours=8), "NOPE": None}
    peeking = settlements(["SOL"], ["2023-07-21T16:00"], known_after="-1min")
    with pytest.raises(MarketDataError, match="not known before its settlement"):
        db.upsert_funding(pd.concat([settlements(["SOL"], ["2023-07-21T08:00"]), peeking]))
    assert db.last_funding_times(["SOL"]) == {"SOL": None}  # nothing of the batch written
    db.close()


def test_dump_market_data_from_the_database(database_url, candles, tmp_path):
    db = MarketDatabase(database_url)
    db.upsert(minutes(candles, T0, 60), T0 + pd.Timedelta(hours=1, seconds=5))
    db.upsert_funding(settlements(["BTC", "ETH"], ["2023-07-20T00:00", "2023-07-20T16:00", "2023-07-21T00:00"]))
    db.close()
    out = tmp_path / "dump.parquet"
    done = cli(
        "dump-market-data",
        "--source",
        database_url,
        "--start",
        "2023-07-21T00:10:00Z",
        "--end",
        "2023-07-21T00:40:00Z",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    dumped = pd.read_parquet(out)
    assert len(dumped) == 30 * 8 and (dumped["knowledge_ts"] == T0 + pd.Timedelta(hours=1, seconds=5)).all()
    funding = load_funding(str(out), [], pd.Timedelta(0))  # the window's and a day before it, as recorded
    assert len(funding) == 4 and funding["funding_time"].min() == pd.Timestamp("2023-07-20T16:00Z")
    assert (funding["knowledge_ts"] == funding["funding_time"] + pd.Timedelta(seconds=5, milliseconds=4)).all()
