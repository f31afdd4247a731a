"""Universes from the market data: 'all', 'top:N' as of the run's start (no look-ahead), the default
(the snapshot's assets), and bad specs as one clear error naming the field."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from prod_system.config import ARCHIVE_SOURCE, UniverseRule, parse_universe
from prod_system.data.instruments import SNAPSHOT_KEY, bundled_instruments
from prod_system.data.market_data import write_snapshot, write_snapshot_months
from prod_system.data.universe import file_assets, quote_volumes, resolve_config, top_assets
from prod_system.errors import ConfigError
from prod_system_tests.kit.archive import hour_of_candles, write_klines
from prod_system_tests.kit.data import sim_config

START = pd.Timestamp("2023-07-21", tz="UTC")
DAY = pd.Timedelta(days=1)


def exploded(candles: pd.DataFrame, asset: str, after: pd.Timestamp, factor: float = 1e6) -> pd.DataFrame:
    """``candles`` with ``asset``'s volume multiplied by ``factor`` on every candle opened at or after ``after``."""
    frame = candles.copy()
    rows = (frame["asset"] == asset) & (frame["bar_start"] >= after)
    frame.loc[rows, "volume"] *= factor
    return frame


def test_top_n_ranks_by_the_window_before_the_start_only(candles):
    """DOT trades the least of the bundled 8 before the start; its volume explodes from the start on.
    Ranked as of the start, it stays out; ranked a day later (the explosion inside the window), it leads."""
    rule = UniverseRule(3, DAY)
    before = quote_volumes(candles, START, DAY)
    assert "DOT" not in list(before.index[:3])
    data = exploded(candles, "DOT", START)
    assert top_assets(data, START, rule) == list(before.index[:3])  # nothing after the start counts
    later = top_assets(data, START + pd.Timedelta(hours=6), rule)
    assert later[0] == "DOT"


def test_a_candle_that_closes_at_the_start_but_is_known_after_it_does_not_count(candles):
    """The last minute before the start closes at the start, known 10 s later: not known at the start."""
    last_minute = START - pd.Timedelta(minutes=1)
    data = exploded(candles, "DOT", last_minute)
    assert "DOT" not in top_assets(data, START, UniverseRule(3, DAY))
    assert top_assets(data, START + pd.Timedelta(seconds=10), UniverseRule(3, DAY))[0] == "DOT"


def test_a_live_session_ranks_what_it_knows_when_it_begins_but_never_a_candle_after_its_start(candles):
    """A session ranks a few seconds into its first bar, on candles its ingestion just backfilled (known
    only then): those that closed by the start count; one of its own first bar never does."""
    backfilled = candles.assign(knowledge_ts=START + pd.Timedelta(seconds=20))
    data = exploded(backfilled, "DOT", START - pd.Timedelta(minutes=1))
    rule = UniverseRule(3, DAY)
    with pytest.raises(ConfigError, match="no candle known"):
        top_assets(data, START, rule)  # as of the start: nothing was recorded yet
    assert top_assets(data, START, rule, known_at=START + pd.Timedelta(seconds=30))[0] == "DOT"
    after = exploded(backfilled, "DOT", START)  # DOT's explosion in the session's first minute
    assert "DOT" not in top_assets(after, START, rule, known_at=START + pd.Timedelta(minutes=5))


def test_assets_without_a_candle_in_the_window_are_not_ranked_and_ties_go_by_name(candles):
    window = pd.Timedelta(hours=1)
    data = candles[~((candles["asset"] == "BTC") & (candles["bar_start"] >= START - window))].copy()
    assert "BTC" not in quote_volumes(data, START, window).index
    assert top_assets(data, START, UniverseRule(20, window)) == list(quote_volumes(data, START, window).index)
    tied = data.assign(volume=1.0, high=10.0, low=10.0, close=10.0, open=10.0)
    assert top_assets(tied, START, UniverseRule(3, window)) == ["BNB", "DOGE", "DOT"]


def test_top_n_without_any_candle_in_the_window_is_refused(candles):
    with pytest.raises(ConfigError, match=r"field 'universe': top:3/1d: no candle known at 2023-07-20 00:00"):
        top_assets(candles, pd.Timestamp("2023-07-20", tz="UTC"), UniverseRule(3, DAY))


def test_a_snapshot_resolves_top_n_and_records_the_rule(tmp_path, candles):
    """Through the config: the resolved list is the run's universe (its id), the rule is recorded."""
    path = write_snapshot(exploded(candles, "DOT", START), tmp_path / "s.parquet")
    config = resolve_config(sim_config(path, tmp_path), "top:3")
    assert "DOT" not in config.universe and len(config.universe) == 3
    assert config.universe_rule == "top:3/1d"
    assert "universe_rule: top:3/1d" in config.to_yaml()
    later = resolve_config(sim_config(path, tmp_path, start="2023-07-21T12:00:00Z"), "top:3/12h")
    assert later.universe[0] == "DOT"
    assert later.run_id != config.run_id


