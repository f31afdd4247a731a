"""Costs in real runs (six hours of C1b on the bundled candles): the market data's funding rates and
marks, the assumed rate for the assets the data lacks, slippage, and funding turned off; in each, the
simulation's books check out and research, applying the same costs, reconciles with it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prod_system.analysis.reconciliation import reconcile
from prod_system.data.funding import normalize_funding
from prod_system.data.market_data import CandleStore, write_snapshot
from prod_system.log_dir import LogDir
from prod_system.runs.simulate import simulate
from prod_system_tests.kit.accounting import assert_accounting
from prod_system_tests.kit.data import sim_config

WINDOW = {"start": "2023-07-21T03:00:00Z", "end": "2023-07-21T09:00:00Z"}  # settlements at 04:00 and 08:00
SLIPPAGE = {"half_spread_bps": 2.0, "impact_bps_per_million": 10.0}
WITH_DATA = ["BTC", "ETH", "SOL"]


def at(hhmm: str) -> pd.Timestamp:
    return pd.Timestamp(f"2023-07-21T{hhmm}:00Z")


def synthetic_funding(candles: pd.DataFrame) -> pd.DataFrame:
    """BTC settles every 8 hours without a mark price (the close is used), ETH every 4 hours with one
    mark price and one without, SOL every 8 hours with marks; each known 10 s after it settles. The
    other assets have none: they settle at the assumed rate. Marks are 0.3% off the close, so that
    using the close instead shows."""
    close = candles.set_index(["asset", "bar_end"])["close"]
    rows = [
        ("BTC", at("00:00"), 0.0004, np.nan),
        ("BTC", at("08:00"), -0.0006, np.nan),
        ("ETH", at("00:00"), 0.0002, np.nan),
        ("ETH", at("04:00"), 0.0008, close[("ETH", at("04:00"))] * 1.003),
        ("ETH", at("08:00"), 0.0005, np.nan),
        ("SOL", at("00:00"), -0.0003, close[("SOL", at("00:00"))] * 0.997),
        ("SOL", at("08:00"), -0.0009, close[("SOL", at("08:00"))] * 0.997),
    ]
    frame = pd.DataFrame(rows, columns=["asset", "funding_time", "rate", "mark_price"])
    return normalize_funding(frame.assign(knowledge_ts=frame["funding_time"] + pd.Timedelta(seconds=10)))


def run(snapshot, root, **costs):
    config = sim_config(snapshot, root, **WINDOW, costs=costs)
    return config, LogDir(simulate(config).log_dir)


@pytest.fixture(scope="module")
def funded(tmp_path_factory, candles):
    """A run on a copy of the snapshot that carries funding rates."""
    folder = tmp_path_factory.mktemp("funded")
    funding = synthetic_funding(candles)
    snapshot = write_snapshot(candles, folder / "funded.parquet", funding=funding)
    config, log_dir = run(snapshot, folder / "runs")
    return config, log_dir, funding


@pytest.fixture(scope="module")
def unfunded(tmp_path_factory, snapshot):
    return run(snapshot, tmp_path_factory.mktemp("off"), funding={"mode": "off"})


@pytest.fixture(scope="module")
def slipped(tmp_path_factory, snapshot):
    return run(snapshot, tmp_path_factory.mktemp("slipped"), funding={"mode": "off"}, slippage=SLIPPAGE)


def test_funding_from_the_data_and_assumed_where_there_is_none(funded, candles):
    config, log_dir, funding = funded
    rate = config.costs.funding.assumed_rate
    assumed = [asset for asset in config.universe if asset not in WITH_DATA]
    in_window = funding[(funding["funding_time"] > config.start) & (funding["funding_time"] <= config.end)]
    expected = pd.concat(
        [
            in_window[["asset", "funding_time", "rate", "mark_price"]],
            pd.DataFrame({"asset": assumed, "funding_time": at("08:00"), "rate": rate, "mark_price": np.nan}),
        ],
        ignore_index=True,
    )
    totals = assert_accounting(log_dir, config.costs.fees.taker, expected, config.portfolio.initial_cash)
    stats = log_dir.read_table("portfolio/statistics").set_index("bar_end")
    # only 04:00 (ETH, data) and 08:00 (3 data, 5 assumed) book funding; only the assumed assets count
    booked = stats.index[stats["funding"] != 0]
    assert list(booked) == [at("04:00"), at("08:00")]
    assert stats["funding_assumed"].sum() == len(assumed) == stats.loc[at("08:00"), "funding_assumed"]
    per_asset = log_dir.read_table("portfolio/funding").query("funding != 0")
    assert set(per_asset["asset"]) == set(config.universe)
    assert abs(totals["funding"]) > 0.5  # large enough that a wrong share, mark or sign shows

    summary = reconcile(config, log_dir, CandleStore(candles, config.universe, funding=funding)).summary
    assert summary.reconciled and summary.first_divergence is None, summary.verdict()
    assert summary.costs["funding_prod"] == pytest.approx(totals["funding"], abs=1e-9)
    assert summary.costs["funding_research"] == pytest.approx(totals["funding"], abs=0.01)
    source = summary.costs["funding_source"]
    assert (
        source
        == f"market data, and the assumed rate {rate:g} per 8h for {len(assumed)} settlements of assets without data"
    )
    assert abs(summary.attribution["funding"]) < 0.01


def test_funding_off_books_none_and_the_reconciliation_says_so(unfunded, candles):
    config, log_dir = unfunded
    totals = assert_accounting(
        log_dir,
        config.costs.fees.taker,
        settlements=pd.DataFrame(columns=["asset", "funding_time", "rate", "mark_price"]),
        initial_cash=config.portfolio.initial_cash,
    )
    stats = log_dir.read_table("portfolio/statistics")
    assert totals["funding"] == 0 and (stats["funding_assumed"] == 0).all() and totals["fees"] > 100
    assert (log_dir.read_table("portfolio/funding")["funding"] == 0).all()
    summary = reconcile(config, log_dir, CandleStore(candles, config.universe)).summary
    assert summary.reconciled, summary.verdict()
    assert summary.costs["funding_source"].startswith("off") and "not modelled" in summary.costs["funding_source"]
    assert summary.costs["funding_prod"] == 0 and summary.costs["funding_research"] == 0


def test_slippage_moves_fills_against_the_order_and_costs_what_it_should(slipped, unfunded, candles):
    config, log_dir = slipped
    fills = log_dir.read_table("fills")
    closes = candles.set_index(["asset", "bar_end"])["close"]
    bar = config.bar_delta
    checked = 0
    for fill in fills.iloc[:: max(len(fills) // 12, 1)].itertuples():
        window = pd.date_range(fill.order_bar_end + pd.Timedelta(minutes=1), fill.order_bar_end + bar, freq="1min")
        twap = closes.loc[[(fill.asset, ts) for ts in window]].mean()
        bps = 2.0 + 10.0 * abs(fill.shares * twap) / 1e6
        assert fill.price == pytest.approx(twap * (1 + np.sign(fill.shares) * bps * 1e-4), rel=1e-12)
        assert (fill.price > twap) == (fill.shares > 0)
        assert fill.fee == pytest.approx(abs(fill.notional) * config.costs.fees.taker, rel=1e-12)
        checked += 1
    assert checked >= 10 and (fills["shares"] > 0).any() and (fills["shares"] < 0).any()

    # the same orders (slippage changes prices, not quantities): the net PnL is lower by the slippage
    # paid, give or take the fee on it (a buy's fee grows, a sell's shrinks)
    _, plain_dir = unfunded
    plain = plain_dir.read_table("fills")[["order_bar_end", "asset", "price", "shares"]]
    same = fills.merge(plain, on=["order_bar_end", "asset"], suffixes=("", "_plain"))
    assert len(same) == len(fills) == len(plain) and (same["shares"] == same["shares_plain"]).all()
    paid = ((same["price"] - same["price_plain"]) * same["shares"]).sum()
    assert paid > 100
    pnl, plain_pnl = (d.read_table("portfolio/statistics")["pnl"].sum() for d in (log_dir, plain_dir))
    assert plain_pnl - pnl == pytest.approx(paid, abs=config.costs.fees.taker * paid)

    assert_accounting(log_dir, config.costs.fees.taker, initial_cash=config.portfolio.initial_cash)
    summary = reconcile(config, log_dir, CandleStore(candles, config.universe)).summary
    assert summary.reconciled and summary.first_divergence is None, summary.verdict()
    assert abs(summary.attribution["execution"]) < 0.01
