"""The ``prod-system`` command line.

Bad input is reported as one ``error:`` line and one ``hint:`` line on stderr, never a traceback;
the exit codes are listed in the root help (``EXIT_*`` below). Progress goes to stderr, results to
stdout.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click
import pandas as pd

from prod_system.common.timeutil import parse_duration, to_utc
from prod_system.config import DEFAULT_UNIVERSE, RunMode, is_database, load_config
from prod_system.data import BUNDLED_CANDLES as BUNDLED_DATA
from prod_system.data.market_data import select_window, write_snapshot
from prod_system.data.sources import load_source
from prod_system.errors import ConfigError, LogDirExistsError, MarketDataError, ModelError
from prod_system.models.dag import load_model

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_RECONCILED = 3
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130

DEBUG_ENV = "PROD_SYSTEM_DEBUG"
TIMESTAMP_HINT = "timestamps are UTC ISO 8601 with a zone, e.g. 2023-07-21T00:00:00Z"
DURATION_HINT = "durations are a whole number and a unit: 30s, 1m, 5m, 1h, 1d"


class _Run:
    """What the failure handler needs to know about the command in progress."""

    debug = False
    log_file: Path | None = None
    market_data: str | None = None  # the command's market-data source, named by its errors


class _Progress:
    """Progress of a long stage on stderr: a bar redrawn in place on a terminal, otherwise a few
    plain lines per stage (its start, every 25%, its end) that read well in a log file."""

    def __init__(self, unit: str = "bars", tty: bool | None = None) -> None:
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.unit = unit
        self.last: tuple[str, int] = ("", -1)
        self.began = self.seen = time.perf_counter()  # the stage's start: the previous stage's last report

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if stage != self.last[0]:
            self.began = self.seen
        self.seen = now
        percent = done * 100 // max(total, 1)
        step = percent if self.tty else (100 if done >= total else percent // 25 * 25)
        if (stage, step) == self.last:
            return
        self.last = (stage, step)
        bar = "#" * (percent // 5) + "." * (20 - percent // 5)
        line = f"{stage:>9} [{bar}] {done}/{total} {self.unit} {now - self.began:5.1f}s"
        if self.tty:
            click.echo(f"\r{line}", err=True, nl=done >= total)
        else:
            click.echo(line, err=True)


def _one_line(text: str) -> str:
    """Error texts from libraries may span lines (YAML marks, Dagster): join them into one."""
    parts = [part.strip() for part in str(text).splitlines()]
    return " ".join(part for part in parts if part and set(part) != {"^"})


def _fail(message: str, hint: str, code: int = EXIT_BAD_INPUT) -> None:
    """Print one ``error:`` line and one ``hint:`` line to stderr and exit with ``code``."""
    click.echo(f"error: {_one_line(message)}", err=True)
    click.echo(f"hint: {_one_line(hint)}", err=True)
    sys.exit(code)


def _timestamp(value: str | None, name: str):
    if value is None:
        return None
    try:
        return to_utc(value)
    except (ValueError, TypeError) as error:
        _fail(f"--{name}: {error}", TIMESTAMP_HINT)


def _duration(value: str, name: str) -> pd.Timedelta:
    try:
        return parse_duration(value)
    except ValueError as error:
        _fail(f"--{name}: {error}", DURATION_HINT)


def _check_writable(path: str | Path, option: str) -> None:
    """Refuse, before any work, a folder that cannot be created or written (nothing is created here)."""
    target = Path(path).absolute()
    ancestor = target
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        _fail(f"{option} {path}: {ancestor} is a file, not a folder", f"give {option} a folder path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        _fail(f"{option} {path}: {ancestor} is not writable", f"give {option} a folder you can write to")


def _config_hint(message: str) -> str:
    """The most useful next step for a config error, from the field it names."""
    hints = [
        ("whole session days", "give --start and --end at 00:00:00Z, or use --engine core for other windows"),
        ("config file", "--config takes a YAML mapping of fields: see docs/configuration.md"),
        (
            "field 'market_data.source'",
            "--market-data takes a .parquet snapshot or 'csv:DIR' (a folder of {ASSET}_USDT.csv.gz files; "
            "dump-market-data turns it into a snapshot); see docs/configuration.md",
        ),
        ("field 'start': Field required", "give --start, e.g. --start 2023-07-21T00:00:00Z (or start: in --config)"),
        ("field 'end': Field required", "give --end, e.g. --end 2023-07-22T00:00:00Z (or end: in --config)"),
        ("field 'model'", "give --model C1b, C3a or 'package.module:function' (or model: in the --config file)"),
        ("must be after start", "--end must be later than --start"),
        ("not aligned", "--start and --end must fall on a bar boundary (e.g. :00, :05, :10 for --bar 5m)"),
        ("field 'bar'", "--bar is a whole number of minutes, e.g. 1m, 5m, 15m, 1h"),
        ("field 'start'", TIMESTAMP_HINT),
        ("field 'end'", TIMESTAMP_HINT),
        ("no lot size", "other assets need their lot sizes under portfolio.instruments in a --config file"),
        ("field 'universe'", f"--universe is comma-separated asset names, e.g. {','.join(DEFAULT_UNIVERSE)}"),
    ]
    for needle, hint in hints:
        if needle in message:
            return hint
    return "see the fields of the system config in docs/configuration.md"


def _naming_source(message: str) -> str:
    """A market-data error names its source (some only say what is wrong with the candles)."""
    source = _Run.market_data
    if source is None:
        return message
    location = source.partition(":")[2] if source.startswith(("csv:", "parquet:")) else source
    return message if location in message else f"{message} (in {source})"


def _market_data_hint(message: str) -> str:
    if "outside the run's window" in message or "covers" in message:
        return "choose --start/--end inside the market data, or give --market-data that covers the window"
    return "--market-data takes a .parquet snapshot (see dump-market-data) or 'csv:DIR'"


MODEL_HINT = "built-in models are C1b and C3a; a custom model is 'package.module:function' importable from here"


def _model_failure(error: ModelError) -> None:
    if "rejected its parameters" in str(error):
        _fail(f"field 'model_params': {error}", "model_params are keyword arguments of the model's function")
    _fail(str(error), MODEL_HINT)


NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2: bare `prod-system`


def _debug_flag(ctx, param, value) -> None:
    if value:
        _Run.debug = True


DEBUG_HELP = f"Show the Python traceback of an unexpected failure [env: {DEBUG_ENV}=1]."


class _Cli(click.Group):
    """The root command: usage errors and failures as one ``error:`` line plus a ``hint:`` line."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        """Every command also takes --debug, where users type it: ``prod-system reconcile ... --debug``."""
        debug = click.Option(["--debug"], is_flag=True, expose_value=False, callback=_debug_flag, help=DEBUG_HELP)
        cmd.params.append(debug)
        super().add_command(cmd, name)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Always exits (like click's standalone mode), with the codes of the root help."""
        _Run.debug = os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes", "on")
        _Run.log_file = None
        _Run.market_data = None
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NO_ARGS_IS_HELP as error:
            error.show()
            sys.exit(error.exit_code)
        except click.UsageError as error:
            where = error.ctx.command_path if error.ctx is not None else "prod-system"
            _fail(error.format_message(), f"see '{where} --help'", EXIT_BAD_INPUT)
        except click.ClickException as error:
            _fail(error.format_message(), "see 'prod-system --help'", error.exit_code)
        except click.Abort:
            _fail("interrupted", "run the same command again: an interrupted run does not block it", EXIT_INTERRUPTED)
        except Exception as error:
            if _Run.debug:
                raise
            _unexpected(error)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


