"""The vectorised research portfolio reproduces the simulated production portfolio."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prod_system.analysis.research import research_portfolio
from prod_system.common.timeutil import bar_ends
from prod_system.data.market_data import CandleStore
from prod_system.log_dir import LogDir


def test_research_reconciles_with_the_simulation(simulated_day, candles):
    config, log_dir = simulated_day
    logs = LogDir(log_dir)
    recorded = logs.read_table("target_positions")[["bar_end", "asset", "prediction", "volatility", "price"]]
    bars = bar_ends(config.start, config.end, config.bar_delta)
    research = research_portfolio(config, recorded, CandleStore(candles, config.universe), bars)
    prod = logs.read_table("portfolio/statistics").set_index("bar_end")
    res = research["portfolio/statistics"].set_index("bar_end")
    # plumbing only: both sides size with the same run_sizing on the same recorded inputs, so this checks
    # the wiring (inputs, bars, columns), not the sizing; test_positions.py::test_sizing_by_hand does
    pd.testing.assert_frame_equal(
        research["target_positions"].reset_index(drop=True), logs.read_table("target_positions"), check_dtype=False
    )
    correlation = np.corrcoef(prod["pnl"], res["pnl"])[0, 1]
    assert correlation >= 0.999, correlation
    gap = abs(prod["pnl"].sum() - res["pnl"].sum())
    assert gap <= 0.001 * prod["gross_volume"].sum(), (gap, prod["gross_volume"].sum())
    np.testing.assert_allclose(res["net_wealth"], config.portfolio.initial_cash + res["pnl"].cumsum(), atol=1e-6)


def test_research_fails_on_a_corrupted_run(simulated_day, candles):
    """Flip one hour of recorded predictions: the research portfolio no longer matches production."""
    config, log_dir = simulated_day
    logs = LogDir(log_dir)
    recorded = logs.read_table("target_positions")[["bar_end", "asset", "prediction", "volatility", "price"]]
    hour = (recorded["bar_end"] > config.start + pd.Timedelta(hours=6)) & (
        recorded["bar_end"] <= config.start + pd.Timedelta(hours=7)
    )
    recorded.loc[hour, "prediction"] *= -1
    bars = bar_ends(config.start, config.end, config.bar_delta)
    research = research_portfolio(config, recorded, CandleStore(candles, config.universe), bars)
    prod = logs.read_table("portfolio/statistics")["pnl"].to_numpy()
    res = research["portfolio/statistics"]["pnl"].to_numpy()
    assert np.corrcoef(prod, res)[0, 1] < 0.999


def test_reconciliation_summary(simulated_day, candles, tmp_path):
    """The summary of a 100%-fill simulation says reconciled; a corrupted run says where it diverges."""
    import shutil

    from prod_system.analysis.reconciliation import reconcile

    config, log_dir = simulated_day
    store = CandleStore(candles, config.universe)
    summary = reconcile(config, LogDir(log_dir), store).summary
    assert summary.reconciled and summary.pnl_correlation >= 0.999
    assert summary.max_abs_pnl_diff < 1.0 and summary.first_divergence is None
    corrupted = tmp_path / "corrupted"
    shutil.copytree(log_dir, corrupted)
    holdings = LogDir(corrupted).read_table("portfolio/holdings_notional")
    bar = config.start + pd.Timedelta(hours=3)
    holdings.loc[(holdings["bar_end"] >= bar) & (holdings["asset"] == "ETH"), "notional"] += 9_000.0
    first_bar = config.start + config.bar_delta
    LogDir(corrupted).write_table("portfolio/holdings_notional", holdings, first_bar)  # replaces the part
    bad = reconcile(config, LogDir(corrupted), store).summary
    assert bad.first_divergence == {"bar_end": bar.isoformat(), "asset": "ETH", "what": "holdings"}


def test_reconciliation_refuses_duplicated_rows(simulated_day, candles, tmp_path):
    """A log dir holding a bar twice (two parts overlapping) is an error, not a silent pick."""
    import shutil

    from prod_system.analysis.reconciliation import reconcile
    from prod_system.errors import ReconciliationError

    config, log_dir = simulated_day
    corrupted = tmp_path / "duplicated"
    shutil.copytree(log_dir, corrupted)
    pnl = LogDir(corrupted).read_table("portfolio/pnl")
    LogDir(corrupted).write_table("portfolio/pnl", pnl.head(16), config.start)  # a second, overlapping part
    with pytest.raises(ReconciliationError, match="recorded more than once"):
        reconcile(config, LogDir(corrupted), CandleStore(candles, config.universe))


def test_flat_and_identical_sides_reconcile_without_a_correlation():
    """A session's opening bars where nothing traded: both per-bar PnLs are 0, the correlation is
    undefined, yet production and research agree exactly; any difference on such bars does not."""
    from prod_system.analysis.reconciliation import ReconciliationSummary

    flat = dict(pnl_correlation=np.nan, cumulative_pnl_prod=0.0, cumulative_pnl_research=0.0)
    flat |= dict(gross_volume_prod=0.0, first_divergence=None, bars=2)
    same = ReconciliationSummary(max_abs_pnl_diff=0.0, **flat)
    assert same.reconciled and same.verdict().startswith("reconciled: identical per-bar pnl over 2 bars")
    # a difference beyond the bound's floor (1 USDT: nothing traded, no gross pnl to scale it) does not
    off = ReconciliationSummary(max_abs_pnl_diff=1.5, **{**flat, "cumulative_pnl_prod": 1.5})
    assert not off.reconciled and off.verdict().startswith("NOT reconciled")
