"""Runs on 5-minute market data, through the command line: the model sees the same bars as on the
1-minute candles they were made from, and a bar the candles do not divide is refused at the start."""

from __future__ import annotations

import pandas as pd
import pytest

from prod_system.log_dir import LogDir
from prod_system_tests.kit.cli import NOTEBOOK_OFF, cli
from prod_system_tests.kit.data import BUNDLED, aggregate_klines, bundled_klines, write_klines

ASSETS = "BTC,ETH"
WINDOW = ["--start", "2023-07-21T00:00:00Z", "--end", "2023-07-22T00:00:00Z"]


@pytest.fixture(scope="module")
def five_minute_dir(tmp_path_factory):
    klines = {asset: aggregate_klines(bundled_klines(asset), "5min") for asset in ASSETS.split(",")}
    return write_klines(tmp_path_factory.mktemp("klines_5m"), klines)


def _simulate(source: str, bar: str, root) -> LogDir:
    done = cli(
        "simulate", "--engine", "core", "--model", "C1b", "--market-data", source, "--universe", ASSETS,
        *WINDOW, "--bar", bar, "--root", str(root), "--config", NOTEBOOK_OFF,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("log dir:")]
    return LogDir(line.split(":", 1)[1].strip())


@pytest.mark.parametrize("bar", ["5m", "15m"])
def test_a_simulation_on_5m_candles_sees_the_bars_of_the_1m_candles(tmp_path, five_minute_dir, bar):
    five = _simulate(f"csv:{five_minute_dir}", bar, tmp_path / "five")
    one = _simulate(f"csv:{BUNDLED}", bar, tmp_path / "one")
    outputs = [
        run.read_table("dag/node_outputs").sort_values(["bar_end", "node", "asset"], ignore_index=True)
        for run in (five, one)
    ]
    pd.testing.assert_frame_equal(*outputs)  # every node: bar closes, returns, volatility, predictions
    closes = outputs[0][outputs[0]["node"] == "close"]
    assert len(closes) == 2 * pd.Timedelta(days=1) // pd.Timedelta(bar) and closes["value"].notna().all()
    assert five.read_table("data_quality").empty  # no bar's last candle missing: the guard reads the 5m grid


def test_historical_pnl_on_5m_candles(tmp_path, five_minute_dir):
    done = cli(
        "historical-pnl", "--model", "C1b", "--market-data", f"csv:{five_minute_dir}", "--universe", ASSETS,
        *WINDOW, "--bar", "15m", "--root", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "bars:        96" in done.stdout


@pytest.mark.parametrize(
    ("command", "bar", "message"),
    [
        (["simulate", "--engine", "core"], "1m", "bar 1m is shorter than the market data's 5m candles"),
        (["historical-pnl"], "1m", "bar 1m is shorter than the market data's 5m candles"),
        (["simulate", "--engine", "core"], "8m", "bar 8m is not a multiple of the market data's 5m candles"),
        (["simulate"], "1m", "bar 1m is shorter than the market data's 5m candles"),  # the Dagster engine
    ],
    ids=["simulate-core", "historical", "not-a-multiple", "simulate-dagster"],
)
def test_a_bar_the_candles_do_not_divide_is_refused_before_anything_runs(
    tmp_path, five_minute_dir, command, bar, message
):
    root = tmp_path / "runs"
    done = cli(
        *command, "--model", "C1b", "--market-data", f"csv:{five_minute_dir}", "--universe", ASSETS,
        *WINDOW, "--bar", bar, "--root", str(root), "--config", NOTEBOOK_OFF,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "whole multiple of the market data's candle interval" in done.stderr  # the hint
    assert not root.exists() or not any(root.rglob("run.json"))