def _unexpected(error: Exception) -> None:
    """A failure no check foresaw (a bug, a lost connection, a full disk): one line, where to look, exit 1."""
    where = f"the log is in {_Run.log_file}; " if _Run.log_file is not None and _Run.log_file.exists() else ""
    debug = f"run again with --debug (or {DEBUG_ENV}=1) to see the traceback"
    if isinstance(error, OSError) and error.strerror:
        message = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
        _fail(message, f"check that path (permissions, free space); {where}{debug}", EXIT_FAILED)
    message = f"{type(error).__name__}: {_one_line(error)}"
    _fail(f"unexpected failure: {message[:500]}", f"{where}{debug}", EXIT_FAILED)


@click.group(
    cls=_Cli,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Run 'prod-system COMMAND --help' for a command's options and examples.",
)
@click.option(
    "--debug",
    is_flag=True,
    envvar=DEBUG_ENV,
    help=DEBUG_HELP + " Also accepted after the command.",
)
def main(debug: bool) -> None:
    """prod_system: a crypto trading system (Binance USDT-M futures) built as a Dagster asset graph.

    It turns 1-minute candles into a model's predictions, target positions and orders, the same
    way in a simulation of the past, in paper trading and in production, and writes everything a
    run did to its system log dir: {root}/{model}/{run_mode}/{trigger}/{start}.{end}/system_log_dir/.

    \b
    Typical workflow (the bundled candles cover 2023-07-19 to 2023-07-28 UTC):
      1. dump-market-data  candles -> a replayable snapshot file
      2. simulate          replay a window through the production system
      3. reconcile         compare the runs with research (HTML report)
      4. historical-pnl    a model's research PnL over a long history
      5. exchange-sim      a local exchange to rehearse live trading on
      6. run               trade live: paper_trading, then prod

    Timestamps are UTC with a zone (2023-07-21T00:00:00Z); durations read 30s, 5m, 1h, 1d.
    Progress goes to stderr, results to stdout.

    \b
    Exit codes:
      0    success
      1    failure while working (exchange or I/O error, or a bug: try --debug)
      2    bad input or usage: an 'error:' line and a 'hint:' line on stderr
      3    reconcile: some run diverges from research
      4    run: cannot reach the exchange at start (nothing was started or written)
      130  interrupted (Ctrl-C)
    """
    _Run.debug = _Run.debug or debug
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@main.command(
    "dump-market-data",
    short_help="Turn candles (CSV, Parquet, database) into a snapshot.",
)
@click.option(
    "--source",
    default=f"csv:{BUNDLED_DATA}",
    show_default="bundled candles",
    help="'csv:DIR' with {ASSET}_USDT.csv.gz files, 'parquet:FILE' (or FILE.parquet), or the real-time "
    "market database (sqlite:///FILE or postgresql://user@host/db).",
)
@click.option(
    "--universe",
    default=",".join(DEFAULT_UNIVERSE),
    show_default=True,
    help="Comma-separated assets (without the USDT quote).",
)
@click.option("--start", required=True, help="Open of the first candle, UTC, e.g. 2023-07-20T00:00:00Z.")
@click.option("--end", required=True, help="Window end (exclusive), UTC, e.g. 2023-07-22T00:00:00Z.")
@click.option(
    "--knowledge-delay",
    default="10s",
    show_default=True,
    help="Files carry no knowledge time: a candle is known at its close + this delay (30s, 1m...). "
    "The database keeps its own.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Snapshot file to write (.parquet); replaced if it exists, its folder created.",
)
def dump_market_data(source: str, universe: str, start: str, end: str, knowledge_delay: str, out: str) -> None:
    """Turn raw 1-minute candles into a replayable market-data snapshot.

    The snapshot has one row per candle and asset, with the time the system could first know it
    (knowledge_ts), so a replay never peeks. simulate, historical-pnl and exchange-sim read it.

    \b
    Examples:
      prod-system dump-market-data --start 2023-07-20T00:00:00Z \\
        --end 2023-07-22T00:00:00Z --out snapshot.parquet
      prod-system dump-market-data --universe BTC,ETH --start 2023-07-21T00:00:00Z \\
        --end 2023-07-21T06:00:00Z --out btc_eth.parquet
    """
    assets = [a.strip().upper() for a in universe.split(",") if a.strip()]
    if not assets or not all(asset.isalnum() for asset in assets):
        _fail(f"--universe {universe!r}: asset names must be alphanumeric", "e.g. --universe BTC,ETH")
    begin, finish = _timestamp(start, "start"), _timestamp(end, "end")
    if finish <= begin:
        _fail(f"--end ({end}) must be after --start ({start})", "--end is exclusive: give a later time")
    delay = _duration(knowledge_delay, "knowledge-delay")
    if Path(out).suffix != ".parquet":
        _fail(f"--out {out}: a snapshot is a .parquet file", f"e.g. --out {Path(out).with_suffix('.parquet').name}")
    _check_writable(Path(out).parent, "--out")
    progress = _Progress(unit="assets")
    try:
        if is_database(source) or source.startswith("csv:"):  # one read per asset: progress on long dumps
            frames = []
            for i, asset in enumerate(assets):
                frames.append(load_source(source, [asset], delay, (begin, finish)))
                progress("load", i + 1, len(assets))
            candles = pd.concat(frames, ignore_index=True)
        else:
            candles = load_source(source, assets, delay, (begin, finish))
            candles = candles[candles["asset"].isin(assets)]
        candles = select_window(candles, begin, finish)
    except (MarketDataError, ValueError) as error:
        _fail(str(error), "check --source (csv:DIR, parquet:FILE or a database URL) and --universe")
    if candles.empty:
        _fail(f"no candles between {begin} and {finish} in {source}", "check --start and --end (and --universe)")
    missing = sorted(set(assets) - set(candles["asset"]))
    if missing:
        click.echo(f"warning: no candles for {','.join(missing)} in the window", err=True)
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
            help="System config YAML (fields: docs/configuration.md); the options below override its fields.",
        ),
        click.option("--model", help="C1b, C3a, or 'package.module:function'. Required (here or in --config)."),
        click.option(
            "--market-data",
            help="Snapshot file (.parquet, from dump-market-data) or 'csv:DIR'  [default: bundled candles].",
        ),
        click.option("--start", help="Window start, UTC, on a bar boundary, e.g. 2023-07-21T00:00:00Z. Required."),
        click.option("--end", help="Window end (exclusive), UTC, on a bar boundary. Required."),
        click.option("--root", help="Root folder of the log dirs (created if missing)  [default: system_runs]."),
        click.option(
            "--universe",
            help=f"Comma-separated assets  [default: {','.join(DEFAULT_UNIVERSE)}].",
        ),
        click.option("--bar", help="Bar length, whole minutes: 1m, 5m, 15m, 1h...  [default: 5m]."),
        click.option("--overwrite", is_flag=True, help="Replace an earlier run of the same window (else refused)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _window_config(config_path, model, market_data, start, end, root, universe, bar, **fixed):
    """The config of a simulation-like command: its file, then its options (unset ones left out)."""
    config = load_config(
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
    _Run.market_data = config.market_data.source
    return config


@contextmanager
def _clear_errors():
    """Bad input as one line plus a hint, exit 2 (nothing has been written when these are raised)."""
    try:
        yield
    except ConfigError as error:
        _fail(str(error), _config_hint(str(error)))
    except MarketDataError as error:
        _fail(_naming_source(str(error)), _market_data_hint(str(error)))
    except ModelError as error:
        _model_failure(error)
    except LogDirExistsError as error:
        _fail(str(error), "pass --overwrite to replace it, or choose another --root")


def _window_line(config, engine: str) -> str:
    bars = int((config.end - config.start) / config.bar_delta)
    return (
        f"{config.model}: {config.start:%Y-%m-%d %H:%M} to {config.end:%Y-%m-%d %H:%M} UTC, "
        f"{bars} bars of {config.bar} ({engine})"
    )


@main.command(short_help="Replay a past window through the production system.")
@_simulation_options
@click.option(
    "--engine",
    type=click.Choice(["dagster", "core"]),
    default="dagster",
    show_default=True,
    help="'dagster': a backfill of the model's assets over whole UTC days (shows up in `dagster dev`); "
    "'core': the pure core, no Dagster, any window.",
)
def simulate(config_path, model, market_data, start, end, root, universe, bar, overwrite, engine) -> None:
    """Replay the past through the production system and write its system log dir.

    Each bar the model sees only what it could have known then; orders fill on the mocked broker.
    Writes {root}/{model}/simulation/manual/{start}.{end}/system_log_dir/ (tables, log.txt,
    pnl_report.png) and a research reconciliation report; prints a summary on stdout.

    \b
    Examples:
      prod-system simulate --model C1b --start 2023-07-21T00:00:00Z \\
        --end 2023-07-22T00:00:00Z --root OUT
      prod-system simulate --engine core --model C3a --market-data snapshot.parquet \\
        --start 2023-07-21T06:00:00Z --end 2023-07-21T12:00:00Z --root OUT
    """
    began = time.perf_counter()
    with _clear_errors():
        config = _window_config(
            config_path, model, market_data, start, end, root, universe, bar, run_mode=RunMode.SIMULATION
        )
        _check_writable(config.log_root, "--root")
        load_model(config.model, config.bar_delta, config.model_params)  # a bad model: refused before any output
        if not market_data and not config_path:
            click.echo(f"market data: bundled candles ({BUNDLED_DATA.name})", err=True)
        click.echo(f"simulating {_window_line(config, engine)}", err=True)
        _Run.log_file = config.log_dir() / "log.txt"
        if engine == "core":
            from prod_system.runs.simulate import simulate as run

            summary = run(config, overwrite=overwrite, progress=_Progress())
        else:
            from prod_system.cli.launch import simulate_with_dagster

            summary = simulate_with_dagster(config, overwrite=overwrite, progress=_Progress())
    summary.seconds = time.perf_counter() - began
    for line in summary.lines():
        click.echo(line)


@main.command("historical-pnl", short_help="Research PnL of a model over a long history, in batch.")
@_simulation_options
def historical_pnl(config_path, model, market_data, start, end, root, universe, bar, overwrite) -> None:
    """Run a model in batch over a long history and write its research portfolio and PnL report.

    Writes {root}/{model}/historical_pnl/{start}.{end}/ (the log dir's table layout): the predictions,
    target positions, portfolio tables and pnl_report.png/.md. No clock replay and no broker: months of
    5-minute bars take seconds.

    \b
    Examples:
      prod-system historical-pnl --model C1b --start 2023-07-20T00:00:00Z \\
        --end 2023-07-27T00:00:00Z --root OUT
      prod-system historical-pnl --model C3a --bar 15m --start 2023-07-20T00:00:00Z \\
        --end 2023-07-27T00:00:00Z --root OUT
    """
    began = time.perf_counter()
    with _clear_errors():
        config = _window_config(config_path, model, market_data, start, end, root, universe, bar)
        _check_writable(config.log_root, "--root")
        load_model(config.model, config.bar_delta, config.model_params)  # a bad model: refused before any output
        click.echo(f"historical pnl of {_window_line(config, 'batch')}", err=True)
        from prod_system.runs.historical import historical_pnl as run

        result = run(config, overwrite=overwrite, progress=_Progress())
    result.seconds = time.perf_counter() - began
    for line in result.lines():
        click.echo(line)


@main.command(short_help="Compare runs with research; exit 3 if one diverges.")
@click.option("--model", required=True, help="The model whose runs to reconcile (its folder name under --root).")
@click.option(
    "--root",
    required=True,
    type=click.Path(file_okay=False),
    help="Root folder of the log dirs, as given to simulate or run.",
)
@click.option("--start", help="Reconcile bars ending after this time, UTC  [default: each run's start].")
@click.option("--end", help="... and up to this time, UTC  [default: each run's last bar].")
@click.option(
    "--mode",
    "run_mode",
    type=click.Choice([mode.value for mode in RunMode]),
    help="Only runs of this run mode  [default: all].",
)
@click.option(
    "--trigger", type=click.Choice(["manual", "scheduled"]), help="Only runs of this trigger  [default: all]."
)
@click.option(
    "--market-data",
    help="Market data for research (.parquet or 'csv:DIR')  [default: the source in each run's config].",
)
@click.option(
    "--holdings-tolerance",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Allowed gap in holdings or targets, USDT per asset.",
)
@click.option(
    "--pnl-tolerance",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Allowed gap in per-bar PnL, USDT per asset.",
)
def reconcile(model, root, start, end, run_mode, trigger, market_data, holdings_tolerance, pnl_tolerance) -> None:
    """Compare production with research for the runs in a window (the PnL real-time observer).

    For each run, writes an HTML report with plots, summary.json and side-by-side tables to
    {start}.{end}/pnl_realtime_observer_notebook/{run_timestamp}/ next to its system log dir, and
    prints one verdict line per run. Exit code 0: every run reconciles; 3: some run diverges from
    research; 2: bad input (no such root, no run in the window).

    \b
    Examples:
      prod-system reconcile --model C1b --root OUT
      prod-system reconcile --model C1b --root OUT --mode simulation \\
        --start 2023-07-21T00:00:00Z --end 2023-07-22T00:00:00Z
    """
    from prod_system.analysis.observer import find_runs, observe
    from prod_system.errors import ReconciliationError

    begin, finish = _timestamp(start, "start"), _timestamp(end, "end")
    if begin is not None and finish is not None and finish <= begin:
        _fail(f"--end ({end}) must be after --start ({start})", "--end must be later than --start")
    if not Path(root).is_dir():
        _fail(
            f"--root {root}: no such folder",
            "give the --root that simulate or run wrote to (run's default: system_runs)",
        )
    runs = find_runs(root, model, run_mode, trigger, begin, finish)
    if not runs:
        window = f" between {begin} and {finish}" if begin or finish else ""
        _fail(f"no run of {model} under {root}{window}", f"runs live in {root}/{model}/{{run_mode}}/{{trigger}}/")
    diverged = 0
    for run in runs:
        try:
            report = observe(run.log_dir, begin, finish, market_data, None, holdings_tolerance, pnl_tolerance)
        except ConfigError as error:
            _fail(str(error), f"check {run.log_dir}/system_config.yaml")
        except MarketDataError as error:
            _fail(str(error), _market_data_hint(str(error)))
        except ReconciliationError as error:
            _fail(str(error), f"check the run's log dir {run.log_dir}")
        summary = report.summary
        ok = summary["reconciled"] and summary["first_divergence"] is None
        diverged += not ok
        click.echo(
            f"{run.run_mode}/{run.trigger} {run.start:%Y-%m-%d %H:%M}..{run.end:%Y-%m-%d %H:%M}: {summary['verdict']}"
        )
        click.echo(f"  report: {report.html}")
    if diverged:
        _fail(
            f"{diverged} of {len(runs)} runs diverge from research",
            "open the reports above: they show the first diverging bar",
            EXIT_NOT_RECONCILED,
        )


@main.command(short_help="Trade live on the real clock (paper_trading or prod).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="System config YAML (fields: docs/configuration.md); the options below override its fields.",
)
@click.option("--model", help="C1b, C3a, or 'package.module:function'. Required (here or in --config).")
@click.option(
    "--mode",
    "run_mode",
    type=click.Choice(RunMode.live()),
    default="paper_trading",
    show_default=True,
    help="paper_trading: mocked fills; prod: real orders through ccxt.",
)
@click.option("--duration", default="1h", show_default=True, help="How long the session trades: 30m, 24h, 7d...")
@click.option("--root", default="system_runs", show_default=True, help="Root folder of the log dirs.")
@click.option("--bar", default="5m", show_default=True, help="Bar length, whole minutes (1m makes quick sessions).")
@click.option("--universe", help=f"Comma-separated assets  [default: {','.join(DEFAULT_UNIVERSE)}].")
@click.option("--database", help="Real-time market database URL  [default: sqlite:///{root}/market.db].")
@click.option(
    "--exchange-url",
    help="Exchange base URL, e.g. http://127.0.0.1:8765 for exchange-sim  [default: Binance].",
)
@click.option(
    "--ingest/--no-ingest",
    default=True,
    show_default=True,
    help="Fetch the candles into the database in this process (--no-ingest: another process does).",
)
@click.option(
    "--trigger",
    type=click.Choice(["manual", "scheduled"]),
    default="manual",
    show_default=True,
    help="Recorded in the log dir's path.",
)
@click.option(
    "--speed",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Rehearsal only: run the clock this many times faster, from the exchange's time (it must "
    "replay at the same speed).",
)
def run(config_path, model, run_mode, duration, root, bar, universe, database, exchange_url, ingest, trigger,
        speed) -> None:  # fmt: skip
    """Trade live, bar after bar, on the real clock: paper_trading (mocked fills) or prod (orders via ccxt).

    Each bar waits for every asset's candle in the real-time market database, runs the model, sizes the
    targets and sends the orders; everything goes to the session's system log dir, one line per bar to
    stderr. Killed and started again with the same options, the session resumes from its persisted
    state without sending any order twice. API keys (prod) come from the environment variables named
    in the config (BINANCE_API_KEY and BINANCE_API_SECRET by default). Ctrl-C stops it (exit 130).

    \b
    Examples (a rehearsal on the local exchange; start exchange-sim first):
      prod-system run --model C1b --duration 10m --bar 1m --root runs \\
        --exchange-url http://127.0.0.1:8765
      BINANCE_API_KEY=key BINANCE_API_SECRET=secret prod-system run --model C1b \\
        --mode prod --duration 24h --root runs --exchange-url http://127.0.0.1:8765
    """
    from prod_system.common.clock import RealClock, ScaledClock
    from prod_system.errors import BrokerError
    from prod_system.runs.live import LiveSession, session_window, unfinished_session

    step = _duration(bar, "bar")
    length = _duration(duration, "duration")
    database = database or f"sqlite:///{Path(root).resolve() / 'market.db'}"
    try:
        template = load_config(
            config_path, model=model, run_mode=run_mode, trigger=trigger, start="2000-01-01T00:00:00Z",
            end="2000-01-02T00:00:00Z", bar=bar, log_root=root, market_data={"source": database},
            universe=[a for a in universe.split(",") if a] if universe else None,
        )  # fmt: skip
    except ConfigError as error:
        _fail(str(error), _config_hint(str(error)))
    _check_writable(root, "--root")
    try:
        load_model(template.model, template.bar_delta, template.model_params)  # bad input before the exchange
    except ModelError as error:
        _model_failure(error)
    # the candles come from the exchange (--ingest), a rehearsal's clock too (--speed): unreachable at
    # start, the session stops here, before anything is written (later outages are retried bar by bar)
    exchange_now = _exchange_time(exchange_url) if ingest or speed != 1.0 else None
    clock = ScaledClock(exchange_now, speed) if speed != 1.0 else RealClock()
    Path(root).mkdir(parents=True, exist_ok=True)
    try:
        resumable = unfinished_session(root, template.model_name, run_mode, trigger, clock.now())
        if resumable is not None:
            config = load_config(resumable / "system_config.yaml")
            click.echo(f"resuming the unfinished session {resumable}", err=True)
        else:
            start, end = session_window(clock.now(), step, length)
            broker = template.broker.model_dump()
            if run_mode == RunMode.PROD:
                broker.update(kind="ccxt", exchange_url=exchange_url or broker.get("exchange_url"))
            config = load_config(config_path, **{**template.model_dump(), "start": start, "end": end, "broker": broker})
    except ConfigError as error:
        _fail(str(error), _config_hint(str(error)))
    stop = threading.Event()
    ingestion = None
    try:
        session = LiveSession(config, clock, on_bar=_on_bar(config))
        _Run.log_file = session.log_dir.path / "log.txt"
        if ingest:
            from prod_system.runs.ingestion import Ingestor

            ingestor = Ingestor(session.database, config.universe, clock, exchange_url)
            ingestion = threading.Thread(target=ingestor.run, args=(stop,), daemon=True, name="ingestion")
            ingestion.start()
        click.echo(f"session {config.start} to {config.end}, log dir {session.log_dir.path}", err=True)
        outcomes = session.run()
    except MarketDataError as error:
        _fail(str(error), "check --database (and that the ingestion runs: --ingest)")
    except ModelError as error:
        _model_failure(error)
    except BrokerError as error:
        _fail(str(error), "check the exchange URL, the API key variables and the exchange's positions", EXIT_FAILED)
    except KeyboardInterrupt:
        _fail("interrupted", "the session resumes when started again with the same options", EXIT_INTERRUPTED)
    finally:
        stop.set()
        if ingestion is not None:
            ingestion.join(timeout=10)
    traded = sum(o.status == "traded" for o in outcomes)
    click.echo(f"log dir:     {session.log_dir.path}")
    click.echo(f"bars:        {traded} traded, {len(outcomes) - traded} skipped")


def _exchange_time(exchange_url: str | None) -> pd.Timestamp:
    """The exchange's time: one request that says whether the exchange answers at all (exit 4 if not)."""
    from prod_system.trading.brokers.ccxt_client import BINANCE_FUTURES_URL, binanceusdm_client

    url = exchange_url or BINANCE_FUTURES_URL
    try:
        return pd.Timestamp(binanceusdm_client(exchange_url, timeout_ms=5_000).fetch_time(), unit="ms", tz="UTC")
    except Exception as error:  # ccxt raises many kinds for an unreachable exchange
        cause: BaseException = error
        for _ in range(10):  # ccxt's NetworkError < requests < urllib3 < the socket's: "Connection refused"
            cause = cause.__cause__ or cause.__context__ or cause
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else _one_line(cause)[:200]
        _fail(
            f"cannot reach the exchange at {url}: {reason} ({type(error).__name__})",
            "start the local exchange (prod-system exchange-sim --market-data FILE --port PORT) or check --exchange-url"
            if exchange_url
            else "check this machine's access to Binance, or give --exchange-url (e.g. a prod-system exchange-sim)",
            EXIT_UNREACHABLE,
        )


def _print_bar(outcome) -> None:
    detail = f"{outcome.orders} orders" if outcome.status == "traded" else outcome.reason
    click.echo(f"bar {outcome.bar_end:%Y-%m-%d %H:%M}: {outcome.status}, {detail}", err=True)


def _on_bar(config):
    """After each bar: its line on stderr, and its materialization in the Dagster instance (the UI)."""
    from prod_system.cli.launch import LiveBarReporter

    report = LiveBarReporter(config)

    def on_bar(outcome) -> None:
        _print_bar(outcome)
        report(outcome)

    return on_bar


class _DecimalType(click.ParamType):
    """A decimal number, >= 0 (or > 0 with ``positive``), kept exact."""

    name = "DECIMAL"

    def __init__(self, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value, param, ctx) -> Decimal:
        if isinstance(value, Decimal):
            return value
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            self.fail(f"not a number: {value!r}", param, ctx)
        if not number.is_finite() or number < 0 or (self.positive and number == 0):
            self.fail(f"must be a number {'>' if self.positive else '>='} 0, got {value!r}", param, ctx)
        return number


def _exchange_hint(message: str) -> str:
    if message.startswith("cannot listen"):
        return "choose another --port (0 picks a free one) or --host"
    if "state" in message:
        return "check the --state file (remove it to start with fresh accounts)"
    return "--market-data takes a .parquet snapshot (see dump-market-data) or 'csv:DIR'"


@main.command("exchange-sim", short_help="Run a local Binance USDT-M futures exchange.")
@click.option(
    "--market-data",
    required=True,
    help="Candles to replay: a snapshot ('parquet:FILE' or FILE.parquet) or 'csv:DIR'.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (loopback by default).")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port to listen on; 0 picks a free one (printed at start).",
)
@click.option("--api-key", envvar="EXCHANGE_API_KEY", help="The account's API key  [env: EXCHANGE_API_KEY].")
@click.option("--api-secret", envvar="EXCHANGE_API_SECRET", help="Its secret  [env: EXCHANGE_API_SECRET].")
@click.option(
    "--clock",
    type=click.Choice(["shifted", "original", "manual"]),
    default="shifted",
    show_default=True,
    help="shifted: the candles close in real time from start-up; original: their own times; manual: moved "
    "by POST /_control/clock.",
)
@click.option(
    "--speed",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Market minutes per real minute (shifted and original clocks).",
)
@click.option(
    "--taker-fee",
    default="0.0004",
    show_default=True,
    type=_DecimalType(),
    help="Fee rate of market orders (0.0004 = 0.04%).",
)
@click.option(
    "--maker-fee",
    default="0.0002",
    show_default=True,
    type=_DecimalType(),
    help="Fee rate of limit orders (0.0002 = 0.02%).",
)
@click.option(
    "--initial-balance",
    default="1000000",
    show_default=True,
    type=_DecimalType(positive=True),
    help="USDT in the account at start.",
)
@click.option("--faults", type=click.Path(dir_okay=False), help="JSON fault rules, per endpoint (docs/exchange.md).")
@click.option("--state", type=click.Path(dir_okay=False), help="JSON file keeping the accounts across restarts.")
@click.option(
    "--strict-client-ids",
    is_flag=True,
    help="Refuse a reused newClientOrderId forever (-4116). Binance, and the default, refuse it among open orders "
    "only: a filled order's id is accepted again.",
)
def exchange_sim(market_data, host, port, api_key, api_secret, clock, speed, taker_fee, maker_fee, initial_balance,
                 faults, state, strict_client_ids) -> None:  # fmt: skip
    """Run a local Binance USDT-M futures exchange that the unmodified ccxt client trades on.

    It replays the market data on its clock, fills market orders at the current price with taker fees
    and limit orders when the price crosses, keeps positions, balances and trades, signs and checks
    requests like Binance, and injects faults on chosen endpoints (latency, timeouts, 5xx, 429,
    rejections, partial fills). Point the broker at it with broker.exchange_url (or run's
    --exchange-url). It serves until Ctrl-C.

    \b
    Examples:
      EXCHANGE_API_KEY=key EXCHANGE_API_SECRET=secret \\
        prod-system exchange-sim --market-data snapshot.parquet --port 8765
      prod-system exchange-sim --market-data snapshot.parquet --port 8765 --clock original \\
        --speed 60 --api-key key --api-secret secret
    """
    from prod_system.errors import FaultRuleError
    from prod_system.exchange.engine import EngineConfig
    from prod_system.exchange.faults import parse_rules
    from prod_system.exchange.server import ServerOptions, serve

    if not api_key or not api_secret:
        _fail(
            "no API key: give --api-key and --api-secret, or set EXCHANGE_API_KEY and EXCHANGE_API_SECRET",
            "any pair will do; the client (broker config or ccxt) must use the same",
        )
    rules = []
    if faults is not None:
        try:
            rules = parse_rules(json.loads(Path(faults).read_text()))
        except OSError as error:
            _fail(f"cannot read the fault rules {faults}: {error.strerror}", "--faults takes a JSON file")
        except (ValueError, FaultRuleError) as error:
            _fail(f"bad fault rules in {faults}: {error}", "see the fault rules in docs/exchange.md")
    options = ServerOptions(
        market_data, api_key, api_secret, host, port, clock, speed,
        EngineConfig(taker_fee, maker_fee, initial_balance, strict_client_order_ids=strict_client_ids), rules,
        Path(state) if state else None,
    )  # fmt: skip
    click.echo(f"starting the local exchange: replaying {market_data} ({clock} clock); Ctrl-C stops it", err=True)
    try:
        serve(options)
    except (MarketDataError, ValueError, OSError) as error:
        _fail(str(error), _exchange_hint(str(error)))


if __name__ == "__main__":
    main()
