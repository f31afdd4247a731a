"""The command line, used as a person would: real subprocesses (and click's runner in process for the
many quick cases), exit codes, one-line errors."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from prod_system import cli as cli_module
from prod_system.cli import data as cli_data
from prod_system.cli import errors as cli_errors
from prod_system.cli import progress as cli_progress
from prod_system.data import BUNDLED_CANDLES
from prod_system.data.market_db import MarketDatabase
from prod_system.data.universe import quote_volumes
from prod_system.log_dir import LogDir
from prod_system.trading.brokers.ccxt_client import binanceusdm_client, symbol_of
from prod_system_tests.kit.archive import write_bad_archives
from prod_system_tests.kit.cli import NOTEBOOK_OFF, REPO, cli
from prod_system_tests.kit.data import write_bad_klines
from prod_system_tests.kit.instruments import write_bad_instruments

COMMANDS = ["dump-market-data", "simulate", "historical-pnl", "reconcile", "run", "exchange-sim", "instruments"]


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
    assert [line for line in done.stderr.splitlines() if line.startswith("hint: ")]
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


def _exchange_sim(snapshot: Path, *options: str) -> tuple[subprocess.Popen, str]:
    """`prod-system exchange-sim` on ``snapshot`` (keys "cli-key"/"cli-secret-value"), once it answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "EXCHANGE_API_KEY": "cli-key", "EXCHANGE_API_SECRET": "cli-secret-value"}
    command = [sys.executable, "-m", "prod_system.cli", "exchange-sim", "--market-data", str(snapshot)]
    server = subprocess.Popen(
        [*command, "--port", str(port), *options], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            binanceusdm_client(url, timeout_ms=1_000).fetch_time()
            return server, url
        except Exception:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise AssertionError(f"exchange-sim did not start: {server.communicate()[1][-2000:]}") from None
            time.sleep(0.05)


def test_exchange_sim_starts_warm_a_day_of_candles_closed_and_a_market_order_fills(snapshot):
    """By default the first day of the snapshot is already closed at start-up: klines serve all of it at
    once, whole, and a market order sent at once fills at the last closed candle's close."""
    server, url = _exchange_sim(snapshot)
    try:
        client = binanceusdm_client(url, "cli-key", "cli-secret-value")
        now = pd.Timestamp(client.fetch_time(), unit="ms", tz="UTC")
        day_before = int((now.floor("1min") - pd.Timedelta(days=1)).value // 1_000_000)
        order = client.create_order(symbol_of("BTC"), "market", "buy", 0.01)
        rows = client.fetch_ohlcv(symbol_of("BTC"), "1m", day_before, 1000)
        rows += client.fetch_ohlcv(symbol_of("BTC"), "1m", rows[-1][0] + 60_000, 1000)
    finally:
        server.terminate()
        server.communicate(timeout=10)
    candles = pd.read_parquet(snapshot)
    first_day = candles[(candles["asset"] == "BTC") & (candles["bar_start"] < pd.Timestamp("2023-07-21", tz="UTC"))]
    closed = [row for row in rows if row[0] + 60_000 <= now.value // 1_000_000]
    assert len(closed) == 1440 and closed[-1][0] + 60_000 == now.floor("1min").value // 1_000_000
    assert [row[4] for row in closed] == first_day.sort_values("bar_start")["close"].tolist()
    assert [row[5] for row in closed] == first_day.sort_values("bar_start")["volume"].tolist()
    assert order["status"] == "closed" and order["filled"] == 0.01
    assert order["average"] == pytest.approx(first_day["close"].iloc[-1])


@pytest.mark.wall_clock
@pytest.mark.parametrize("mode", ["paper_trading", "prod"])
def test_the_rehearsal_trades_from_its_first_bar(tmp_path, snapshot, mode):
    """The README's rehearsal, 60 times faster: `exchange-sim` and `run --bar 1m --duration 5m` trade all
    5 bars, with orders on the first (the exchange starts with a day closed, the session backfills its
    model's lookback before its first bar)."""
    server, url = _exchange_sim(snapshot, "--speed", "60")
    config = tmp_path / "live.yaml"  # a bar may wait 3 real seconds for its candles on a loaded machine
    config.write_text("live:\n  data_timeout_seconds: 180\n  poll_seconds: 0.05\n")
    env = {**os.environ, "BINANCE_API_KEY": "cli-key", "BINANCE_API_SECRET": "cli-secret-value"}
    command = [sys.executable, "-m", "prod_system.cli", "run", "--model", "C1b", "--mode", mode, "--bar", "1m"]
    command += ["--duration", "5m", "--root", str(tmp_path / "runs"), "--exchange-url", url, "--speed", "60"]
    try:
        done = subprocess.run(
            [*command, "--config", str(config)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
    finally:
        server.terminate()
        server.communicate(timeout=10)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bars:        5 traded, 0 skipped" in done.stdout, done.stderr[-3000:]
    bars = re.findall(r"bar \S+ \S+: traded, (\d+) orders", done.stderr)
    assert len(bars) == 5 and int(bars[0]) > 0, done.stderr[-3000:]
    assert "warm-up: the last 1h of candles ingested" in done.stderr


def test_a_live_top_n_ranks_the_hour_before_its_start_from_the_exchange(tmp_path, snapshot):
    """`run --universe top:3/1h` on an empty database: the ranking hour of the 8 listed assets is
    ingested first, the session trades the 3 of largest quote volume in it (as the snapshot ranks
    them), records the rule, and ingests all 8 for the next ranking."""
    server, url = _exchange_sim(snapshot, "--speed", "60", "--clock", "original")  # the snapshot's own times
    config = tmp_path / "live.yaml"  # a bar may wait 3 real seconds for its candles on a loaded machine
    config.write_text("live:\n  data_timeout_seconds: 180\n  poll_seconds: 0.05\n")
    command = [sys.executable, "-m", "prod_system.cli", "run", "--model", "C1b", "--bar", "1m", "--duration", "2m"]
    command += ["--root", str(tmp_path / "runs"), "--exchange-url", url, "--speed", "60", "--universe", "top:3/1h"]
    try:
        done = subprocess.run(
            [*command, "--config", str(config)], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
    finally:
        server.terminate()
        server.communicate(timeout=10)
    assert done.returncode == 0, done.stderr[-3000:]
    (saved,) = (tmp_path / "runs").rglob("system_config.yaml")
    recorded = yaml.safe_load(saved.read_text())
    start = pd.Timestamp(recorded["start"])
    expected = quote_volumes(
        pd.read_parquet(snapshot), start, pd.Timedelta(hours=1), known_at=start + pd.Timedelta(days=1)
    )
    assert recorded["universe_rule"] == "top:3/1h" and recorded["universe"] == list(expected.index[:3])
    assert f"universe top:3/1h: {','.join(recorded['universe'])}" in done.stderr
    assert "ingested to rank them" in done.stderr
    held = MarketDatabase(f"sqlite:///{tmp_path / 'runs' / 'market.db'}").last_bar_ends(list(expected.index))
    assert all(end is not None and end > start for end in held.values())  # all 8 ingested during the session


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


# ---------------------------------------------------------------------------------------------
# Help, bad input, failures and progress, in process (click's runner: fast, same code path)
# ---------------------------------------------------------------------------------------------


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli_module.main, list(args), env=env)


def test_root_help_says_what_the_tool_is_its_commands_and_exit_codes():
    done = invoke("--help")
    assert done.exit_code == 0
    assert "crypto trading system" in done.output and "Typical workflow" in done.output
    commands = done.output.split("Commands:")[1].splitlines()
    summaries = {line.split()[0]: line for line in commands if line.strip() and line.startswith("  ")}
    assert set(COMMANDS) <= set(summaries)
    for command in COMMANDS:
        assert not summaries[command].rstrip().endswith("..."), f"truncated summary: {summaries[command]}"
    codes = {}
    for line in done.output.split("Exit codes:")[1].split("Options:")[0].splitlines():
        if line.strip():
            code, meaning = line.split(maxsplit=1)
            codes[int(code)] = meaning
    assert set(codes) == {
        cli_errors.EXIT_OK,
        cli_errors.EXIT_FAILED,
        cli_errors.EXIT_BAD_INPUT,
        cli_errors.EXIT_NOT_RECONCILED,
        cli_errors.EXIT_UNREACHABLE,
        cli_errors.EXIT_INTERRUPTED,
    }
    assert "success" in codes[0] and "bad input" in codes[2] and "diverges" in codes[3] and "interrupted" in codes[130]
    assert "cannot reach" in codes[cli_errors.EXIT_UNREACHABLE]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(command):
    done = invoke(command, "--help")
    assert done.exit_code == 0, done.output
    assert "Examples" in done.output
    examples = done.output.split("Examples")[1].split("Options:")[0]
    assert f"prod-system {command} --" in examples  # a real invocation, kept on its own lines
    options = done.output.split("Options:")[1]
    assert "--help" in options


T0, T1 = "2023-07-21T00:00:00Z", "2023-07-22T00:00:00Z"
DAY = ["--start", T0, "--end", T1]
DUMP = ["dump-market-data", "--start", "2023-07-21T00:00:00Z", "--end", "2023-07-21T01:00:00Z"]
K_WINDOW = ["--universe", "BTC,ETH", "--start", "2023-07-19T00:00:00Z", "--end", "2023-07-19T04:00:00Z"]
K_DUMP = ["dump-market-data", *K_WINDOW, "--out", "x.parquet", "--source"]
K_SIMULATE = ["simulate", "--engine", "core", "--model", "C1b", *K_WINDOW, "--market-data"]
NO_RULES = "no exchange rules for ['ADA']: fetch them with prod-system instruments --exchange-url URL --out FILE"
BAD_STEP = "instruments file bad-instruments.json: instruments[0] (ADA): field 'step' is not a positive number: 'abc'"
BAD_INPUTS = [
    # (id, arguments, exit code, text of the error line)
    ("unknown-command", ["bogus"], 2, "No such command 'bogus'"),
    ("dump-missing-option", ["dump-market-data", "--start", T0, "--out", "x.parquet"], 2, "Missing option '--end'"),
    (
        "dump-naive-time",
        ["dump-market-data", "--start", "2023-07-21", "--end", T1, "--out", "x.parquet"],
        2,
        "time zone",
    ),
    ("dump-bad-time", ["dump-market-data", "--start", "garbage", "--end", T1, "--out", "x.parquet"], 2, "--start:"),
    (
        "dump-end-before-start",
        ["dump-market-data", "--start", T1, "--end", T0, "--out", "x.parquet"],
        2,
        "must be after",
    ),
    ("dump-unknown-asset", [*DUMP, "--universe", "FOO", "--out", "x.parquet"], 2, "no candles for FOO"),
    ("dump-bad-universe", [*DUMP, "--universe", "B-T", "--out", "x.parquet"], 2, "alphanumeric"),
    ("dump-missing-source", [*DUMP, "--source", "missing.parquet", "--out", "x.parquet"], 2, "not found"),
    ("dump-unknown-source", [*DUMP, "--source", "foo:bar", "--out", "x.parquet"], 2, "unknown market data source"),
    ("dump-bad-delay", [*DUMP, "--knowledge-delay", "abc", "--out", "x.parquet"], 2, "invalid duration 'abc'"),
    (
        "dump-empty-window",
        ["dump-market-data", "--start", "2021-01-01T00:00:00Z", "--end", "2021-01-02T00:00:00Z", "--out", "x.parquet"],
        2,
        "no candles between",
    ),
    ("dump-out-not-parquet", [*DUMP, "--out", "x.csv"], 2, "a snapshot is a .parquet file"),
    ("dump-out-under-a-file", [*DUMP, "--out", "afile/x.parquet"], 2, "is a file, not a folder"),
    # Binance's public data archive as a download goes wrong (kit/archive.py write_bad_archives)
    *[
        (
            f"dump-archive-{name}",
            [*DUMP, "--universe", "BTC", "--source", f"binance-archive:{folder}", "--out", "x.parquet"],
            2,
            message,
        )
        for name, folder, message in [
            ("corrupt-zip", "arch-corrupt", "BTCUSDT-1m-2023-07.zip: corrupt zip file"),
            ("wrong-checksum", "arch-checksum", "BTCUSDT-1m-2023-07.zip: its sha256 does not match"),
            ("11-columns", "arch-11-columns", "11 columns, a kline file has 12"),
            ("bad-file-name", "arch-bad-name", "BTCUSDT_1m_2023-07.zip: the file name does not parse"),
            ("empty-folder", "arch-empty", "no USDT kline zip files in arch-empty"),
            ("missing-folder", "arch-missing", "Binance archive folder arch-missing does not exist"),
            ("interval-not-the-name's", "arch-interval", "the name says 1m candles but the data's are 5m"),
        ]
    ],
    ("dump-out-a-folder", [*DUMP, "--out", "notes.parquet"], 2, "notes.parquet is a folder but not a snapshot"),
    (
        "dump-archive-corrupt-in-a-later-month",
        [
            *["dump-market-data", "--start", T0, "--end", "2023-08-01T01:00:00Z", "--universe", "BTC"],
            *["--source", "binance-archive:arch-late-corrupt", "--out", "x.parquet"],
        ],
        2,
        "BTCUSDT-1m-2023-08.zip: corrupt zip file",
    ),
    # candle intervals and strict snapshots (the folders of kit.data.write_bad_klines)
    ("dump-mixed-intervals", [*K_DUMP, "csv:k-mixed"], 2, "k-mixed: mixed candle intervals: BTC 1m"),
    (
        "dump-irregular-candles",
        [*K_DUMP, "csv:k-irregular"],
        2,
        "BTC_USDT.csv.gz: irregular candles: BTC's opens are 7m apart",
    ),
    ("dump-unaligned-candles", [*K_DUMP, "csv:k-unaligned"], 2, "opens are off the 5m grid"),
    (
        "dump-bad-prices",
        [*K_DUMP, "csv:k-bad-prices"],
        2,
        "3 candles the data guard would drop (3 invalid_price; BTC_USDT.csv.gz 3)",
    ),
    ("simulate-mixed-intervals", [*K_SIMULATE, "csv:k-mixed"], 2, "mixed candle intervals: BTC_USDT.csv.gz is 1m"),
    (
        "simulate-bar-under-candles",
        [*K_SIMULATE, "csv:k-5m", "--bar", "1m"],
        2,
        "bar 1m is shorter than the market data's 5m candles",
    ),
    (
        "historical-bar-not-a-multiple",
        ["historical-pnl", *K_SIMULATE[3:], "csv:k-5m", "--bar", "8m"],
        2,
        "bar 8m is not a multiple of the market data's 5m candles",
    ),
    ("simulate-unknown-model", ["simulate", "--engine", "core", "--model", "C9z", *DAY], 2, "unknown model 'C9z'"),
    ("simulate-no-model", ["simulate", *DAY], 2, "field 'model'"),
    ("simulate-missing-end", ["simulate", "--model", "C1b", "--start", T0], 2, "field 'end'"),
    ("simulate-end-before-start", ["simulate", "--model", "C1b", "--start", T1, "--end", T0], 2, "must be after"),
    ("simulate-bad-bar", ["simulate", "--model", "C1b", *DAY, "--bar", "7x"], 2, "field 'bar'"),
    ("simulate-unaligned", ["simulate", "--model", "C1b", *DAY, "--bar", "7m"], 2, "not aligned"),
    ("simulate-bad-universe", ["simulate", "--model", "C1b", *DAY, "--universe", "B-T"], 2, "alphanumeric"),
    ("simulate-unknown-asset", ["simulate", "--model", "C1b", *DAY, "--universe", "BTC,FOO"], 2, "FOO not in the"),
    ("simulate-universe-top-0", ["simulate", "--model", "C1b", *DAY, "--universe", "top:0"], 2, "'top:0': top:N"),
    ("simulate-universe-top-x", ["simulate", "--model", "C1b", *DAY, "--universe", "top:x"], 2, "'top:x': top:N"),
    (
        "historical-universe-bad-window",
        ["historical-pnl", "--model", "C1b", *DAY, "--universe", "top:3/soon"],
        2,
        "field 'universe': 'top:3/soon': the window of top:N",
    ),
    (
        "simulate-universe-all-of-a-database",
        ["simulate", "--model", "C1b", *DAY, "--market-data", "sqlite:///market.db", "--universe", "all"],
        2,
        "'all' needs a snapshot file",
    ),
    (
        "simulate-universe-top-before-the-data",
        ["simulate", "--model", "C1b", "--start", "2023-07-19T00:00:00Z", "--end", T0, "--universe", "top:3"],
        2,
        "top:3/1d: no candle known at 2023-07-19 00:00 UTC",
    ),
    ("run-universe-all", ["run", "--model", "C1b", "--universe", "all"], 2, "'all' needs a snapshot file"),
    (
        "dump-universe-all-of-a-database",
        [*DUMP, "--source", "sqlite:///market.db", "--universe", "all", "--out", "x.parquet"],
        2,
        "--universe all: sqlite:///market.db has no list of assets",
    ),
    ("run-universe-top-0", ["run", "--model", "C1b", "--universe", "top:0"], 2, "'top:0': top:N"),
    (
        "simulate-universe-each-day-of-a-list",
        ["simulate", "--model", "C1b", *DAY, "--universe", "BTC", "--universe-each-day"],
        2,
        "field 'universe_each_day': it ranks a top:N universe again each day",
    ),
    ("simulate-bad-engine", ["simulate", "--model", "C1b", *DAY, "--engine", "foo"], 2, "'foo' is not one of"),
    ("simulate-root-under-a-file", ["simulate", "--model", "C1b", *DAY, "--root", "afile/out"], 2, "is a file"),
    ("simulate-bad-config", ["simulate", "--config", "bad.yaml"], 2, "not valid YAML"),
    (
        "simulate-dagster-part-of-a-day",
        ["simulate", "--model", "C1b", "--start", "2023-07-21T06:00:00Z", "--end", T1],
        2,
        "whole session days",
    ),
    # a window partly outside the market data (the bundled candles: 2023-07-19 to 2023-07-28): refused
    # before anything runs, by every engine, with what the data covers
    *[
        (
            f"{name}-window-past-the-data",
            [*command, "--model", "C1b", "--start", "2023-07-27T00:00:00Z", "--end", "2023-07-29T00:00:00Z"],
            2,
            "covers 2023-07-19 00:00 to 2023-07-28 00:00 UTC",
        )
        for name, command in [
            ("simulate-dagster", ["simulate"]),
            ("simulate-core", ["simulate", "--engine", "core"]),
            ("historical", ["historical-pnl"]),
        ]
    ],
    (
        "simulate-core-window-before-the-data",
        ["simulate", "--engine", "core", "--model", "C1b", "--start", "2023-07-18T23:00:00Z", "--end", T0],
        2,
        "only part of the run's window 2023-07-18 23:00 to 2023-07-21 00:00 UTC",
    ),
    (
        "simulate-slashed-time",
        ["simulate", "--model", "C1b", "--start", "2023/07/21 00:00", "--end", T1],
        2,
        "not understood",
    ),
    (
        "dump-slashed-time",
        ["dump-market-data", "--start", "2023/07/21 00:00", "--end", T1, "--out", "x.parquet"],
        2,
        "not understood",
    ),
    (
        "simulate-local-time",
        ["simulate", "--model", "C1b", "--start", "2023-07-21T00:00:00+02:00", "--end", T1],
        2,
        "must be UTC",
    ),
    (
        "reconcile-local-time",
        ["reconcile", "--model", "C1b", "--root", "emptyroot", "--end", "2023-07-22T00:00:00-05:00"],
        2,
        "must be UTC",
    ),
    ("simulate-model-case", ["simulate", "--model", "C1B", *DAY], 2, "did you mean 'C1b'?"),
    ("historical-model-typo", ["historical-pnl", "--model", "C3", *DAY], 2, "did you mean 'C3a'?"),
    (
        "historical-no-market-data",
        ["historical-pnl", "--model", "C1b", *DAY, "--market-data", "missing.parquet"],
        2,
        "missing.parquet not found",
    ),
    ("reconcile-no-root", ["reconcile", "--model", "C1b", "--root", "nonexistent"], 2, "no such folder"),
    ("reconcile-no-run", ["reconcile", "--model", "C1b", "--root", "emptyroot"], 2, "no run of C1b"),
    ("reconcile-root-is-a-file", ["reconcile", "--model", "C1b", "--root", "afile"], 2, "is a file"),
    ("reconcile-bad-time", ["reconcile", "--model", "C1b", "--root", "emptyroot", "--end", "tomorrow"], 2, "--end:"),
    (
        "reconcile-negative-tolerance",
        ["reconcile", "--model", "C1b", "--root", "emptyroot", "--pnl-tolerance", "-1"],
        2,
        "--pnl-tolerance",
    ),
    ("run-no-model", ["run", "--root", "runs"], 2, "field 'model'"),
    ("run-bad-bar", ["run", "--model", "C1b", "--root", "runs", "--bar", "abc"], 2, "invalid duration 'abc'"),
    ("run-bar-in-seconds", ["run", "--model", "C1b", "--root", "runs", "--bar", "90s"], 2, "whole number of minutes"),
    ("run-bad-duration", ["run", "--model", "C1b", "--root", "runs", "--duration", "1y"], 2, "--duration"),
    ("run-zero-speed", ["run", "--model", "C1b", "--root", "runs", "--speed", "0"], 2, "--speed"),
    ("run-bad-mode", ["run", "--model", "C1b", "--root", "runs", "--mode", "live"], 2, "--mode"),
    ("exchange-bad-port", ["exchange-sim", "--market-data", "snap.parquet", "--port", "70000"], 2, "--port"),
    ("exchange-bad-fee", ["exchange-sim", "--market-data", "snap.parquet", "--taker-fee", "abc"], 2, "--taker-fee"),
    ("exchange-no-market-data", ["exchange-sim", "--market-data", "missing.parquet", "--port", "0"], 2, "not found"),
    (
        "exchange-5m-candles",
        ["exchange-sim", "--market-data", "csv:k-5m", "--port", "0"],
        2,
        "the local exchange replays 1-minute candles, and the market data's are 5m",
    ),
    (
        "dump-exchange-bad-url",
        [*DUMP, "--source", "exchange:ftp://127.0.0.1:8765", "--out", "x.parquet"],
        2,
        "must start with http:// or https://",
    ),
    (
        "dump-exchange-unreachable",
        [*DUMP, "--source", "exchange:http://127.0.0.1:9", "--out", "x.parquet"],
        4,
        "the exchange at http://127.0.0.1:9 does not answer",
    ),
    ("exchange-bad-history", ["exchange-sim", "--market-data", "x.parquet", "--history", "1y"], 2, "--history"),
    (
        "exchange-bad-funding-rate",
        ["exchange-sim", "--market-data", "x.parquet", "--funding-rate", "0.5"],
        2,
        "--funding-rate",
    ),
    (
        "exchange-bad-funding-interval",
        ["exchange-sim", "--market-data", "x.parquet", "--funding-interval", "5h"],
        2,
        "--funding-interval",
    ),
    (
        "exchange-history-too-long",
        ["exchange-sim", "--market-data", f"csv:{BUNDLED_CANDLES}", "--port", "0", "--history", "30d"],
        2,
        "leaves nothing to replay",
    ),
    (
        "exchange-bad-faults",
        ["exchange-sim", "--market-data", "missing.parquet", "--port", "0", "--faults", "faults.json"],
        2,
        "bad fault rules",
    ),
    # exchange rules (kit/instruments.py write_bad_instruments: k-others holds ADA, which no bundled rule covers)
    *[
        (f"{name}-no-rules", [*command, "--universe", "ADA"], 2, NO_RULES)
        for name, command in [
            ("simulate", ["simulate", "--model", "C1b", *DAY, "--market-data", "csv:k-others"]),
            (
                "simulate-core",
                ["simulate", "--engine", "core", "--model", "C1b", *DAY, "--market-data", "csv:k-others"],
            ),
            ("historical", ["historical-pnl", "--model", "C1b", *DAY, "--market-data", "csv:k-others"]),
            ("run", ["run", "--model", "C1b", "--root", "runs"]),
        ]
    ],
    ("exchange-no-rules", ["exchange-sim", "--market-data", "csv:k-others", "--port", "0"], 2, NO_RULES),
    *[
        (f"{name}-bad-instruments", [*command, "--instruments", "bad-instruments.json"], 2, BAD_STEP)
        for name, command in [
            ("simulate", ["simulate", "--model", "C1b", *DAY, "--market-data", "csv:k-others", "--universe", "ADA"]),
            ("dump", [*DUMP, "--source", "csv:k-others", "--universe", "ADA", "--out", "x.parquet"]),
            ("exchange", ["exchange-sim", "--market-data", "csv:k-others", "--port", "0"]),
            ("run", ["run", "--model", "C1b", "--root", "runs"]),
        ]
    ],
    (
        "simulate-missing-instruments",
        ["simulate", "--model", "C1b", *DAY, "--instruments", "missing.json"],
        2,
        "instruments file missing.json not found",
    ),
    ("instruments-out-not-json", ["instruments", "--out", "x.csv"], 2, "an instruments file is a .json file"),
    ("instruments-bad-universe", ["instruments", "--out", "x.json", "--universe", "B-T"], 2, "alphanumeric"),
    (
        "instruments-half-a-key-pair",
        ["instruments", "--out", "x.json", "--api-key-env", "EXCHANGE_API_KEY", "--api-secret-env", "NO_SUCH_VAR"],
        2,
        "$NO_SUCH_VAR is not set",
    ),
    (
        "instruments-unreachable",
        ["instruments", "--exchange-url", "http://127.0.0.1:9", "--out", "x.json"],
        4,
        "cannot reach the exchange at http://127.0.0.1:9",
    ),
]


@pytest.mark.parametrize(("args", "code", "message"), [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_an_error_line_a_hint_and_its_exit_code(tmp_path, monkeypatch, args, code, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a folder\n")
    (tmp_path / "emptyroot").mkdir()
    (tmp_path / "bad.yaml").write_text("model: [\n")
    (tmp_path / "faults.json").write_text('{"not": "a list"}\n')
    write_bad_archives(tmp_path)
    write_bad_klines(tmp_path)
    write_bad_instruments(tmp_path)
    before = sorted(path.name for path in tmp_path.iterdir())
    done = invoke(*args, env={"EXCHANGE_API_KEY": "key", "EXCHANGE_API_SECRET": "secret", "PROD_SYSTEM_DEBUG": None})
    assert done.exit_code == code, done.output
    assert "Traceback" not in done.output
    assert done.exception is None or isinstance(done.exception, SystemExit)  # no exception escaped the handlers
    lines = done.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    hints = [line for line in lines if line.startswith("hint: ")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert len(hints) == 1 and len(hints[0]) > len("hint: ") + 10, done.stderr
    assert lines.index(hints[0]) == lines.index(errors[0]) + 1  # the hint follows its error
    assert not any(line.lower().startswith(("usage:", "error:")) for line in done.stdout.splitlines())
    assert sorted(path.name for path in tmp_path.iterdir()) == before  # bad input writes nothing


def test_exchange_sim_without_keys_in_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = invoke(
        "exchange-sim", "--market-data", "x.parquet", env={"EXCHANGE_API_KEY": None, "EXCHANGE_API_SECRET": None}
    )
    assert done.exit_code == 2
    assert done.stderr.splitlines()[0].startswith("error: no API key") and "EXCHANGE_API_KEY" in done.stderr
    assert done.stderr.splitlines()[1].startswith("hint: ")


def _a_dump_that_breaks(tmp_path, monkeypatch, message: str) -> list[str]:
    """The arguments of a dump-market-data whose writing fails with an unexpected error."""
    monkeypatch.chdir(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError(message)

    monkeypatch.setattr(cli_data, "write_snapshot", broken)
    return [*DUMP, "--universe", "BTC", "--out", "x.parquet"]


def test_unexpected_failure_is_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    args = _a_dump_that_breaks(tmp_path, monkeypatch, "something broke\non two lines")
    done = invoke(*args, env={"PROD_SYSTEM_DEBUG": None})
    assert done.exit_code == cli_errors.EXIT_FAILED
    assert "Traceback" not in done.output
    lines = [line for line in done.stderr.splitlines() if line.startswith(("error:", "hint:"))]
    assert lines[0] == "error: unexpected failure: RuntimeError: something broke on two lines"
    assert lines[1].startswith("hint: ") and "--debug" in lines[1] and "PROD_SYSTEM_DEBUG=1" in lines[1]
    assert len(lines) == 2
    for debug in (invoke("--debug", *args), invoke(*args, env={"PROD_SYSTEM_DEBUG": "1"})):
        assert debug.exit_code == 1 and isinstance(debug.exception, RuntimeError)  # raised: Python prints it


def test_unexpected_failure_during_a_simulation_points_to_its_log(tmp_path, snapshot, monkeypatch):
    import prod_system.runs.finish as finish

    def broken(*args, **kwargs):
        raise KeyError("missing column")

    monkeypatch.setattr(finish, "write_pnl_report", broken)
    window = ["--start", "2023-07-21T00:00:00Z", "--end", "2023-07-21T02:00:00Z"]
    done = invoke(
        "simulate", "--engine", "core", "--model", "C1b", "--market-data", str(snapshot), *window,
        "--root", str(tmp_path), env={"PROD_SYSTEM_DEBUG": None},
    )  # fmt: skip
    assert done.exit_code == 1, done.output
    log = tmp_path / "C1b/simulation/manual/20230721_000000.20230721_020000/system_log_dir/log.txt"
    assert log.exists()
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    hints = [line for line in done.stderr.splitlines() if line.startswith("hint: ")]
    assert errors == ["error: unexpected failure: KeyError: 'missing column'"]
    assert len(hints) == 1 and str(log) in hints[0]


def test_progress_is_a_few_plain_lines_when_stderr_is_not_a_terminal(tmp_path, snapshot):
    window = ["--start", "2023-07-21T00:00:00Z", "--end", "2023-07-21T12:00:00Z"]
    done = invoke(
        "simulate", "--engine", "core", "--model", "C1b", "--market-data", str(snapshot), *window,
        "--root", str(tmp_path / "sim"), "--config", NOTEBOOK_OFF,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "bars:        144" in done.stdout and "[" not in done.stdout  # results on stdout, progress on stderr
    assert "\r" not in done.stderr
    for stage in ("model", "trading"):
        lines = [line for line in done.stderr.splitlines() if line.split()[:1] == [stage]]
        assert 2 <= len(lines) <= 5, done.stderr
        assert "[####################] 144/144 bars" in lines[-1]
    history = invoke(
        "historical-pnl", "--model", "C1b", *window, "--market-data", str(snapshot), "--root", str(tmp_path)
    )
    assert history.exit_code == 0, history.output
    assert "144/144 bars" in history.stderr and "\r" not in history.stderr
    dump = invoke(*DUMP, "--universe", "BTC,ETH", "--out", str(tmp_path / "x.parquet"))
    assert dump.exit_code == 0, dump.output
    assert "2/2 assets" in dump.stderr and "wrote 120 candles of 2 assets" in dump.stdout


def test_progress_redraws_one_line_on_a_terminal(capsys):
    progress = cli_progress.Progress(tty=True)
    for done in range(1, 201):
        progress("model", done, 200)
    err = capsys.readouterr().err
    assert err.count("\r") == 101  # one redraw per percent
    assert err.count("\n") == 1 and err.endswith("\n")  # the line is closed once, when the stage is done
    assert "[####################] 200/200 bars" in err.split("\r")[-1]


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "--model", "C1B", *DAY],
        ["simulate", "--engine", "core", "--model", "C1B", *DAY],
        ["historical-pnl", "--model", "C1B", *DAY],
    ],
    ids=["dagster", "core", "historical"],
)
def test_an_unknown_model_is_refused_before_anything_is_printed(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    done = invoke(*args)
    assert done.exit_code == 2, done.output
    error, hint = done.stderr.splitlines()  # no "simulating C1B: ..." before the refusal
    assert error.startswith("error: unknown model 'C1B'") and "did you mean 'C1b'?" in error
    assert hint.startswith("hint: ")
    assert list(tmp_path.iterdir()) == []


def test_hints_and_help_point_to_pages_that_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "faults.json").write_text('{"not": "a list"}\n')
    (tmp_path / "system.yaml").write_text("model: C1b\nportfolio:\n  gmv: 5\n")
    cases = [
        (["simulate", "--model", "C1b", *DAY, "--market-data", "candles.csv"], "docs/configuration.md"),
        (["simulate", "--config", "system.yaml", *DAY], "docs/configuration.md"),
        (["exchange-sim", "--market-data", "x.parquet", "--port", "0", "--faults", "faults.json"], "docs/exchange.md"),
    ]
    for args, page in cases:
        done = invoke(*args, env={"EXCHANGE_API_KEY": "key", "EXCHANGE_API_SECRET": "secret"})
        assert done.exit_code == 2, done.output
        (hint,) = [line for line in done.stderr.splitlines() if line.startswith("hint: ")]
        assert page in hint, hint
    helps = [invoke("--help").output, *(invoke(command, "--help").output for command in COMMANDS)]
    named = set(re.findall(r"docs/\w+\.md", "\n".join(helps)))
    assert named and all((REPO / page).is_file() for page in named), named
    assert not [text for text in helps if "README" in text]  # the references live in docs/, by name


@pytest.mark.parametrize("command", COMMANDS)
def test_debug_is_an_option_of_every_command(command):
    done = invoke(command, "--debug", "--help")
    assert done.exit_code == 0, done.output
    assert "--debug" in done.output.split("Options:")[1]


def test_debug_after_the_command_shows_the_traceback(tmp_path, monkeypatch):
    args = _a_dump_that_breaks(tmp_path, monkeypatch, "something broke")
    for position in (["--debug", *args], [*args, "--debug"], [*args[:3], "--debug", *args[3:]]):
        done = invoke(*position, env={"PROD_SYSTEM_DEBUG": None})
        assert done.exit_code == 1 and isinstance(done.exception, RuntimeError), (position, done.output)
    # where users type it, in a real process: the command runs (here: its bad input), no usage error
    done = cli("reconcile", "--model", "C1b", "--root", str(tmp_path / "nothing"), "--debug")
    assert done.returncode == 2 and "No such option" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: --root ") and "Traceback" not in done.stderr


def test_run_that_cannot_reach_its_exchange_stops_at_start(tmp_path):
    """A paper session whose exchange does not answer: one line naming the URL, at once, nothing left."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there once the socket is closed
    began = time.monotonic()
    args = ["run", "--model", "C1b", "--duration", "2m", "--bar", "1m", "--root", "runs", "--exchange-url", url]
    try:
        done = cli(*args, cwd=tmp_path, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the session went on without its exchange")
    assert time.monotonic() - began < 30
    assert done.returncode == cli_errors.EXIT_UNREACHABLE, done.stderr
    assert "Traceback" not in done.stderr and "WARNING" not in done.stderr
    error, hint = done.stderr.splitlines()
    assert error.startswith("error: ") and url in error
    assert hint.startswith("hint: ") and "prod-system exchange-sim" in hint and "--exchange-url" in hint
    assert list(tmp_path.iterdir()) == []  # no root, no market database, no session log dir


# ---------------------------------------------------------------------------------------------
# Universes: the default is the snapshot's assets; rules are resolved and recorded
# ---------------------------------------------------------------------------------------------


def test_a_snapshot_of_some_assets_simulates_without_universe(tmp_path, monkeypatch):
    """The issue: a snapshot dumped with --universe simulates without it (it failed with 'market data
    has no candles for [BNB, ...]': the default was the bundled 8). Every engine trades the file's assets."""
    monkeypatch.chdir(tmp_path)
    dump = ["dump-market-data", "--start", "2023-07-20T00:00:00Z", "--end", T1, "--out", "s.parquet"]
    dumped = invoke(*dump, "--universe", "SOL,BTC,ETH")
    assert dumped.exit_code == 0, dumped.output
    off = ["--config", NOTEBOOK_OFF]  # the universe matters here, not the observer's report
    runs = {
        "dagster": ["simulate", "--model", "C1b", *DAY, *off],
        "core": [
            "simulate",
            "--engine",
            "core",
            "--model",
            "C1b",
            "--start",
            T0,
            "--end",
            "2023-07-21T06:00:00Z",
            *off,
        ],
        "historical": ["historical-pnl", "--model", "C1b", *DAY],
    }
    for name, args in runs.items():
        done = invoke(*args, "--market-data", "s.parquet", "--root", name)
        assert done.exit_code == 0, done.output
        assert "universe all: BTC,ETH,SOL" in done.stderr
        (saved,) = Path(name).rglob("system_config.yaml")
        config = yaml.safe_load(saved.read_text())
        assert (config["universe"], config["universe_rule"]) == (["BTC", "ETH", "SOL"], "all"), name
        if name != "historical":  # the observer section reaches the run (through Dagster's resource too)
            assert config["observer"]["notebook"] is False, name
            assert not list(Path(name).rglob("*.ipynb")), name  # no observer notebook: no kernel started


def test_dump_of_all_the_assets_of_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = invoke(*DUMP, "--universe", "all", "--out", "all.parquet")
    assert done.exit_code == 0, done.output
    assert "candles of 8 assets" in done.stdout


def test_top_n_is_resolved_at_the_start_and_recorded(tmp_path, monkeypatch, cli_snapshot):
    monkeypatch.chdir(tmp_path)
    window = ["--start", T0, "--end", "2023-07-21T02:00:00Z"]
    done = invoke("simulate", "--engine", "core", "--model", "C1b", *window, "--market-data", str(cli_snapshot),
                  "--universe", "top:2/6h", "--root", "out")  # fmt: skip
    assert done.exit_code == 0, done.output
    (saved,) = Path("out").rglob("system_config.yaml")
    config = yaml.safe_load(saved.read_text())
    assert config["universe_rule"] == "top:2/6h" and len(config["universe"]) == 2
    assert f"universe top:2/6h: {','.join(config['universe'])}" in done.stderr
    missing = invoke("simulate", "--engine", "core", "--model", "C1b", *window, "--market-data", "nowhere.parquet",
                     "--universe", "BTC", "--root", "out2")  # fmt: skip
    assert missing.exit_code == 2 and "nowhere.parquet not found" in missing.stderr
    daily = invoke("historical-pnl", "--model", "C1b", *DAY, "--market-data", str(cli_snapshot), "--universe", "top:2",
                   "--universe-each-day", "--root", "daily")  # fmt: skip
    assert daily.exit_code == 0, daily.output
    (saved,) = Path("daily").rglob("system_config.yaml")
    config = yaml.safe_load(saved.read_text())
    assert config["universe_each_day"] is True and list(config["universe_by_day"]) == ["2023-07-21", "2023-07-22"]
