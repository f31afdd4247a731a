"""The pure-core simulation on real candles: no future peeking, accounting identities, log dir."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prod_system.data.market_data import read_snapshot, write_snapshot
from prod_system.errors import LogDirExistsError
from prod_system.log_dir import TABLES, LogDir
from prod_system.runs.simulate import simulate
from prod_system_tests.kit.accounting import assert_accounting
from prod_system_tests.kit.data import sim_config

T = pd.Timestamp("2023-07-21T12:00:00Z")


def read(log_dir, name):
    return LogDir(log_dir).read_table(name)


def test_log_dir_is_complete(simulated_day):
    config, log_dir = simulated_day
    assert log_dir == config.log_dir()
    assert (log_dir / "system_config.yaml").exists()
    log = (log_dir / "log.txt").read_text()
    assert "bar 2023-07-21T00:05:00+00:00" in log and "done:" in log
    for name in TABLES:
        frame = pd.read_parquet(log_dir / name)
        assert "bar_end" in frame.columns, name
        assert str(frame["bar_end"].dt.tz) == "UTC", name
        if name == "data_quality":
            assert frame.empty  # the real day is clean: the guard found nothing
        else:
            assert len(frame) > 0, name
    stats = read(log_dir, "portfolio/statistics")
    assert len(stats) == 288
    assert stats["gross_volume"].sum() > 0 and stats["n_fills"].sum() > 100


def test_rerun_never_mixes(simulated_day, snapshot):
    config, log_dir = simulated_day
    with pytest.raises(LogDirExistsError, match="--overwrite"):
        simulate(config)
    assert len(read(log_dir, "portfolio/statistics")) == 288


def test_accounting_identities(simulated_day):
    config, log_dir = simulated_day
    cash0 = config.portfolio.initial_cash
    shares = read(log_dir, "portfolio/holdings_shares").pivot(index="bar_end", columns="asset", values="shares")
    notional = read(log_dir, "portfolio/holdings_notional").pivot(index="bar_end", columns="asset", values="notional")
    traded = read(log_dir, "portfolio/executed_trades_shares").pivot(index="bar_end", columns="asset", values="shares")
    traded_notional = read(log_dir, "portfolio/executed_trades_notional").pivot(
        index="bar_end", columns="asset", values="notional"
    )
    stats = read(log_dir, "portfolio/statistics").set_index("bar_end")
    fills = read(log_dir, "fills")
    targets = read(log_dir, "target_positions").pivot(index="bar_end", columns="asset", values="target_shares")

    # holdings roll forward by fills
    previous = shares.shift(1).fillna(0.0)
    np.testing.assert_allclose(shares, previous + traded, atol=1e-9)
    per_bar_fills = fills.pivot_table(index="bar_end", columns="asset", values="notional", aggfunc="sum")
    np.testing.assert_allclose(
        traded_notional.reindex_like(per_bar_fills).fillna(0), per_bar_fills.fillna(0), rtol=1e-12
    )
    # pnl identity and wealth, net of costs: the taker fee on every fill, and funding at the assumed
    # rate (the snapshot has no funding data) on the shares held at 08:00, 16:00 and 00:00 UTC
    settlements = pd.DataFrame(
        [
            (asset, pd.Timestamp(time), config.costs.funding.assumed_rate, np.nan)
            for time in ("2023-07-21T08:00Z", "2023-07-21T16:00Z", "2023-07-22T00:00Z")
            for asset in config.universe
        ],
        columns=["asset", "funding_time", "rate", "mark_price"],
    )
    totals = assert_accounting(LogDir(log_dir), config.costs.fees.taker, settlements, initial_cash=cash0)
    assert totals["fees"] > 1_000 and abs(totals["funding"]) > 1  # costs were charged: the checks bite
    assert (stats["funding_assumed"] > 0).sum() == 3
    np.testing.assert_allclose(stats["gmv"], notional.abs().sum(axis=1), rtol=1e-12)
    # with 100% fills, holdings after the fill equal the previous bar's target
    # (up to orders skipped for being under the min notional)
    after = shares.shift(-1).iloc[:-1]
    wanted = targets.iloc[:-1]
    prices = read(log_dir, "target_positions").pivot(index="bar_end", columns="asset", values="price").iloc[:-1]
    gap = ((after - wanted).abs() * prices).where(wanted.notna())
    assert (gap.fillna(0) < 5.0 + 1e-9).all().all()
    exact = (after == wanted).to_numpy()[wanted.notna().to_numpy()]
    assert exact.mean() > 0.9


def test_fill_prices_are_twap_of_the_next_bar(simulated_day, candles):
    _, log_dir = simulated_day
    fills = read(log_dir, "fills").head(40)
    closes = candles.set_index(["asset", "bar_end"])["close"]
    for fill in fills.itertuples():
        window = pd.date_range(
            fill.order_bar_end + pd.Timedelta(minutes=1), fill.order_bar_end + pd.Timedelta(minutes=5), freq="1min"
        )
        expected = closes.loc[[(fill.asset, ts) for ts in window]].mean()
        assert fill.price == pytest.approx(expected, rel=1e-12)
        assert fill.filled_at >= window[-1] + pd.Timedelta(seconds=10)


def test_client_order_ids_unique_and_deterministic(simulated_day):
    config, log_dir = simulated_day
    orders = read(log_dir, "orders")
    assert orders["client_order_id"].is_unique
    assert orders["client_order_id"].str.len().max() <= 36
    assert orders["client_order_id"].str.startswith(f"ps-{config.run_id}-").all()


def test_no_future_peeking(tmp_path, candles, simulated_day):
    """Change every candle after T: nothing the system did at bars ending at or before T may change."""
    _, log_dir = simulated_day
    rng = np.random.default_rng(7)
    future = candles["bar_start"] >= T
    altered = candles.copy()
    factor = rng.uniform(0.5, 1.5, future.sum())
    for column in ("open", "high", "low", "close"):
        altered.loc[future, column] *= factor
    altered.loc[future, "volume"] *= rng.uniform(0, 3, future.sum())
    snapshot = write_snapshot(altered, tmp_path / "altered.parquet")
    other = simulate(sim_config(snapshot, tmp_path / "runs"))
    for name in TABLES:
        if name == "dag/profiling":
            continue
        before = read(log_dir, name)
        after = read(other.log_dir, name)
        drop = [c for c in ("submitted_at", "filled_at") if c in before.columns]
        before, after = (
            before[before["bar_end"] <= T].drop(columns=drop),
            after[after["bar_end"] <= T].drop(columns=drop),
        )
        assert len(before) > 0 or name == "data_quality", name  # no data issue on the real candles up to T
        pd.testing.assert_frame_equal(before.reset_index(drop=True), after.reset_index(drop=True), obj=name)
    # and the alteration did change what came after T
    late_before = read(log_dir, "target_positions").query("bar_end > @T")
    late_after = read(other.log_dir, "target_positions").query("bar_end > @T")
    assert not late_before["target_shares"].equals(late_after["target_shares"])


def test_a_snapshot_partitioned_by_month_simulates_as_one_file(tmp_path, candles):
    """A run reads only its window (and warm-up) of a partitioned snapshot: a day starting a month, whose
    warm-up lies in the month before, trades exactly as on the same candles in one file."""
    moved = candles.copy()
    for column in ("bar_start", "bar_end", "knowledge_ts"):
        moved[column] = moved[column] + pd.Timedelta(days=11)  # 2023-07-31 to 2023-08-03
    months = write_snapshot(moved, tmp_path / "months.parquet")
    one = tmp_path / "one.parquet"  # the same candles forced into one file
    pq.write_table(pa.Table.from_pandas(read_snapshot(months), preserve_index=False), one)
    assert months.is_dir() and one.is_file()
    day = {"start": "2023-08-01T00:00:00Z", "end": "2023-08-02T00:00:00Z"}
    runs = {}
    for path in (one, months):
        config = sim_config(path, tmp_path / path.stem, **day)
        simulate(config)
        runs[path.stem] = config.log_dir()
    for table in ("dag/node_outputs", "target_positions", "fills", "portfolio/statistics"):
        first, second = read(runs["one"], table), read(runs["months"], table)
        assert len(first) > 0, table
        pd.testing.assert_frame_equal(first, second)