def test_all_and_the_default_are_the_snapshots_assets(tmp_path, candles, bundled_dir):
    three = candles[candles["asset"].isin(["SOL", "BTC", "ETH"])]
    path = write_snapshot(three, tmp_path / "three.parquet")
    assert file_assets(f"parquet:{path}") == ["BTC", "ETH", "SOL"]
    for spec in (None, "all"):
        config = resolve_config(sim_config(path, tmp_path), spec)
        assert (config.universe, config.universe_rule) == (["BTC", "ETH", "SOL"], "all")
    bundled = resolve_config(sim_config(path, tmp_path, market_data={"source": f"csv:{bundled_dir}"}))
    assert sorted(bundled.universe) == bundled.universe and len(bundled.universe) == 8
    listed = resolve_config(sim_config(path, tmp_path), "eth,btc")
    assert (listed.universe, listed.universe_rule) == (["ETH", "BTC"], None)
    in_the_file = resolve_config(sim_config(path, tmp_path, universe=["SOL"]))
    assert (in_the_file.universe, in_the_file.universe_rule) == (["SOL"], None)  # a listed universe stays


def test_all_leaves_out_what_the_instruments_table_says_is_not_trading_at_the_start(tmp_path, candles):
    """SOL is settling (delisted) in a table fetched before the start; ETH was onboarded after it. A
    table fetched after the start says nothing of SOL's status then (leaving it out: survivorship)."""
    three = candles[candles["asset"].isin(["BTC", "ETH", "SOL"])]

    def snapshot_with(fetched_at: str) -> str:
        table = bundled_instruments()
        rules = dict(table.rules)
        rules["SOL"] = replace(rules["SOL"], status="SETTLING")
        rules["ETH"] = replace(rules["ETH"], onboard_date=pd.Timestamp("2023-07-21T06:00:00Z"))
        table = replace(table, rules=rules, fetched_at=pd.Timestamp(fetched_at))
        path = tmp_path / f"{fetched_at[:10]}.parquet"
        return write_snapshot(three, path, metadata={SNAPSHOT_KEY: table.to_json()})

    before = resolve_config(sim_config(snapshot_with("2023-07-20T00:00:00Z"), tmp_path), "all")
    assert before.universe == ["BTC"]
    after = resolve_config(sim_config(snapshot_with("2023-08-01T00:00:00Z"), tmp_path))
    assert after.universe == ["BTC", "SOL"]
    assert resolve_config(sim_config(snapshot_with("2023-07-20T00:00:00Z"), tmp_path), "SOL").universe == ["SOL"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("top:0", "field 'universe': 'top:0': top:N takes a whole number of assets N >= 1"),
        ("top:x", "field 'universe': 'top:x': top:N takes a whole number"),
        ("top:3/soon", "field 'universe': 'top:3/soon': the window of top:N: invalid duration 'soon'"),
        ("top:3/30s", "field 'universe': 'top:3/30s': the window of top:N is a whole number of minutes"),
        (",", "field 'universe': ',': give assets"),
        ("BTC,XRP", "field 'universe': XRP not in the market data"),
        ("BTC,B-T", "field 'universe': asset names must be alphanumeric"),
    ],
)
def test_a_bad_spec_is_one_error_naming_the_field(tmp_path, candles, spec, message):
    path = write_snapshot(candles[candles["asset"].isin(["BTC", "ETH"])], tmp_path / "s.parquet")
    with pytest.raises(ConfigError) as raised:
        resolve_config(sim_config(path, tmp_path), spec)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_all_with_a_database_is_refused_and_a_rule_in_the_config_names_its_field(tmp_path, candles):
    database = sim_config(tmp_path / "x.parquet", tmp_path, market_data={"source": "sqlite:///market.db"})
    with pytest.raises(ConfigError, match="field 'universe': 'all' needs a snapshot file"):
        resolve_config(database, "all")
    assert resolve_config(database).universe == database.universe  # the bundled list, as live sessions
    path = write_snapshot(candles, tmp_path / "s.parquet")
    early = sim_config(path, tmp_path, start="2023-07-20T00:00:00Z", end="2023-07-21T00:00:00Z", universe_rule="top:2")
    with pytest.raises(ConfigError, match="field 'universe_rule': top:2/1d: no candle known"):
        resolve_config(early)


def test_parse_universe_spells_rules_one_way():
    assert parse_universe(" all ") == UniverseRule()
    assert str(parse_universe("TOP:5")) == "top:5/1d"
    assert str(parse_universe("top:5/168h")) == "top:5/7d"
    assert parse_universe("btc, eth") == ["BTC", "ETH"]


def test_a_partitioned_snapshot_and_an_archive_folder_resolve_like_a_file(tmp_path, candles):
    months = write_snapshot_months([candles[candles["asset"].isin(["BTC", "DOT"])]], tmp_path / "months")
    assert file_assets(f"parquet:{months}") == ["BTC", "DOT"]
    config = resolve_config(sim_config(months, tmp_path), "top:1/6h")
    assert config.universe == ["BTC"]
    archive = tmp_path / "archive"
    hour = hour_of_candles("2023-07-20T23:00:00Z")
    write_klines(archive, "BTCUSDT", "1m", "2023-07-20", hour)
    write_klines(archive, "ETHUSDT", "1m", "2023-07-20", hour.assign(volume=hour["volume"] * 2))
    source = f"{ARCHIVE_SOURCE}:{archive}"
    assert file_assets(source) == ["BTC", "ETH"]
    at_the_start = sim_config(months, tmp_path, market_data={"source": source})
    assert resolve_config(at_the_start, "top:1/1h").universe == ["ETH"]
