"""Bad config and bad input files: every malformed field or file gives one clear error naming it, and
nothing is written.

Each case writes a config FILE (a valid day of C1b on the bundled candles, every field written out, with
one field made malformed) and runs ``prod-system simulate --config FILE --root ROOT`` in process (click's
runner). The bad CLI options are in test_cli.py; these are about the config file and the input files.
A new config field without a case here fails ``test_every_config_field_has_a_case``.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
from pathlib import Path
from typing import get_args, get_origin

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner, Result
from pydantic import BaseModel

from prod_system import cli as cli_module
from prod_system.config import SystemConfig, build_config
from prod_system.data import BUNDLED_CANDLES
from prod_system.data.market_data import SNAPSHOT_COLUMNS

DELETE = object()  # the field is left out of the file
ASSET = "BTC"  # the key that stands for '*' (any asset) in a field's dotted name
ENV = {"PROD_SYSTEM_DEBUG": None, "DAGSTER_HOME": None}  # a run that got through would write under ROOT


def base_config() -> dict:
    """A valid config of one day (2023-07-21) of C1b on the bundled candles, with every field written out."""
    minimal = {
        "model": "C1b",
        "start": "2023-07-21T00:00:00Z",
        "end": "2023-07-22T00:00:00Z",
        "market_data": {"source": f"csv:{BUNDLED_CANDLES}"},
        "portfolio": {"instruments": {ASSET: {"lot_size": 0.001, "min_notional": 5.0}}},
    }
    return yaml.safe_load(build_config(minimal).to_yaml())


def config_fields(model: type[BaseModel] = SystemConfig, prefix: str = "") -> set[str]:
    """The dotted names of every field of the config, nested sections and their fields included
    ('*' for a key of a mapping, e.g. portfolio.instruments.*.lot_size)."""
    names = set()
    for name, info in model.model_fields.items():
        names.add(prefix + name)
        for suffix, inner in _models_in(info.annotation):
            names |= config_fields(inner, f"{prefix}{name}{suffix}.")
    return names


def _models_in(annotation) -> list[tuple[str, type[BaseModel]]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [("", annotation)]
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is dict:
        return [(".*" + suffix, inner) for suffix, inner in _models_in(args[1])]
    if origin in (list, tuple, set, frozenset):
        return [(".*" + suffix, inner) for arg in args for suffix, inner in _models_in(arg)]
    return [found for arg in args for found in _models_in(arg)]  # unions, Optional


# (field, malformed value written there, what is wrong[, the name the error must give when not the field's])
FIELD_CASES = [
    ("model", 5, "a number"),
    ("model", "C9z", "unknown model"),
    ("model", DELETE, "missing"),
    ("model_params", ["vol_window", 48], "a list, not a mapping"),
    ("model_params", {"no_such_param": 1}, "unknown parameter"),
    ("universe", "BTC,ETH", "a string, not a list"),
    ("universe", [], "empty"),
    ("universe", ["BTC", "BTC-PERP"], "not alphanumeric"),
    ("universe", ["BTC", "PEPE"], "no lot size for an asset"),
    ("universe_rule", "top:0", "no assets"),
    ("universe_rule", "top:x", "not a number of assets"),
    ("universe_rule", "top:3/a week", "bad window"),
    ("universe_rule", "BTC,ETH", "a list, not a rule"),
    ("universe_rule", ["all"], "a list, not a string"),
    ("universe_each_day", True, "without a top:N rule"),
    ("universe_each_day", "sometimes", "not a boolean"),
    ("universe_by_day", ["BTC"], "a list, not a mapping"),
    ("universe_by_day", {"2023-07-21": ["PEPE"]}, "an asset outside the universe"),
    ("universe_by_day", {"Friday": ["BTC"]}, "not a day"),
    ("bar", 5, "a number without a unit"),
    ("bar", "5 minutes", "bad duration"),
    ("bar", "90s", "not whole minutes"),
    ("bar", "99999999999d", "out of range"),
    ("run_mode", "backtest", "unknown enum value"),
    ("trigger", "cron", "unknown enum value"),
    ("start", "2023-07-21T00:00:00", "naive timestamp"),
    ("start", datetime.datetime(2023, 7, 21), "naive YAML timestamp"),
    ("start", "yesterday", "not a timestamp"),
    ("start", [2023, 7, 21], "a list"),
    ("start", "2023-07-21T00:03:00Z", "not on a bar boundary"),
    ("end", datetime.date(2023, 7, 22), "a date without a zone"),
    ("end", "2023-07-20T00:00:00Z", "before start"),
    ("market_data", "csv:candles", "a string, not a section"),
    ("market_data.source", 5, "a number"),
    ("market_data.source", "s3://bucket/candles", "unknown kind of source"),
    ("market_data.source", DELETE, "missing"),
    ("market_data.knowledge_delay", 10, "a number without a unit"),
    ("market_data.knowledge_delay", "ten seconds", "bad duration"),
    ("market_data.knowledge_delay", "99999999999d", "out of range"),
    ("market_data.max_jump", 0, "not positive"),
    ("market_data.max_jump", float("inf"), "infinite"),
    ("market_data.max_jump", "half", "not a number"),
    ("market_data.delisted_after", "0m", "not positive"),
    ("market_data.delisted_after", "1 hour", "bad duration"),
    ("market_data.instruments", ["rules.json"], "a list, not a file path"),
    ("portfolio", ["BTC"], "a list, not a section"),
    ("portfolio.initial_cash", 0, "not positive"),
    ("portfolio.initial_cash", "a million", "not a number"),
    ("portfolio.initial_cash", float("inf"), "infinite"),
    ("portfolio.target_gmv", "100k", "not a number"),
    ("portfolio.target_gmv", float("nan"), "not a number (NaN)"),
    ("portfolio.max_notional_per_asset", 0, "not positive"),
    ("portfolio.instruments", ["BTC"], "a list, not a mapping"),
    ("portfolio.instruments", {ASSET: 0.001}, "an entry that is not a mapping", f"portfolio.instruments.{ASSET}"),
    ("portfolio.instruments.*.lot_size", 0, "not positive"),
    ("portfolio.instruments.*.lot_size", "0.001 BTC", "not a number"),
    ("portfolio.instruments.*.lot_size", DELETE, "missing"),
    ("portfolio.instruments.*.min_notional", -5, "negative"),
    ("broker", "mocked", "a string, not a section"),
    ("broker.kind", "binance", "unknown enum value"),
    ("broker.exchange_url", 8765, "a number, not a URL"),
    ("broker.api_key_env", "sk-live-123", "a key, not a variable name"),
    ("broker.api_secret_env", "", "empty"),
    ("broker.execution", "limit", "unknown enum value"),
    ("broker.twap_waves", 0, "below range"),
    ("broker.twap_waves", 2.5, "not an integer"),
    ("broker.timeout_seconds", 121, "above range"),
    ("broker.max_attempts", 21, "above range"),
    ("broker.backoff_seconds", -1, "negative"),
    ("broker.concurrency", 0, "below range"),
    ("broker.on_mismatch", "ignore", "unknown enum value"),
    ("broker.statement_every_bars", 0, "below range"),
    ("broker.check_every_bars", -1, "negative"),
    ("broker.check_every_bars", "hourly", "not a number"),
    ("risk", 5, "a number, not a section"),
    ("risk.max_notional_per_asset", 0, "not positive"),
    ("risk.max_gross_notional", "lots", "not a number"),
    ("risk.max_order_notional", -1, "negative"),
    ("risk.kill_switch_file", ["STOP"], "a list, not a path"),
    ("risk.margin_ratio_alert", 1.5, "above range (liquidation at 1)"),
    ("risk.margin_ratio_alert", 0, "not positive"),
    ("live", "fast", "a string, not a section"),
    ("live.data_timeout_seconds", 3601, "above range"),
    ("live.on_missing", "wait", "unknown enum value"),
    ("live.poll_seconds", 0, "not positive"),
    ("costs", 0.0005, "a number, not a section"),
    ("costs.fees", "binance", "a string, not a section"),
    ("costs.fees.taker", -1, "negative"),
    ("costs.fees.taker", "5bps", "not a number"),
    ("costs.fees.maker", 0.02, "above range"),
    ("costs.funding", ["data"], "a list, not a section"),
    ("costs.funding.mode", "maybe", "unknown mode"),
    ("costs.funding.assumed_rate", 0.5, "above range"),
    ("costs.funding.interval", "5h", "not dividing a day"),
    ("costs.funding.interval", "30m", "under an hour"),
    ("costs.funding.interval", 8, "a number without a unit"),
    ("costs.slippage", True, "a boolean, not a section"),
    ("costs.slippage.half_spread_bps", -1, "negative"),
    ("costs.slippage.impact_bps_per_million", "high", "not a number"),
    ("observer", True, "a boolean, not a section"),
    ("observer.notebook", "sometimes", "not a boolean"),
    ("observer.show_input", "code", "not a boolean"),
    ("observer.min_balance", "low", "not a number"),
    ("observer.min_cumulative_pnl", float("nan"), "not a number (NaN): it would never alert"),
    ("observer.min_pnl_over_gmv", "-2%", "not a number"),
    ("alerts", "slack", "a string, not a section"),
    ("alerts.urls_env", "json://hooks.example/alerts", "a URL, not a variable name: URLs live in the environment"),
    ("alerts.repeat_after_minutes", -1, "negative"),
    ("log_root", ["runs"], "a list, not a path"),
    ("profile_memory", "sometimes", "not a boolean"),
]


def listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def names(line: str, name: str) -> bool:
    """``line`` names ``name`` as a whole: 'model' is not named by 'model_params', nor 'market_data' by
    'market_data.source'."""
    return re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", line) is not None


def simulate(config: str) -> Result:
    return CliRunner().invoke(cli_module.main, ["simulate", "--config", config, "--root", "root"], env=ENV)


def assert_one_clear_error(done: Result, name: str) -> None:
    assert done.exit_code == 2, done.output
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception  # nothing escaped
    assert "Traceback" not in done.output
    lines = done.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    hints = [line for line in lines if line.startswith("hint:")]
    assert len(errors) == 1, done.stderr
    assert names(errors[0], name), f"the error does not name {name!r}: {errors[0]}"
    assert len(hints) == 1 and lines.index(hints[0]) == lines.index(errors[0]) + 1, done.stderr


def write_yaml(path: Path, data) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_every_config_field_has_a_case():
    fields = config_fields()
    assert {"market_data.source", "broker.on_mismatch", "portfolio.instruments.*.lot_size"} <= fields  # the walk
    assert {case[0] for case in FIELD_CASES} == fields


def test_the_base_config_writes_every_field_and_runs(tmp_path, monkeypatch):
    """Each case changes one field of a config that is otherwise complete and good."""

    def written(data: dict, prefix: str = "") -> set[str]:
        found = set()
        for key, value in data.items():
            if prefix == "portfolio.instruments.":  # a mapping of assets: its entries' fields are the fields
                found |= written(value, prefix + "*.")
                continue
            found.add(prefix + key)
            if isinstance(value, dict) and key != "model_params":
                found |= written(value, f"{prefix}{key}.")
        return found

    assert written(base_config()) == config_fields()
    monkeypatch.chdir(tmp_path)
    write_yaml(tmp_path / "system.yaml", base_config())
    done = simulate("system.yaml")
    assert done.exit_code == 0, done.output
    assert "bars:        288" in done.stdout


@pytest.mark.parametrize("case", FIELD_CASES, ids=[f"{case[0]}-{case[2]}".replace(" ", "_") for case in FIELD_CASES])
def test_a_malformed_field_is_one_clear_error_naming_it(tmp_path, monkeypatch, case):
    field, value, _ = case[:3]
    path = field.replace("*", ASSET)
    data = base_config()
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    monkeypatch.chdir(tmp_path)
    write_yaml(tmp_path / "system.yaml", data)
    before = listing(tmp_path)
    done = simulate("system.yaml")
    assert_one_clear_error(done, case[3] if len(case) > 3 else path)
    assert listing(tmp_path) == before  # nothing written, under ROOT or anywhere


# ---------------------------------------------------------------------------------------------
# Bad input files: the config file itself, and the market data it points to
# ---------------------------------------------------------------------------------------------


def _with_source(tmp_path: Path, source: str) -> None:
    data = base_config()
    data["market_data"]["source"] = source
    write_yaml(tmp_path / "system.yaml", data)


def _csv_dir(tmp_path: Path, skip: str | None = None) -> Path:
    folder = tmp_path / "candles"
    folder.mkdir()
    for file in BUNDLED_CANDLES.glob("*_USDT.csv.gz"):
        if not file.name.startswith(f"{skip}_"):
            shutil.copy(file, folder)
    _with_source(tmp_path, "csv:candles")
    return folder


def config_not_yaml(tmp_path):
    text = yaml.safe_dump(base_config(), sort_keys=False)
    (tmp_path / "system.yaml").write_text(text + "extra:\n\tindented: with a tab\n")


def config_not_text(tmp_path):
    (tmp_path / "system.yaml").write_bytes(b"\xff\xfe\x00\x81" + os.urandom(256))


def config_a_list(tmp_path):
    write_yaml(tmp_path / "system.yaml", [base_config()])


def config_empty(tmp_path):
    (tmp_path / "system.yaml").write_text("")


def config_unknown_top_level_field(tmp_path):
    write_yaml(tmp_path / "system.yaml", {**base_config(), "colour": "red"})


def config_missing(tmp_path):
    pass  # --config names a file that is not there


def parquet_corrupt(tmp_path):
    (tmp_path / "snap.parquet").write_bytes(os.urandom(4096))
    _with_source(tmp_path, "parquet:snap.parquet")


def parquet_missing_column(tmp_path):
    frame = pd.DataFrame(columns=[column for column in SNAPSHOT_COLUMNS if column != "close"])
    frame.to_parquet(tmp_path / "snap.parquet")
    _with_source(tmp_path, "parquet:snap.parquet")


def csv_dir_without_an_asset(tmp_path):
    _csv_dir(tmp_path, skip="DOT")


def csv_file_corrupt(tmp_path):
    (_csv_dir(tmp_path) / "DOT_USDT.csv.gz").write_bytes(os.urandom(512))


def csv_file_missing_column(tmp_path):
    path = _csv_dir(tmp_path) / "DOT_USDT.csv.gz"
    pd.read_csv(path).drop(columns=["volume"]).to_csv(path, index=False)


# (setup, the --config argument, the name the error must give)
FILE_CASES = [
    (config_not_yaml, "system.yaml", "system.yaml"),
    (config_not_text, "system.yaml", "system.yaml"),
    (config_a_list, "system.yaml", "system.yaml"),
    (config_empty, "system.yaml", "system.yaml"),
    (config_unknown_top_level_field, "system.yaml", "colour"),  # the field is the most precise name
    (config_missing, "missing.yaml", "missing.yaml"),
    (parquet_corrupt, "system.yaml", "snap.parquet"),
    (parquet_missing_column, "system.yaml", "snap.parquet"),
    (csv_dir_without_an_asset, "system.yaml", "DOT_USDT.csv.gz"),
    (csv_file_corrupt, "system.yaml", "DOT_USDT.csv.gz"),
    (csv_file_missing_column, "system.yaml", "DOT_USDT.csv.gz"),
]


@pytest.mark.parametrize(("setup", "config", "name"), FILE_CASES, ids=[case[0].__name__ for case in FILE_CASES])
def test_a_bad_input_file_is_one_clear_error_naming_it(tmp_path, monkeypatch, setup, config, name):
    monkeypatch.chdir(tmp_path)
    setup(tmp_path)
    before = listing(tmp_path)
    done = simulate(config)
    assert_one_clear_error(done, name)
    assert listing(tmp_path) == before
