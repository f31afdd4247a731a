"""The ``prod-system`` command line."""

from __future__ import annotations

import logging
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import click
import pandas as pd

from prod_system.core.config import ConfigError, load_config
from prod_system.core.dag import ModelError
from prod_system.core.log_dir import LogDirExistsError
from prod_system.core.market_data import (
    MarketDataError,
    load_source,
    select_window,
    write_snapshot,
)
from prod_system.core.timeutil import parse_duration, to_utc

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_RECONCILED = 3
BUNDLED_DATA = Path(__file__).parent / "data" / "binance_futures_1m"


class _Progress:
    """One status line per stage, redrawn in place on a terminal and printed every 10% otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last: tuple[str, int] = ("", -1)

    def __call__(self, stage: str, done: int, total: int) -> None:
        percent = done * 100 // max(total, 1)
        step = percent if self.tty else percent // 10 * 10
        if (stage, step) == self.last:
            return
        self.last = (stage, step)
        bar = "#" * (percent // 5) + "." * (20 - percent // 5)
        end = "\n" if (not self.tty or done == total) else ""
        click.echo(f"\r{stage:>9} [{bar}] {done}/{total} bars", err=True, nl=False)
        if end:
            click.echo("", err=True)


def _fail(message: str, hint: str | None = None, code: int = EXIT_BAD_INPUT) -> None:
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    sys.exit(code)


def _timestamp(value: str | None, name: str):
    if value is None:
        return None
    try:
        return to_utc(value)
    except ValueError as error:
        _fail(f"--{name}: {error}")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """prod_system: a crypto trading system as a Dagster asset graph.

    Typical session: dump candles into a snapshot, simulate a model on it, read the system log dir.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@main.command("dump-market-data")
