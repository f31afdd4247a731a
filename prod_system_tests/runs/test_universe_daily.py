"""A top:N ranked again each session day within a simulation (universe_each_day): each day's list is
ranked at the day's start on what was known then; the run trades the union of the lists, and an asset
outside its day's list gets a zero target that day (core simulation and historical simulation alike)."""

from __future__ import annotations

import pandas as pd
import pytest

from prod_system.data.market_data import write_snapshot
from prod_system.data.universe import resolve_config
from prod_system.errors import ConfigError
from prod_system.log_dir import LogDir
from prod_system.runs.historical import historical_dir, historical_pnl
from prod_system.runs.simulate import simulate
from prod_system_tests.kit.data import sim_config

DAY1, DAY2 = pd.Timestamp("2023-07-21", tz="UTC"), pd.Timestamp("2023-07-22", tz="UTC")


@pytest.fixture(scope="module")
def daily_config(tmp_path_factory, candles):
    """Two days of C1b over a snapshot where DOT's volume explodes from the first day on: ranked at
    each day's start, DOT is out of the first day's top 3 and leads the second's."""
    root = tmp_path_factory.mktemp("daily")
    data = candles.copy()
    data.loc[(data["asset"] == "DOT") & (data["bar_start"] >= DAY1), "volume"] *= 1e6
    path = write_snapshot(data, root / "s.parquet")
    config = sim_config(path, root, end="2023-07-23T00:00:00Z", universe_each_day=True)
    return resolve_config(config, "top:3/1d")


def test_each_day_is_ranked_at_its_start_and_the_run_trades_the_union(daily_config):
    by_day = daily_config.universe_by_day
    assert list(by_day) == ["2023-07-21", "2023-07-22", "2023-07-23"]  # the bar ending at 00:00 of the 23rd
    assert "DOT" not in by_day["2023-07-21"] and by_day["2023-07-22"][0] == "DOT"
    assert daily_config.universe == list(dict.fromkeys(a for day in by_day.values() for a in day))
    assert daily_config.universe_rule == "top:3/1d" and "universe_each_day: true" in daily_config.to_yaml()


def test_an_asset_outside_its_days_list_gets_a_zero_target(daily_config):
    summary = simulate(daily_config)
    targets = LogDir(summary.log_dir).read_table("target_positions")
    dot = targets[targets["asset"] == "DOT"].set_index("bar_end")["target_shares"]
    first_day = dot[(dot.index > DAY1) & (dot.index < DAY2)]
    assert (first_day.dropna() == 0).all() and first_day.notna().mean() > 0.9
    assert (dot[dot.index >= DAY2].abs() > 0).any()
    out_on_day_two = [
        a for a in daily_config.universe_by_day["2023-07-21"] if a not in daily_config.universe_by_day["2023-07-22"]
    ]
    for asset in out_on_day_two:
        later = targets[(targets["asset"] == asset) & (targets["bar_end"] >= DAY2)]["target_shares"]
        assert (later.dropna() == 0).all()
    research = historical_pnl(daily_config, overwrite=True)
    predictions = LogDir(historical_dir(daily_config)).read_table("predictions")
    dot_first = predictions[(predictions["asset"] == "DOT") & (predictions["bar_end"] < DAY2)]["prediction"]
    assert (dot_first == 0).all() and research.statistics is not None


def test_universe_each_day_needs_a_top_n_of_a_simulation(tmp_path, candles):
    path = write_snapshot(candles[candles["asset"].isin(["BTC", "ETH"])], tmp_path / "s.parquet")
    daily = sim_config(path, tmp_path, universe_each_day=True)
    for spec in ("BTC", "all", None):
        with pytest.raises(ConfigError, match="field 'universe_each_day': it ranks a top:N universe again each day"):
            resolve_config(daily, spec)
    live = sim_config(path, tmp_path, universe_each_day=True, run_mode="paper_trading")
    with pytest.raises(ConfigError, match="field 'universe_each_day': a live session ranks its top:N at its own start"):
        resolve_config(live, "top:1")
