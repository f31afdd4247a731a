"""`prod-system instruments` as a person runs it, offline: exchange-sim serves a rules file, the command
fetches it through ccxt into a file equal to it, and that file makes a simulation (and a snapshot) of
assets the package does not ship; without it, every command refuses those assets in one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from prod_system.data.instruments import LOG_DIR_FILE, SNAPSHOT_KEY, parse_instruments, read_instruments
from prod_system.data.market_data import read_snapshot_metadata, write_snapshot
from prod_system.log_dir import LogDir
from prod_system_tests.kit.cli import EXCHANGE_KEY, EXCHANGE_SECRET, cli, exchange_sim
from prod_system_tests.kit.instruments import OTHERS, other_candles, other_rules

WINDOW = ["--start", "2023-07-21T00:00:00Z", "--end", "2023-07-21T06:00:00Z"]
KEYS = {"TEST_RULES_KEY": EXCHANGE_KEY, "TEST_RULES_SECRET": EXCHANGE_SECRET}
KEY_OPTIONS = ["--api-key-env", "TEST_RULES_KEY", "--api-secret-env", "TEST_RULES_SECRET"]
NO_RULES = "no exchange rules for ['ADA', 'LTC', 'TRX']: fetch them with prod-system instruments"


@pytest.fixture(scope="module")
def others(tmp_path_factory, candles) -> Path:
    """A snapshot of ADA, LTC and TRX, without rules of its own."""
    return write_snapshot(other_candles(candles), tmp_path_factory.mktemp("others") / "others.parquet")


@pytest.fixture(scope="module")
def fetched(tmp_path_factory, others) -> Path:
    """The rules of ADA, LTC and TRX as `prod-system instruments` fetched them from exchange-sim."""
    folder = tmp_path_factory.mktemp("rules")
    served = other_rules().write(folder / "exchange_rules.json")
    with exchange_sim(others, "--instruments", str(served)) as url:
        done = cli("instruments", "--exchange-url", url, "--out", str(folder / "fetched.json"), *KEY_OPTIONS, env=KEYS)
    assert done.returncode == 0, done.stderr
    assert "wrote the rules of 3 instruments (brackets fetched)" in done.stdout
    assert EXCHANGE_SECRET not in done.stdout + done.stderr + (folder / "fetched.json").read_text()
    return folder / "fetched.json"


def _one_error(done) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    return errors[0]


def test_the_fetched_file_holds_the_rules_the_exchange_serves(fetched):
    table = read_instruments(fetched)
    assert table.rules == other_rules().rules  # filters, dates, precisions, each symbol's brackets: exact
    assert table.brackets == "fetched" and table.source.startswith("http://127.0.0.1:")
    assert table.fetched_at is not None


def test_exchange_sim_refuses_assets_it_has_no_rules_for(others):
    env = {"EXCHANGE_API_KEY": "k", "EXCHANGE_API_SECRET": "s"}
    done = cli("exchange-sim", "--market-data", str(others), "--port", "0", env=env)
    assert done.returncode == 2
    assert NO_RULES in _one_error(done)


def test_a_fetch_without_keys_writes_the_rules_and_says_the_brackets_were_not_fetched(tmp_path, others):
    with exchange_sim(others, "--instruments", str(other_rules().write(tmp_path / "served.json"))) as url:
        env = {"TEST_RULES_KEY": "", "TEST_RULES_SECRET": ""}
        done = cli("instruments", "--exchange-url", url, "--out", str(tmp_path / "x.json"), *KEY_OPTIONS, env=env)
    assert done.returncode == 0, done.stderr
    table = read_instruments(tmp_path / "x.json")
    assert table.brackets.startswith("not fetched: no API key in $TEST_RULES_KEY")
    assert all(rules.brackets is None for rules in table.rules.values())


@pytest.mark.parametrize(
    ("engine", "window"),
    [("core", WINDOW), ("dagster", ["--start", "2023-07-21T00:00:00Z", "--end", "2023-07-22T00:00:00Z"])],
)
def test_a_simulation_of_assets_not_shipped_runs_on_the_fetched_rules(tmp_path, others, fetched, engine, window):
    """Both engines: the Dagster one takes the file through its market-data resource."""
    simulate = ["simulate", "--engine", engine, "--model", "C1b", "--market-data", str(others), *window]
    refused = cli(*simulate, "--root", str(tmp_path / "refused"))
    assert refused.returncode == 2 and NO_RULES in _one_error(refused)
    assert not (tmp_path / "refused").exists()
    done = cli(*simulate, "--instruments", str(fetched), "--root", str(tmp_path))
    assert done.returncode == 0, done.stderr
    log_dir = next(tmp_path.glob("C1b/simulation/manual/*/system_log_dir"))
    traded_under = read_instruments(log_dir / LOG_DIR_FILE)  # what the run traded under
    assert traded_under.rules == read_instruments(fetched).rules
    assert all(origin.startswith("file:") for origin in traded_under.origins.values())
    config = yaml.safe_load((log_dir / "system_config.yaml").read_text())
    assert config["universe"] == OTHERS and config["market_data"]["instruments"] == str(fetched)
    assert {a: i["lot_size"] for a, i in config["portfolio"]["instruments"].items()} == {
        "ADA": 1.0,
        "LTC": 0.001,
        "TRX": 1.0,
    }
    orders = LogDir(log_dir).read_table("orders")
    assert set(orders["asset"]) == set(OTHERS)  # every asset traded
    steps = orders["asset"].map({"ADA": 1.0, "LTC": 0.001, "TRX": 1.0})
    lots = orders["quantity"] / steps
    assert (lots - lots.round()).abs().max() < 1e-6  # whole steps only: what Binance accepts
    assert (orders.loc[orders["asset"] == "ADA", "quantity"].abs() >= 1).all()


def test_a_snapshot_carries_its_rules_to_the_runs_on_it(tmp_path, others, fetched):
    out = tmp_path / "with_rules.parquet"
    dump = [
        *["dump-market-data", "--source", f"parquet:{others}", "--universe", ",".join(OTHERS)],
        *["--start", "2023-07-20T00:00:00Z", "--end", "2023-07-22T00:00:00Z", "--out", str(out)],
    ]
    bare = cli(*dump[:-1], str(tmp_path / "bare.parquet"))
    assert bare.returncode == 0 and "warning: no exchange rules for ['ADA', 'LTC', 'TRX']" in bare.stderr
    done = cli(*dump, "--instruments", str(fetched))
    assert done.returncode == 0, done.stderr
    embedded = parse_instruments(read_snapshot_metadata(out)[SNAPSHOT_KEY], "embedded")
    assert embedded.rules == read_instruments(fetched).rules
    historical = cli(
        *["historical-pnl", "--model", "C1b", "--market-data", str(out), *WINDOW, "--root", str(tmp_path / "runs")]
    )
    assert historical.returncode == 0, historical.stderr
    traded_under = json.loads(next((tmp_path / "runs").glob(f"C1b/historical_pnl/*/{LOG_DIR_FILE}")).read_text())
    assert {row["asset"] for row in traded_under["instruments"]} == set(OTHERS)
    assert all(origin.startswith("snapshot:") for origin in traded_under["origins"].values())
    assert pd.Timestamp(traded_under["fetched_at"]) == read_instruments(fetched).fetched_at


@pytest.mark.wall_clock
@pytest.mark.parametrize("mode", ["paper_trading", "prod"])
def test_a_rehearsal_of_assets_not_shipped_trades_on_the_fetched_rules(tmp_path, others, fetched, mode):
    """From the fetched file to a live session at 20x on exchange-sim (which serves the same rules): its
    bars traded (the first may pass while a loaded machine still warms up), and in prod every order the
    sizing made under the fetched rules is one the exchange takes."""
    served = other_rules().write(tmp_path / "served.json")
    config = tmp_path / "live.yaml"  # a bar may wait 3 real seconds for its candles on a loaded machine
    config.write_text("live:\n  data_timeout_seconds: 180\n  poll_seconds: 0.05\n")
    run = ["run", "--model", "C1b", "--mode", mode, "--bar", "1m", "--duration", "3m", "--universe", ",".join(OTHERS)]
    with exchange_sim(others, "--instruments", str(served), "--speed", "20") as url:
        done = cli(
            *run,
            *["--instruments", str(fetched), "--root", str(tmp_path / "runs"), "--exchange-url", url],
            *["--speed", "20", "--config", str(config)],
            cwd=tmp_path,
            env={"BINANCE_API_KEY": EXCHANGE_KEY, "BINANCE_API_SECRET": EXCHANGE_SECRET},
        )
    assert done.returncode == 0, done.stderr[-3000:]
    traded = re.findall(r"bar \S+ \S+: traded, (\d+) orders", done.stderr)
    assert len(traded) >= 2 and sum(map(int, traded)) > 0, done.stderr[-3000:]
    log_dir = next((tmp_path / "runs").glob(f"C1b/{mode}/manual/*/system_log_dir"))
    assert read_instruments(log_dir / LOG_DIR_FILE).rules == read_instruments(fetched).rules
    orders = LogDir(log_dir).read_table("orders")
    assert set(orders["asset"]) == set(OTHERS)
    if mode == "prod":
        executions = LogDir(log_dir).read_table("broker/executions")
        assert len(executions) and not executions["reason"].fillna("").str.contains("-1111|-4014|-4164").any()
        assert (executions["status"] == "closed").all(), executions[["asset", "status", "reason"]]  # ccxt's filled
        assert (executions["filled"] == executions["sent"]).all()
