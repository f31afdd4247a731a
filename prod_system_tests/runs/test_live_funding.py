"""Funding in a live session, from the market database: a bar holding a settlement waits (until its
deadline) for the rate the data says is due; a rate recorded after that is booked at the first bar that
sees it, on the holdings at the settlement's time, even after the session was restarted in between
(the holdings come from the log dir), and never twice."""

from __future__ import annotations

import pandas as pd

from prod_system.config import build_config
from prod_system.data.market_db import MarketDatabase
from prod_system.log_dir import LogDir
from prod_system.runs.live import LiveSession
from prod_system_tests.kit.data import UNIVERSE
from prod_system_tests.kit.live import ReadAdvancingClock, candles_of

T = pd.Timestamp("2023-07-21T08:00:00Z")  # the settlement
FIVE = pd.Timedelta(minutes=5)
RATE = 0.002  # large, so that the booking bar and holdings are plain to see


def funding_rows(times: list[pd.Timestamp], known: pd.Timestamp, rate: float = RATE) -> pd.DataFrame:
    """BTC's settlements at ``times``, recorded (known) at ``known``, without a mark price."""
    return pd.DataFrame(
        {"asset": "BTC", "funding_time": times, "rate": rate, "mark_price": float("nan"), "knowledge_ts": known}
    )


def record_candles(database: MarketDatabase, candles: pd.DataFrame) -> None:
    """Six hours of history known before the session, then each minute's candles known 5 s after it closes."""
    start = T - 2 * FIVE
    database.upsert(candles_of(candles, start - pd.Timedelta(hours=6), start), start)
    for close in pd.date_range(start + pd.Timedelta(minutes=1), T + 4 * FIVE, freq="1min"):
        database.upsert(candles_of(candles, close - pd.Timedelta(minutes=1), close), close + pd.Timedelta(seconds=5))


def session(root, url, until: pd.Timestamp) -> LiveSession:
    config = build_config(
        {
            "model": "C1b",
            "run_mode": "paper_trading",
            "universe": UNIVERSE,
            "start": (T - 2 * FIVE).isoformat(),
            "end": (T + 3 * FIVE).isoformat(),
            "market_data": {"source": url},
            "log_root": str(root),
            "live": {"data_timeout_seconds": 20, "poll_seconds": 0.001},
            "profile_memory": False,
        }
    )
    return LiveSession(config, ReadAdvancingClock(until, pd.Timedelta(milliseconds=200)))


def test_a_rate_recorded_late_is_booked_on_the_holdings_at_its_time_across_a_restart(candles, tmp_path):
    url = f"sqlite:///{tmp_path / 'market.db'}"
    database = MarketDatabase(url)
    record_candles(database, candles)
    # BTC's data: the two settlements before (8-hourly), known at once; the 08:00 one comes late
    database.upsert_funding(funding_rows([T - pd.Timedelta(hours=16), T - pd.Timedelta(hours=8)], T - 2 * FIVE))
    first = session(tmp_path, url, T - 2 * FIVE - pd.Timedelta(seconds=1))
    outcomes = first.run(until=T + FIVE)  # 07:55, 08:00 (waits for BTC's rate in vain), 08:05; then "killed"
    assert [o.status for o in outcomes] == ["traded"] * 3
    log = (first.log_dir.path / "log.txt").read_text()
    assert "no funding rate yet for BTC" in log
    # the rate is recorded after the session stopped; the restarted session books it at its first bar
    database.upsert_funding(funding_rows([T], T + FIVE + pd.Timedelta(minutes=2)))
    second = session(tmp_path, url, T + FIVE + pd.Timedelta(minutes=4))
    assert [o.status for o in second.run()] == ["traded"] * 2  # 08:10, 08:15
    logs = LogDir(first.log_dir.path)
    stats = logs.read_table("portfolio/statistics").set_index("bar_end")
    funding = logs.read_table("portfolio/funding").pivot(index="bar_end", columns="asset", values="funding")
    shares = logs.read_table("portfolio/holdings_shares").pivot(index="bar_end", columns="asset", values="shares")
    notional = logs.read_table("portfolio/holdings_notional").pivot(index="bar_end", columns="asset", values="notional")
    held = shares.loc[T, "BTC"]
    assert held != 0 and held != shares.loc[T + 2 * FIVE, "BTC"]  # the holdings moved on since 08:00
    expected = -held * (notional.loc[T, "BTC"] / held) * RATE
    # BTC: nothing at 08:00 (no rate yet), the whole settlement at 08:10 on the 08:00 holdings; the other
    # assets (no data) at the assumed rate at 08:00, once
    assert funding.loc[T, "BTC"] == 0 and abs(funding.loc[T + 2 * FIVE, "BTC"] - expected) < 1e-9
    assert funding["BTC"].drop(T + 2 * FIVE).eq(0).all()
    others = funding.drop(columns="BTC")
    assert (others.drop(T) == 0).all().all() and (others.loc[T] != 0).any()
    assert stats.loc[T, "funding_assumed"] == len(UNIVERSE) - 1 and stats["funding_assumed"].sum() == len(UNIVERSE) - 1


def test_a_bar_holding_a_settlement_waits_for_its_rate(candles, tmp_path):
    """The rate comes 20 s after the settlement, within the bar's 20 s deadline... for the clock's reads:
    the session polls the database until it is there, and books it at 08:00."""
    url = f"sqlite:///{tmp_path / 'market.db'}"
    database = MarketDatabase(url)
    record_candles(database, candles)
    database.upsert_funding(funding_rows([T - pd.Timedelta(hours=16), T - pd.Timedelta(hours=8)], T - 2 * FIVE))
    database.upsert_funding(funding_rows([T], T + pd.Timedelta(seconds=12)))  # known 12 s after the settlement
    live = session(tmp_path, url, T - 2 * FIVE - pd.Timedelta(seconds=1))
    assert [o.status for o in live.run(until=T + FIVE)] == ["traded"] * 3
    funding = LogDir(live.log_dir.path).read_table("portfolio/funding").set_index(["bar_end", "asset"])["funding"]
    assert funding[(T, "BTC")] != 0 and funding[(T + FIVE, "BTC")] == 0