@click.option(
    "--source",
    default=f"csv:{BUNDLED_DATA}",
    show_default="bundled candles",
    help="'csv:DIR' with {SYMBOL}_USDT.csv.gz files, 'parquet:FILE', or the real-time market database "
    "(sqlite:///FILE or postgresql://user@host/db).",
)
@click.option(
    "--universe", default="BTC,ETH,SOL,BNB,XRP,DOGE,DOT,MATIC", show_default=True, help="Comma-separated assets."
)
@click.option("--start", required=True, help="First candle's open, UTC (e.g. 2023-07-20T00:00:00Z).")
@click.option("--end", required=True, help="Window end (exclusive), UTC.")
@click.option(
    "--knowledge-delay",
    default="10s",
    show_default=True,
    help="Knowledge time = candle close + this delay (files carry none).",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Snapshot file to write (.parquet).")
def dump_market_data(source: str, universe: str, start: str, end: str, knowledge_delay: str, out: str) -> None:
    """Turn raw candles into a replayable market-data snapshot (one row per candle and asset)."""
    assets = [a.strip().upper() for a in universe.split(",") if a.strip()]
    begin, finish = _timestamp(start, "start"), _timestamp(end, "end")
    if finish <= begin:
        _fail(f"--end ({end}) must be after --start ({start})")
    try:
        delay = parse_duration(knowledge_delay)
        candles = select_window(load_source(source, assets, delay, (begin, finish)), begin, finish)
    except (MarketDataError, ValueError) as error:
        _fail(str(error), "check --source and --universe")
    if candles.empty:
        _fail(f"no candles between {begin} and {finish} in {source}", "check --start and --end")
    path = write_snapshot(candles, out)
    counts = candles.groupby("asset").size()
    click.echo(
        f"wrote {len(candles):,} candles of {len(counts)} assets "
        f"({candles['bar_start'].min()} to {candles['bar_end'].max()}) to {path}"
    )


def _default_source(config_path: str | None) -> str | None:
    """With neither --market-data nor a config file, replay the candles bundled with the package."""
    return None if config_path else f"csv:{BUNDLED_DATA}"


def _simulation_options(func):
    options = [
        click.option(
            "--config",
            "config_path",
            type=click.Path(dir_okay=False),
            help="System config YAML; the options below override it.",
        ),
        click.option("--model", help="C1b, C3a, or 'package.module:function'."),
        click.option("--market-data", help="Snapshot file (.parquet) or 'csv:DIR' [default: bundled candles]."),
        click.option("--start", help="Window start, UTC, aligned to the bar."),
        click.option("--end", help="Window end, UTC, aligned to the bar."),
        click.option("--root", help="Root of the system log dirs."),
        click.option("--universe", help="Comma-separated assets (default: the 8 bundled ones)."),
        click.option("--bar", help="Bar length, e.g. 5m (default 5m)."),
        click.option("--overwrite", is_flag=True, help="Replace an existing log dir of the same window."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _window_config(config_path, model, market_data, start, end, root, universe, bar, **fixed):
    """The config of a simulation-like command: its file, then its options (unset ones left out)."""
    return load_config(
        config_path,
        model=model,
        start=start,
        end=end,
        log_root=root,
        bar=bar,
        universe=[a for a in universe.split(",") if a] if universe else None,
        market_data={"source": market_data if market_data else _default_source(config_path)},
        **fixed,
    )


@contextmanager
def _clear_errors():
    """Bad input as one line plus a hint, exit 2 (nothing has been written when these are raised)."""
    try:
        yield
    except ConfigError as error:
        _fail(str(error), "see the configuration reference in the README")
    except (MarketDataError, ModelError) as error:
        _fail(str(error))
    except LogDirExistsError as error:
        _fail(str(error), "or choose another --root")


@main.command()
@_simulation_options
@click.option(
    "--engine",
    type=click.Choice(["dagster", "core"]),
    default="dagster",
    show_default=True,
    help="'dagster': a partition backfill of the model's assets; 'core': the pure core, no Dagster.",
)
def simulate(config_path, model, market_data, start, end, root, universe, bar, overwrite, engine) -> None:
    """Replay the past through the production system and write its system log dir."""
    began = time.perf_counter()
    with _clear_errors():
        config = _window_config(config_path, model, market_data, start, end, root, universe, bar, run_mode="simulation")
        if not market_data and not config_path:
            click.echo(f"market data: bundled candles ({BUNDLED_DATA.name})", err=True)
        if engine == "core":
            from prod_system.core.simulation import simulate as run

            summary = run(config, overwrite=overwrite, progress=_Progress())
        else:
            from prod_system.launch import simulate_with_dagster

            summary = simulate_with_dagster(config, overwrite=overwrite, progress=_Progress())
    summary.seconds = time.perf_counter() - began
    for line in summary.lines():
        click.echo(line)


@main.command("historical-pnl")
@_simulation_options
def historical_pnl(config_path, model, market_data, start, end, root, universe, bar, overwrite) -> None:
    """Run a model in batch over a long history and write its research portfolio and PnL report.

    Writes {root}/{model}/historical_pnl/{start}.{end}/ (the log dir's table layout): the predictions,
    target positions, portfolio tables and pnl_report.png/.md. No clock replay and no broker: months of
    5-minute bars take seconds.
    """
    began = time.perf_counter()
    with _clear_errors():
        config = _window_config(config_path, model, market_data, start, end, root, universe, bar)
        from prod_system.core.historical import historical_pnl as run

        result = run(config, overwrite=overwrite, progress=_Progress())
    result.seconds = time.perf_counter() - began
    for line in result.lines():
        click.echo(line)


@main.command()
@click.option("--model", required=True, help="The model whose runs to reconcile (its folder name under --root).")
@click.option("--root", required=True, type=click.Path(file_okay=False), help="Root of the system log dirs.")
@click.option("--start", help="Reconcile bars ending after this time, UTC [default: each run's start].")
@click.option("--end", help="... and up to this time, UTC [default: each run's last bar].")
@click.option(
    "--mode",
    "run_mode",
    type=click.Choice(["simulation", "paper_trading", "prod"]),
    help="Only runs of this run mode [default: all].",
)
@click.option("--trigger", type=click.Choice(["manual", "scheduled"]), help="Only runs of this trigger [default: all].")
@click.option("--market-data", help="Market data for research, instead of the source saved in each run's config.")
@click.option("--holdings-tolerance", default=10.0, show_default=True, help="USDT of holdings or targets per asset.")
@click.option("--pnl-tolerance", default=1.0, show_default=True, help="USDT of per-bar PnL per asset.")
def reconcile(model, root, start, end, run_mode, trigger, market_data, holdings_tolerance, pnl_tolerance) -> None:
    """Compare production with research for the runs in a window (the PnL real-time observer).

    For each run, writes an HTML report with plots, summary.json and side-by-side tables to
    {start}.{end}/pnl_realtime_observer_notebook/{run_timestamp}/ next to its system log dir.
    Exit code 0: every run reconciles; 3: some run diverges from research; 2: bad input.
    """
    from prod_system.core.observer import find_runs, observe
    from prod_system.core.reconciliation import ReconciliationError

    begin, finish = _timestamp(start, "start"), _timestamp(end, "end")
    if begin is not None and finish is not None and finish <= begin:
        _fail(f"--end ({end}) must be after --start ({start})")
    runs = find_runs(root, model, run_mode, trigger, begin, finish)
    if not runs:
        window = f" between {begin} and {finish}" if begin or finish else ""
        _fail(f"no run of {model} under {root}{window}", f"runs live in {root}/{model}/{{run_mode}}/{{trigger}}/")
    diverged = 0
    for run in runs:
        try:
            report = observe(run.log_dir, begin, finish, market_data, None, holdings_tolerance, pnl_tolerance)
        except (ConfigError, MarketDataError, ReconciliationError) as error:
            _fail(str(error))
        summary = report.summary
        ok = summary["reconciled"] and summary["first_divergence"] is None
        diverged += not ok
        click.echo(
            f"{run.run_mode}/{run.trigger} {run.start:%Y-%m-%d %H:%M}..{run.end:%Y-%m-%d %H:%M}: {summary['verdict']}"
        )
        click.echo(f"  report: {report.html}")
    if diverged:
        click.echo(f"error: {diverged} of {len(runs)} runs diverge from research", err=True)
        sys.exit(EXIT_NOT_RECONCILED)


@main.command()
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="System config YAML; options override it."
)
@click.option("--model", help="C1b, C3a, or 'package.module:function'.")
@click.option(
    "--mode", "run_mode", type=click.Choice(["paper_trading", "prod"]), default="paper_trading", show_default=True
)
@click.option("--duration", default="1h", show_default=True, help="How long the session trades, e.g. 30m, 24h.")
@click.option("--root", default="system_runs", show_default=True, help="Root of the system log dirs.")
@click.option("--bar", default="5m", show_default=True, help="Bar length (1m makes quick sessions).")
@click.option("--universe", help="Comma-separated assets (default: the 8 bundled ones).")
@click.option("--database", help="Real-time market database URL [default: sqlite:///{root}/market.db].")
@click.option("--exchange-url", help="Exchange base URL (the local exchange in tests) [default: Binance].")
@click.option("--ingest/--no-ingest", default=True, show_default=True, help="Run the candle ingestion in this process.")
@click.option("--trigger", type=click.Choice(["manual", "scheduled"]), default="manual", show_default=True)
@click.option(
    "--speed",
    default=1.0,
    show_default=True,
    help="Rehearsal only: run the clock this many times faster, from the exchange's time (it must replay at "
    "the same speed).",
)
def run(config_path, model, run_mode, duration, root, bar, universe, database, exchange_url, ingest, trigger,
        speed) -> None:  # fmt: skip
    """Trade live, bar after bar, on the real clock: paper_trading (mocked fills) or prod (orders via ccxt).

    Each bar waits for every asset's candle in the real-time market database, runs the model, sizes the
    targets and sends the orders; everything goes to the session's system log dir. Killed and started
    again with the same options, the session resumes from its persisted state without sending any
    order twice. API keys (prod) come from the environment variables named in the config
    (BINANCE_API_KEY and BINANCE_API_SECRET by default).
    """
    from prod_system.core.clock import RealClock, ScaledClock
    from prod_system.core.exchange_broker import BrokerError
    from prod_system.core.live import LiveSession, session_window, unfinished_session

    try:
        step = parse_duration(bar)
        length = parse_duration(duration)
    except ValueError as error:
        _fail(str(error))
    if speed != 1.0:
        from prod_system.core.exchange_client import binanceusdm_client

        exchange_now = pd.Timestamp(binanceusdm_client(exchange_url).fetch_time(), unit="ms", tz="UTC")
        clock = ScaledClock(exchange_now, speed)
    else:
        clock = RealClock()
    database = database or f"sqlite:///{Path(root).resolve() / 'market.db'}"
    Path(root).mkdir(parents=True, exist_ok=True)
    try:
        template = load_config(
            config_path, model=model, run_mode=run_mode, trigger=trigger, start="2000-01-01T00:00:00Z",
            end="2000-01-02T00:00:00Z", bar=bar, log_root=root, market_data={"source": database},
            universe=[a for a in universe.split(",") if a] if universe else None,
        )  # fmt: skip
        resumable = unfinished_session(root, template.model_name, run_mode, trigger, clock.now())
        if resumable is not None:
            config = load_config(resumable / "system_config.yaml")
            click.echo(f"resuming the unfinished session {resumable}", err=True)
        else:
            start, end = session_window(clock.now(), step, length)
            broker = template.broker.model_dump()
            if run_mode == "prod":
                broker.update(kind="ccxt", exchange_url=exchange_url or broker.get("exchange_url"))
            config = load_config(config_path, **{**template.model_dump(), "start": start, "end": end, "broker": broker})
    except ConfigError as error:
        _fail(str(error), "see the configuration reference in the README")
    stop = threading.Event()
    ingestion = None
    try:
        session = LiveSession(config, clock, on_bar=_print_bar)
        if ingest:
            from prod_system.core.ingestion import Ingestor

            ingestor = Ingestor(session.database, config.universe, clock, exchange_url)
            ingestion = threading.Thread(target=ingestor.run, args=(stop,), daemon=True, name="ingestion")
            ingestion.start()
        click.echo(f"session {config.start} to {config.end}, log dir {session.log_dir.path}", err=True)
        outcomes = session.run()
    except (MarketDataError, ModelError) as error:
        _fail(str(error))
    except BrokerError as error:
        _fail(str(error), "check the exchange URL, the API key variables and the exchange's positions", EXIT_FAILED)
    except KeyboardInterrupt:
        click.echo("interrupted: the session resumes when started again with the same options", err=True)
        sys.exit(130)
    finally:
        stop.set()
        if ingestion is not None:
            ingestion.join(timeout=10)
    traded = sum(o.status == "traded" for o in outcomes)
    click.echo(f"log dir:     {session.log_dir.path}")
    click.echo(f"bars:        {traded} traded, {len(outcomes) - traded} skipped")


def _print_bar(outcome) -> None:
    detail = f"{outcome.orders} orders" if outcome.status == "traded" else outcome.reason
    click.echo(f"bar {outcome.bar_end:%Y-%m-%d %H:%M}: {outcome.status}, {detail}", err=True)


@main.command("exchange-sim")
@click.option("--market-data", required=True, help="Snapshot ('parquet:FILE' or FILE.parquet) or 'csv:DIR' to replay.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (loopback by default).")
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--api-key", envvar="EXCHANGE_API_KEY", help="The account's API key [env: EXCHANGE_API_KEY].")
@click.option("--api-secret", envvar="EXCHANGE_API_SECRET", help="Its secret [env: EXCHANGE_API_SECRET].")
@click.option(
    "--clock",
    type=click.Choice(["shifted", "original", "manual"]),
    default="shifted",
    show_default=True,
    help="shifted: the candles close in real time from start-up; original: their own times; manual: moved "
    "by POST /_control/clock.",
)
@click.option("--speed", default=1.0, show_default=True, help="Market minutes per real minute (shifted, original).")
@click.option("--taker-fee", default="0.0004", show_default=True)
@click.option("--maker-fee", default="0.0002", show_default=True)
@click.option("--initial-balance", default="1000000", show_default=True, help="USDT in the account at start.")
@click.option("--faults", type=click.Path(dir_okay=False), help="JSON list of fault rules (per endpoint).")
@click.option("--state", type=click.Path(dir_okay=False), help="JSON file keeping the accounts across restarts.")
def exchange_sim(market_data, host, port, api_key, api_secret, clock, speed, taker_fee, maker_fee, initial_balance,
                 faults, state) -> None:  # fmt: skip
    """Run a local Binance USDT-M futures exchange that the unmodified ccxt client trades on.

    It replays the market data on its clock, fills market orders at the current price with taker fees
    and limit orders when the price crosses, keeps positions, balances and trades, signs and checks
    requests like Binance, and injects faults on chosen endpoints (latency, timeouts, 5xx, 429,
    rejections, partial fills). Point the broker at it with broker.exchange_url.
    """
    from prod_system.exchange.__main__ import main as exchange_main

    argv = ["--market-data", market_data, "--host", host, "--port", str(port), "--clock", clock]
    argv += ["--speed", str(speed), "--taker-fee", taker_fee, "--maker-fee", maker_fee]
    argv += ["--initial-balance", initial_balance]
    for flag, value in (("--api-key", api_key), ("--api-secret", api_secret), ("--faults", faults), ("--state", state)):
        if value:
            argv += [flag, value]
    click.echo(
        f"local exchange on http://{host}:{port} replaying {market_data} ({clock} clock); Ctrl-C stops it", err=True
    )
    sys.exit(exchange_main(argv))


if __name__ == "__main__":
    main()
