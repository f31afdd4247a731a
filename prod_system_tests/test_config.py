"""The system config: validation errors name the field; YAML round trip; CLI overrides."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from prod_system.config import build_config, load_config
from prod_system.errors import ConfigError

BASE = {
    "model": "C1b",
    "start": "2023-07-21T00:00:00Z",
    "end": "2023-07-22T00:00:00Z",
    "market_data": {"source": "parquet:snap.parquet"},
}


def with_(**changes):
    data = {**BASE, **changes}
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (with_(colour="red"), "field 'colour': unknown field"),
        (with_(bar="7x"), "field 'bar'"),
        (with_(bar="30s"), "field 'bar'"),
        (with_(start="2023-07-21T00:03:00Z"), "not aligned"),
        (with_(start="2023-07-21T00:00:00"), "field 'start'"),
        (with_(end="2023-07-20T00:00:00Z"), "must be after start"),
        (with_(run_mode="live"), "field 'run_mode'"),
        (with_(market_data={"source": "x.parquet", "knowledge_delay": "-5s"}), "field 'market_data.knowledge_delay'"),
        (with_(market_data={"source": "x.parquet", "delay": "5s"}), "field 'market_data.delay': unknown field"),
        (with_(portfolio={"target_gmv": -1}), "field 'portfolio.target_gmv'"),
        (with_(universe=["BTC", "BTC"]), "field 'universe'"),
        (with_(model=None), "field 'model'"),
    ],
)
def test_bad_config_names_the_field(data, field):
    with pytest.raises(ConfigError) as error:
        build_config(data)
    assert field in str(error.value)
    assert str(error.value).startswith("invalid system config")


def test_yaml_round_trip_and_overrides(tmp_path):
    path = tmp_path / "system.yaml"
    path.write_text(yaml.safe_dump(BASE))
    config = load_config(path, bar="1m", log_root=str(tmp_path / "out"), model=None)
    assert config.bar == "1m" and config.model == "C1b"  # None = option not given
    again = tmp_path / "saved.yaml"
    again.write_text(config.to_yaml())
    assert load_config(again) == config
    assert config.start == pd.Timestamp("2023-07-21", tz="UTC")


def test_log_dir_layout_and_run_id():
    config = build_config(with_(trigger="scheduled"), log_root="ROOT")
    assert str(config.log_dir()) == ("ROOT/C1b/simulation/scheduled/20230721_000000.20230722_000000/system_log_dir")
    assert config.run_id == build_config(with_(trigger="scheduled"), log_root="elsewhere").run_id
    assert config.run_id != build_config(with_(), log_root="ROOT").run_id


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: [C1b\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


LOCAL, REMOTE = "http://127.0.0.1:8765", "https://fapi.binance.com"


@pytest.mark.parametrize(
    ("mode", "broker", "outcome"),
    [
        ("simulation", None, "mocked"),
        ("simulation", {"kind": "mocked"}, "mocked"),
        ("simulation", {"kind": "ccxt", "exchange_url": LOCAL}, "ccxt"),  # the replay on the local exchange
        ("simulation", {"kind": "ccxt", "exchange_url": "http://localhost:8765"}, "ccxt"),
        ("simulation", {"kind": "ccxt"}, "a simulation never trades on a real exchange"),
        ("simulation", {"kind": "ccxt", "exchange_url": REMOTE}, "a simulation never trades on a real exchange"),
        ("simulation", {"kind": "ccxt", "exchange_url": "http://10.0.0.5:8765"}, "never trades on a real exchange"),
        ("paper_trading", None, "mocked"),
        ("paper_trading", {"kind": "mocked", "exchange_url": LOCAL}, "mocked"),
        ("paper_trading", {"kind": "ccxt"}, "paper_trading never sends orders"),
        ("paper_trading", {"kind": "ccxt", "exchange_url": LOCAL}, "paper_trading never sends orders"),
        ("paper_trading", {"kind": "ccxt", "exchange_url": REMOTE}, "paper_trading never sends orders"),
        ("prod", None, "ccxt"),
        ("prod", {"exchange_url": LOCAL}, "ccxt"),
        ("prod", {"kind": "ccxt", "exchange_url": REMOTE}, "ccxt"),
        ("prod", {"kind": "mocked"}, "prod trades through ccxt"),
    ],
)
def test_the_run_mode_decides_the_broker(mode, broker, outcome):
    """Every combination of run mode and broker: a typo in the broker section cannot make paper trading
    (or a simulation) send real orders, nor prod fill on the mocked broker."""
    data = with_(run_mode=mode, broker=broker)
    if outcome in ("mocked", "ccxt"):
        assert build_config(data).broker.kind == outcome
        return
    with pytest.raises(ConfigError) as error:
        build_config(data)
    message = str(error.value)
    assert outcome in message and "field 'broker'" in message and "\n" not in message


def test_paper_trading_with_a_ccxt_broker_is_refused_by_the_cli(tmp_path):
    """`prod-system run --mode paper_trading` with `broker.kind: ccxt` in its config: one error line, exit 2,
    before any connection or file."""
    from click.testing import CliRunner

    from prod_system.cli import main

    config = tmp_path / "paper.yaml"
    config.write_text(yaml.safe_dump({"model": "C1b", "broker": {"kind": "ccxt", "exchange_url": REMOTE}}))
    root = tmp_path / "runs"
    result = CliRunner().invoke(main, ["run", "--config", str(config), "--mode", "paper_trading", "--root", str(root)])
    assert result.exit_code == 2, result.output
    assert "paper_trading never sends orders" in result.output
    assert not any(root.rglob("system_config.yaml"))


@pytest.mark.parametrize(
    "source", ["binance-archive:downloads", "parquet:long.parquet", "long.parquet", "csv:candles", "sqlite:///m.db"]
)
def test_every_kind_of_market_data_source_is_accepted(source):
    assert build_config(with_(market_data={"source": source})).market_data.source == source
