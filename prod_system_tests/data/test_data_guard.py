"""Bad market data: gaps, NaN, zero and negative prices, duplicates, out-of-order rows, a late candle, a
delisted symbol and a 50% jump, each planted in a real day of candles. Each is caught, the affected
asset is not traded on that bar (the others are), and it is reported (data_quality table, log)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prod_system.data.market_data import CandleStore
from prod_system.log_dir import LogDir
from prod_system.runs.simulate import simulate
from prod_system_tests.kit.data import sim_config

DAY = pd.Timestamp("2023-07-21", tz="UTC")


def at(hhmm: str) -> pd.Timestamp:
    return DAY + pd.Timedelta(hours=int(hhmm[:2]), minutes=int(hhmm[3:]))


# (asset, bar end, issue) the guard must find, and how each is planted in the candles
PLANTED = {
    ("ETH", at("02:00"), "invalid_price"),  # a NaN close
    ("SOL", at("03:00"), "invalid_price"),  # zero prices
    ("BNB", at("04:00"), "invalid_price"),  # negative prices
    ("XRP", at("05:00"), "duplicate"),  # two rows for one minute that disagree
    ("DOGE", at("08:00"), "jump"),  # +60% from the bar before, and it stays there
    ("SOL", at("14:00"), "jump"),  # -70%: a fall counts as a jump too
    ("DOT", at("09:00"), "missing"),  # a gap: the bar's candles are absent
    ("BTC", at("10:00"), "missing"),  # late: the bar's last candle known 3 minutes after the decision
}
DELISTED_FROM = at("12:00")  # MATIC: no candle after this


def corrupt(candles: pd.DataFrame) -> pd.DataFrame:
    frame = candles.copy()
    prices = ["open", "high", "low", "close"]

    def rows(asset: str, bar_end: pd.Timestamp) -> pd.Series:
        return (frame["asset"] == asset) & (frame["bar_end"] == bar_end)

    frame.loc[rows("ETH", at("01:58")), "close"] = np.nan
    frame.loc[rows("SOL", at("02:57")), prices] = 0.0
    frame.loc[rows("BNB", at("03:59")), prices] = -1.0
    conflicting = frame[rows("XRP", at("04:58"))].assign(close=lambda f: f["close"] * 1.01)
    identical = frame[rows("XRP", at("06:58"))]  # harmless: one copy is kept, the bar is traded
    later = (frame["asset"] == "DOGE") & (frame["bar_end"] > at("07:55"))
    frame.loc[later, [*prices]] *= 1.6
    frame.loc[(frame["asset"] == "SOL") & (frame["bar_end"] > at("13:55")), [*prices]] *= 0.3
    gap = (frame["asset"] == "DOT") & (frame["bar_end"] > at("08:55")) & (frame["bar_end"] <= at("09:00"))
    frame.loc[rows("BTC", at("10:00")), "knowledge_ts"] = at("10:03")
    delisted = (frame["asset"] == "MATIC") & (frame["bar_end"] > DELISTED_FROM)
    frame = pd.concat([frame[~gap & ~delisted], conflicting, identical], ignore_index=True)
    # two rows out of time order
    first, second = frame.index[100], frame.index[108]
    order = list(frame.index)
    order[100], order[108] = second, first
    return frame.loc[order].reset_index(drop=True)


@pytest.fixture(scope="module")
def guarded_day(tmp_path_factory, candles):
    folder = tmp_path_factory.mktemp("guard")
    bad = corrupt(candles)
    bad.to_parquet(folder / "bad.parquet", index=False)  # as a bad file arrives: not through write_snapshot
    config = sim_config(folder / "bad.parquet", folder / "runs", profile_memory=False)
    summary = simulate(config)
    return LogDir(summary.log_dir), CandleStore(bad, config.universe)


def test_screening_reports_every_anomaly_of_the_file(guarded_day):
    _, store = guarded_day
    found = {(row.asset, row.bar_end, row.issue, row.action) for row in store.anomalies.itertuples()}
    assert ("ETH", at("01:58"), "invalid_price", "dropped") in found
    assert ("SOL", at("02:57"), "invalid_price", "dropped") in found
    assert ("BNB", at("03:59"), "invalid_price", "dropped") in found
    assert ("XRP", at("04:58"), "duplicate", "dropped") in found
    assert ("XRP", at("06:58"), "duplicate", "kept one copy") in found
    assert sum(issue == "out_of_order" for *_, issue, _ in found) >= 1
    # a dropped candle reads as known but unusable: NaN, with its reason
    candles = store.visible(at("02:00"), at("01:55"), at("02:00"))
    eth = candles.assets.index("ETH")
    assert np.isnan(candles.field("close")[2, eth]) and candles.screened()[2, eth] == 1


def test_each_planted_fault_is_caught_reported_and_not_traded(guarded_day, reliability):
    log_dir, _ = guarded_day
    quality = log_dir.read_table("data_quality")
    found = set(zip(quality["asset"], quality["bar_end"], quality["issue"], strict=True))
    assert found >= PLANTED
    # MATIC: missing for the first hour without candles, then delisted for the rest of the day
    matic = quality[quality["asset"] == "MATIC"].set_index("bar_end")["issue"]
    assert matic.index.min() == DELISTED_FROM + pd.Timedelta(minutes=5)
    assert (matic[matic.index < DELISTED_FROM + pd.Timedelta(hours=1)] == "missing").all()
    assert (matic[matic.index >= DELISTED_FROM + pd.Timedelta(hours=1)] == "delisted").all()
    assert matic.index.max() == DAY + pd.Timedelta(days=1)
    # nothing else: the real day itself is clean
    others = quality[quality["asset"] != "MATIC"]
    assert set(zip(others["asset"], others["bar_end"], others["issue"], strict=True)) == PLANTED

    orders = log_dir.read_table("orders")
    ordered = set(zip(orders["asset"], orders["bar_end"], strict=True))
    for asset, bar_end, _ in PLANTED:
        assert (asset, bar_end) not in ordered, f"{asset} traded at {bar_end} on bad data"
        # the other assets trade on that bar
        assert len({a for a, b in ordered if b == bar_end}) >= 5
    assert not any(a == "MATIC" and b > DELISTED_FROM for a, b in ordered)
    # the asset trades again once its data is good: the bar after the jump; after the gap, once the
    # model's 3-bar window is whole again
    assert ("DOGE", at("08:05")) in ordered and ("DOT", at("09:20")) in ordered

    log = (log_dir.path / "log.txt").read_text()
    assert "DOGE not traded: jump" in log and "market data: XRP" in log
    details = {
        "invalid_price": "NaN, zero or negative prices",
        "duplicate": "duplicate rows that disagree",
        "jump": "a 60% jump; a 70% fall",
        "missing": "a gap; a late candle",
    }
    for issue, what in details.items():
        hits = [(a, b) for a, b, i in PLANTED if i == issue]
        traded = sum((a, b) in ordered for a, b in hits)
        reliability("market_data", what, injected=len(hits), traded_on_it=traded, outcome=f"caught as '{issue}'")
    reliability(
        "market_data",
        "a symbol delisted mid-run",
        injected=1,
        traded_on_it=int(any(a == "MATIC" and b > DELISTED_FROM for a, b in ordered)),
        outcome=f"'missing' for an hour, then 'delisted' ({len(matic)} bars)",
    )
