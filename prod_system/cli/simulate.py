"""``prod-system simulate`` and ``historical-pnl``: a model over a past window, through the production
system (one run, bar after bar) or in batch (research PnL only)."""

from __future__ import annotations

import time

import click

from prod_system.cli.common import check_writable
from prod_system.cli.errors import Invocation, clear_errors
from prod_system.cli.progress import Progress
from prod_system.config import RunMode, load_config
from prod_system.data import BUNDLED_CANDLES
from prod_system.data.instruments import resolve_instruments
from prod_system.data.universe import resolve_config
from prod_system.models.dag import load_model


def _default_source(config_path: str | None) -> str | None:
    """With neither --market-data nor a config file, replay the candles bundled with the package."""
    return None if config_path else f"csv:{BUNDLED_CANDLES}"


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
            help="Snapshot (.parquet, from dump-market-data: a file or a folder of months), 'csv:DIR' or "
            "'binance-archive:DIR'  [default: bundled candles].",
        ),
        click.option("--start", help="Window start, UTC, on a bar boundary, e.g. 2023-07-21T00:00:00Z. Required."),
        click.option("--end", help="Window end (exclusive), UTC, on a bar boundary. Required."),
        click.option("--root", help="Root folder of the log dirs (created if missing)  [default: system_runs]."),
        click.option(
            "--universe",
            help="Comma-separated assets, 'all' (every asset of the snapshot), or 'top:N[/WINDOW]' (the N of "
            "largest quote volume over the WINDOW before --start, default 1d; e.g. top:20/7d)  "
            "[default: the snapshot's assets].",
        ),
        click.option(
            "--universe-each-day",
            is_flag=True,
            default=None,
            help="With --universe top:N: rank again at each session day's start (00:00 UTC); the run trades the "
            "union of the days' lists, an asset outside a day's list with a zero target that day.",
        ),
        click.option("--bar", help="Bar length, whole minutes: 1m, 5m, 15m, 1h...  [default: 5m]."),
        click.option(
            "--instruments",
            type=click.Path(dir_okay=False),
            help="The exchange's rules of the assets (from `prod-system instruments`, or Binance's exchangeInfo "
            "JSON)  [default: the snapshot's embedded table, else the rules bundled for the shipped assets].",
        ),
        click.option("--overwrite", is_flag=True, help="Replace an earlier run of the same window (else refused)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _window_config(config_path, model, market_data, start, end, root, universe, bar, instruments, **fixed):
    """The config of a simulation-like command: its file, then its options (unset ones left out), its
    universe resolved from the market data (a rule, or by default the snapshot's assets)."""
    Invocation.market_data = market_data or _default_source(config_path)
    config = load_config(
        config_path,
        model=model,
        start=start,
        end=end,
        log_root=root,
        bar=bar,
        market_data={
            "source": market_data if market_data else _default_source(config_path),
            "instruments": instruments,
        },
        **fixed,
    )
    Invocation.market_data = config.market_data.source
    config = resolve_config(config, universe)
    resolve_instruments(config)  # an asset without exchange rules: one line now (the run resolves them again)
    return config


def _say_universe(config) -> None:
    """What a rule resolved to (a list given is not repeated)."""
    if config.universe_rule:
        click.echo(f"universe {config.universe_rule}: {','.join(config.universe)}", err=True)


def _window_line(config, engine: str) -> str:
    bars = int((config.end - config.start) / config.bar_delta)
    return (
        f"{config.model}: {config.start:%Y-%m-%d %H:%M} to {config.end:%Y-%m-%d %H:%M} UTC, "
        f"{bars} bars of {config.bar} ({engine})"
    )


@click.command(short_help="Replay a past window through the production system.")
@_simulation_options
@click.option(
    "--engine",
    type=click.Choice(["dagster", "core"]),
    default="dagster",
    show_default=True,
    help="'dagster': a backfill of the model's assets over whole UTC days (shows up in `dagster dev`); "
    "'core': the pure core, no Dagster, any window.",
)
def simulate(config_path, model, market_data, start, end, root, universe, universe_each_day, bar, instruments,
             overwrite, engine) -> None:  # fmt: skip
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
    with clear_errors():
        config = _window_config(
            config_path,
            model,
            market_data,
            start,
            end,
            root,
            universe,
            bar,
            instruments,
            run_mode=RunMode.SIMULATION,
            universe_each_day=universe_each_day or None,
        )
        check_writable(config.log_root, "--root")
        load_model(config.model, config.bar_delta, config.model_params)  # a bad model: refused before any output
        if not market_data and not config_path:
            click.echo(f"market data: bundled candles ({BUNDLED_CANDLES.name})", err=True)
        _say_universe(config)
        click.echo(f"simulating {_window_line(config, engine)}", err=True)
        Invocation.log_file = config.log_dir() / "log.txt"
        if engine == "core":
            from prod_system.runs.simulate import simulate as run

            summary = run(config, overwrite=overwrite, progress=Progress())
        else:
            from prod_system.cli.launch import simulate_with_dagster

            summary = simulate_with_dagster(config, overwrite=overwrite, progress=Progress())
    summary.seconds = time.perf_counter() - began
    for line in summary.lines():
        click.echo(line)


@click.command("historical-pnl", short_help="Research PnL of a model over a long history, in batch.")
@_simulation_options
def historical_pnl(config_path, model, market_data, start, end, root, universe, universe_each_day, bar, instruments,
                   overwrite) -> None:  # fmt: skip
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
    with clear_errors():
        config = _window_config(
            config_path,
            model,
            market_data,
            start,
            end,
            root,
            universe,
            bar,
            instruments,
            universe_each_day=universe_each_day or None,
        )
        check_writable(config.log_root, "--root")
        load_model(config.model, config.bar_delta, config.model_params)  # a bad model: refused before any output
        _say_universe(config)
        click.echo(f"historical pnl of {_window_line(config, 'batch')}", err=True)
        from prod_system.runs.historical import historical_pnl as run

        result = run(config, overwrite=overwrite, progress=Progress())
    result.seconds = time.perf_counter() - began
    for line in result.lines():
        click.echo(line)
