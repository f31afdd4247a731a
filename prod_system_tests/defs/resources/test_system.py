"""The system resource's universe: a simulation over a file defaults to the file's assets; a rule is
resolved as of the run's start; a live session's top:N is evaluated again at each day's start, from
the market database's candles before that day."""

from __future__ import annotations

import json

import pandas as pd

from prod_system.cli.launch import resources_for
from prod_system.data.market_data import write_snapshot
from prod_system.data.market_db import MarketDatabase
from prod_system.data.universe import resolve_config
from prod_system.defs.resources import BrokerResource, LogDirResource, MarketDataResource, SystemResource
from prod_system.defs.resources.live import LiveResource
from prod_system.log_dir import LogDir
from prod_system_tests.kit.data import sim_config

DAY = pd.Timestamp("2023-07-21", tz="UTC")


def config_of(system: SystemResource, source: str, root) -> object:
    return system.config_for(
        "C1b",
        "simulation",
        DAY,
        DAY + pd.Timedelta(days=1),
        "manual",
        MarketDataResource(source=source),
        BrokerResource(kind="mocked"),
        LogDirResource(root=str(root)),
    )


def test_a_simulation_trades_the_files_assets_unless_told(tmp_path, candles):
    path = write_snapshot(candles[candles["asset"].isin(["SOL", "ETH", "BTC"])], tmp_path / "three.parquet")
    source = f"parquet:{path}"
    default = config_of(SystemResource(), source, tmp_path)
    assert (default.universe, default.universe_rule) == (["BTC", "ETH", "SOL"], "all")
    top = config_of(SystemResource(universe_rule="top:2/6h"), source, tmp_path)
    assert len(top.universe) == 2 and top.universe_rule == "top:2/6h"
    # what the CLI passes: the list its rule resolved to, kept as it is (every step trades the same list)
    passed = config_of(SystemResource(universe=["SOL"], universe_rule="top:2/6h"), source, tmp_path)
    assert (passed.universe, passed.universe_rule) == (["SOL"], "top:2/6h")


def test_a_live_top_n_is_evaluated_again_at_each_days_start(tmp_path, candles):
    """DOT's volume explodes from 2023-07-21 00:00: the session of the 21st (ranked on the 12 hours
    before it) leaves it out, the session of the 22nd (ranked on the 21st) trades it."""
    assets = ["BTC", "ETH", "SOL", "DOT"]
    rows = candles[candles["asset"].isin(assets)].copy()
    rows.loc[(rows["asset"] == "DOT") & (rows["bar_start"] >= DAY), "volume"] *= 1e6
    url = f"sqlite:///{tmp_path / 'market.db'}"
    database = MarketDatabase(url)
    try:
        for hour, chunk in rows.groupby(rows["bar_start"].dt.floor("1h")):
            database.upsert(chunk, hour + pd.Timedelta(hours=1, seconds=10))  # each hour known as it closed
    finally:
        database.close()
    live = LiveResource(database=url, bar="5m", exchange_url=None)
    system = SystemResource(universe=assets, universe_rule="top:2/12h")
    first = live.session_config(system, str(tmp_path), "C1b", "paper_trading", DAY)
    second = live.session_config(system, str(tmp_path), "C1b", "paper_trading", DAY + pd.Timedelta(days=1))
    assert "DOT" not in first.universe and len(first.universe) == 2
    assert second.universe[0] == "DOT"
    assert first.universe_rule == second.universe_rule == "top:2/12h"
    assert system.listed(url) == assets  # what the ingestion records: the ranked candidates
    # the first day's session ends holding an asset the second day's ranking leaves out: it stays traded
    # (the carried-over state keeps only the universe's assets: dropped, it would vanish from the portfolio)
    dropped = next(asset for asset in first.universe if asset not in second.universe)
    state = {"shares": {dropped: 2.0, "DOT": 0.0}, "notional": {}, "cash": 1.0, "open_orders": [], "bar_end": None}
    LogDir(LogDir.for_config(first).path).write_text("state.json", json.dumps(state))
    kept = live.session_config(system, str(tmp_path), "C1b", "paper_trading", DAY + pd.Timedelta(days=1))
    assert kept.universe == [*second.universe, dropped]
    listed = live.session_config(SystemResource(universe=assets), str(tmp_path), "C1b", "paper_trading", DAY)
    assert listed.universe == assets  # a listed universe is left as it is


def test_the_cli_passes_a_daily_universe_to_every_step(tmp_path, candles):
    """What `simulate --universe top:3 --universe-each-day` resolved reaches the assets' configs as it is."""
    path = write_snapshot(candles, tmp_path / "s.parquet")
    config = sim_config(path, tmp_path, end="2023-07-23T00:00:00Z", universe_each_day=True)
    resolved = resolve_config(config, "top:3/1d")
    resources = resources_for(resolved)
    stepped = resources["system"].config_for(
        "C1b", "simulation", resolved.start, resolved.end, "manual", resources["market_data"],
        resources["broker"], resources["log_dir"],
    )  # fmt: skip
    assert stepped.universe_by_day == resolved.universe_by_day and stepped.universe == resolved.universe
    assert stepped.universe_each_day and stepped.universe_rule == "top:3/1d"
