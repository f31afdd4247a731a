"""The command line, used as a person would: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from prod_system.core.exchange_client import binanceusdm_client, symbol_of
from prod_system.core.log_dir import LogDir

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prod_system.cli", *args], cwd=cwd or REPO, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def cli_snapshot(tmp_path_factory, bundled_dir) -> Path:
    out = tmp_path_factory.mktemp("cli") / "snapshot.parquet"
    done = cli(
        "dump-market-data",
        "--source",
        f"csv:{bundled_dir}",
        "--universe",
        "BTC,ETH,SOL,BNB,XRP,DOGE,DOT,MATIC",
        "--start",
        "2023-07-20T00:00:00Z",
        "--end",
        "2023-07-22T00:00:00Z",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert "wrote 23,040 candles of 8 assets" in done.stdout
    return out


def test_dump_market_data_writes_a_snapshot(cli_snapshot):
    frame = pd.read_parquet(cli_snapshot)
    assert len(frame) == 2 * 1440 * 8
    assert (frame["knowledge_ts"] - frame["bar_end"]).eq(pd.Timedelta(seconds=10)).all()
    assert frame["bar_start"].min() == pd.Timestamp("2023-07-20", tz="UTC")


def simulate_day(snapshot: Path, root: Path) -> subprocess.CompletedProcess:
    window = ["--start", "2023-07-21T00:00:00Z", "--end", "2023-07-22T00:00:00Z"]
    return cli("simulate", "--model", "C1b", "--market-data", str(snapshot), *window, "--root", str(root))


def test_simulate_through_dagster(tmp_path, cli_snapshot):
    done = simulate_day(cli_snapshot, tmp_path)
    assert done.returncode == 0, done.stderr
    log_dir = tmp_path / "C1b/simulation/manual/20230721_000000.20230722_000000/system_log_dir"
    assert f"log dir:     {log_dir}" in done.stdout
    for figure in ("pnl:", "turnover:", "bars:        288", "seconds:", "dagster run:"):
        assert figure in done.stdout
    assert "288/288 bars" in done.stderr  # progress
    assert len(LogDir(log_dir).read_table("portfolio/statistics")) == 288
    assert (log_dir / "pnl_report.png").stat().st_size > 10_000
    # the same window again is refused, and the first run is untouched
    again = simulate_day(cli_snapshot, tmp_path)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert len(LogDir(log_dir).read_table("portfolio/statistics")) == 288


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "C9z"], "unknown model 'C9z'"),
        (["--start", "2023-07-21T00:03:00Z"], "not aligned to the 5m bar"),
        (["--start", "2023-07-21"], "has no time zone"),
        (["--bar", "90s"], "field 'bar'"),
        (["--market-data", "missing.parquet"], "missing.parquet not found"),
        (["--market-data", "csv:/nonexistent"], "does not exist"),
        (["--start", "2023-07-21T06:00:00Z"], "whole session days"),
        (["--start", "2021-01-01T00:00:00Z", "--end", "2021-01-02T00:00:00Z"], "outside the run's window"),
        (["--config", "missing.yaml"], "config file missing.yaml not found"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    base = {"--model": "C1b", "--start": "2023-07-21T00:00:00Z", "--end": "2023-07-22T00:00:00Z"}
    options = dict(base)
    options.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [item for pair in options.items() for item in pair]
    done = cli("simulate", *flat, "--root", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "out" / "C1b").exists()  # nothing written


def test_config_file_with_unknown_field(tmp_path):
    config = tmp_path / "system.yaml"
    config.write_text("model: C1b\nstart: 2023-07-21T00:00:00Z\nend: 2023-07-22T00:00:00Z\nportfolio:\n  gmv: 5\n")
    done = cli("simulate", "--config", str(config), "--root", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "field 'portfolio.gmv': unknown field" in done.stderr


def test_help_lists_the_commands():
    done = cli("--help")
    assert done.returncode == 0
    assert "dump-market-data" in done.stdout and "simulate" in done.stdout


def test_exchange_sim_command_serves_the_ccxt_client(tmp_path, snapshot):
    """`prod-system exchange-sim` starts a local exchange the real ccxt client trades on; keys from the env."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "EXCHANGE_API_KEY": "cli-key", "EXCHANGE_API_SECRET": "cli-secret-value"}
    server = subprocess.Popen(
        [sys.executable, "-m", "prod_system.cli", "exchange-sim", "--market-data", str(snapshot), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = binanceusdm_client(f"http://127.0.0.1:{port}", "cli-key", "cli-secret-value")
        for _ in range(200):
            try:
                markets = client.load_markets()
                break
            except Exception:
                time.sleep(0.05)
        assert symbol_of("BTC") in markets
        assert float(client.fetch_balance()["USDT"]["total"]) == 1_000_000
    finally:
        server.terminate()
        out, err = server.communicate(timeout=10)
    assert "cli-secret-value" not in out + err


def test_exchange_sim_without_keys_is_one_clear_line(snapshot):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_API")}
    done = subprocess.run(
        [sys.executable, "-m", "prod_system.cli", "exchange-sim", "--market-data", str(snapshot), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "EXCHANGE_API_KEY" in done.stderr and "Traceback" not in done.stderr
