"""How the CLI fails: its exit codes, one ``error:`` line and one ``hint:`` line on stderr (never a
traceback, unless ``--debug``), and the hints that name the next step for each kind of bad input.

``CliGroup``, the root command's class, turns every failure of a command into these lines.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from prod_system.config import DEFAULT_UNIVERSE
from prod_system.errors import (
    ConfigError,
    InstrumentsError,
    LogDirExistsError,
    MarketDataError,
    ModelError,
    NotebookError,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_RECONCILED = 3
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130

DEBUG_ENV = "PROD_SYSTEM_DEBUG"
DEBUG_HELP = f"Show the Python traceback of an unexpected failure [env: {DEBUG_ENV}=1]."
TIMESTAMP_HINT = "timestamps are UTC ISO 8601 with a zone, e.g. 2023-07-21T00:00:00Z"
DURATION_HINT = "durations are a whole number and a unit: 30s, 1m, 5m, 1h, 1d"
MODEL_HINT = "built-in models are C1b and C3a; a custom model is 'package.module:function' importable from here"

NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2: bare `prod-system`


class Invocation:
    """What the failure handler needs to know about the command in progress."""

    debug = False
    log_file: Path | None = None
    market_data: str | None = None  # the command's market-data source, named by its errors

    @classmethod
    def begin(cls) -> None:
        """A fresh state for each invocation (tests invoke the CLI many times in one process)."""
        cls.debug = os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes", "on")
        cls.log_file = None
        cls.market_data = None


def one_line(text: str) -> str:
    """Error texts from libraries may span lines (YAML marks, Dagster): join them into one."""
    parts = [part.strip() for part in str(text).splitlines()]
    return " ".join(part for part in parts if part and set(part) != {"^"})


def fail(message: str, hint: str, code: int = EXIT_BAD_INPUT) -> None:
    """Print one ``error:`` line and one ``hint:`` line to stderr and exit with ``code``."""
    click.echo(f"error: {one_line(message)}", err=True)
    click.echo(f"hint: {one_line(hint)}", err=True)
    sys.exit(code)


def config_hint(message: str) -> str:
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
        ("field 'universe_rule'", "universe_rule is 'all' or 'top:N[/WINDOW]', e.g. top:20/7d (a list: universe)"),
        (
            "field 'universe'",
            f"--universe is comma-separated asset names (e.g. {','.join(DEFAULT_UNIVERSE)}), 'all', "
            "or top:N[/WINDOW] (e.g. top:5/7d)",
        ),
    ]
    for needle, hint in hints:
        if needle in message:
            return hint
    return "see the fields of the system config in docs/configuration.md"


def naming_source(message: str) -> str:
    """A market-data error names its source (some only say what is wrong with the candles)."""
    source = Invocation.market_data
    if source is None:
        return message
    location = source.partition(":")[2] if source.startswith(("csv:", "parquet:")) else source
    return message if location in message else f"{message} (in {source})"


def instruments_hint(message: str) -> str:
    """The next step for missing or unreadable exchange rules."""
    if message.startswith("no exchange rules"):
        return (
            "the package ships the rules of BTC ETH SOL BNB XRP DOGE DOT MATIC only; fetch the others' from "
            "the exchange (prod-system instruments --help) and give the file with --instruments"
        )
    return "--instruments takes a file from `prod-system instruments` or Binance's exchangeInfo JSON"


def market_data_hint(message: str) -> str:
    if "outside the run's window" in message or "covers" in message:
        return "choose --start/--end inside the market data, or give --market-data that covers the window"
    if message.startswith("bar ") and "the market data's" in message:  # a bar the candles do not divide
        return "choose a --bar that is a whole multiple of the market data's candle interval (e.g. 15m on 5m candles)"
    if "candle interval" in message or "irregular candles" in message:
        return (
            "a snapshot has one candle interval (1m, 3m, 5m, 15m, 30m or 1h), its opens on that grid: split the files"
        )
    return "--market-data takes a .parquet snapshot (see dump-market-data) or 'csv:DIR'"


def model_failure(error: ModelError) -> None:
    if "rejected its parameters" in str(error):
        fail(f"field 'model_params': {error}", "model_params are keyword arguments of the model's function")
    fail(str(error), MODEL_HINT)


@contextmanager
def clear_errors():
    """Bad input as one line plus a hint, exit 2 (nothing has been written when these are raised)."""
    try:
        yield
    except ConfigError as error:
        fail(str(error), config_hint(str(error)))
    except InstrumentsError as error:
        fail(str(error), instruments_hint(str(error)))
    except MarketDataError as error:
        fail(naming_source(str(error)), market_data_hint(str(error)))
    except ModelError as error:
        model_failure(error)
    except LogDirExistsError as error:
        fail(str(error), "pass --overwrite to replace it, or choose another --root")


def unexpected_failure(error: Exception) -> None:
    """A failure no check foresaw (a bug, a lost connection, a full disk): one line, where to look, exit 1."""
    log = Invocation.log_file
    where = f"the log is in {log}; " if log is not None and log.exists() else ""
    debug = f"run again with --debug (or {DEBUG_ENV}=1) to see the traceback"
    if isinstance(error, OSError) and error.strerror:
        message = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
        fail(message, f"check that path (permissions, free space); {where}{debug}", EXIT_FAILED)
    message = f"{type(error).__name__}: {one_line(error)}"
    fail(f"unexpected failure: {message[:500]}", f"{where}{debug}", EXIT_FAILED)


def _debug_flag(ctx, param, value) -> None:
    if value:
        Invocation.debug = True


class CliGroup(click.Group):
    """The root command: usage errors and failures as one ``error:`` line plus a ``hint:`` line."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        """Every command also takes --debug, where users type it: ``prod-system reconcile ... --debug``."""
        debug = click.Option(["--debug"], is_flag=True, expose_value=False, callback=_debug_flag, help=DEBUG_HELP)
        cmd.params.append(debug)
        super().add_command(cmd, name)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Always exits (like click's standalone mode), with the codes of the root help."""
        Invocation.begin()
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NO_ARGS_IS_HELP as error:
            error.show()
            sys.exit(error.exit_code)
        except click.UsageError as error:
            where = error.ctx.command_path if error.ctx is not None else "prod-system"
            fail(error.format_message(), f"see '{where} --help'", EXIT_BAD_INPUT)
        except click.ClickException as error:
            fail(error.format_message(), "see 'prod-system --help'", error.exit_code)
        except click.Abort:
            fail("interrupted", "run the same command again: an interrupted run does not block it", EXIT_INTERRUPTED)
        except NotebookError as error:  # the observer's report: its cell and error, the partial notebook kept
            fail(str(error), "open the partial notebook in Jupyter to see the cell's traceback", EXIT_FAILED)
        except Exception as error:
            if Invocation.debug:
                raise
            unexpected_failure(error)
        sys.exit(code if isinstance(code, int) else EXIT_OK)
