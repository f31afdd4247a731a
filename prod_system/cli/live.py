"""``prod-system run``: a live session on the real clock, paper_trading or prod."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import pandas as pd

from prod_system.alerts import AlertKind, Notifier, cause_of, failure_alert, run_subject, secret_names
from prod_system.cli.common import check_writable, duration_option
from prod_system.cli.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_UNREACHABLE,
    Invocation,
    config_hint,
    fail,
    instruments_hint,
    model_failure,
    one_line,
)
from prod_system.common.clock import RealClock, ScaledClock
from prod_system.common.timeutil import format_duration
from prod_system.config import DEFAULT_UNIVERSE, RunMode, SystemConfig, UniverseRule, load_config, parse_universe
from prod_system.data.instruments import resolve_instruments
from prod_system.data.market_db import MarketDatabase
from prod_system.data.universe import resolve_config
from prod_system.errors import BrokerError, ConfigError, InstrumentsError, MarketDataError, ModelError
from prod_system.models.dag import load_model


@click.command(short_help="Trade live on the real clock (paper_trading or prod).")
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
@click.option(
    "--universe",
    help=f"Comma-separated assets, or top:N[/WINDOW]: the N of largest quote volume among the listed assets "
    f"(the --config file's universe, else {','.join(DEFAULT_UNIVERSE)}) over the WINDOW (default 1d) before the "
    "session's start, in the database  [default: the listed assets].",
)
@click.option("--database", help="Real-time market database URL  [default: sqlite:///{root}/market.db].")
@click.option(
    "--instruments",
    type=click.Path(dir_okay=False),
    help="The exchange's rules of the assets, from `prod-system instruments`  [default: the bundled rules].",
)
@click.option(
    "--exchange-url",
    help="Exchange base URL, e.g. http://127.0.0.1:8765 for exchange-sim  [default: Binance].",
)
@click.option(
    "--ingest/--no-ingest",
    default=True,
    show_default=True,
    help="Fetch the candles into the database in this process, the model's lookback first (--no-ingest: "
    "another process does).",
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
def run(config_path, model, run_mode, duration, root, bar, universe, database, instruments, exchange_url, ingest,
        trigger, speed) -> None:  # fmt: skip
    """Trade live, bar after bar, on the real clock: paper_trading (mocked fills) or prod (orders via ccxt).

    With --ingest it first backfills the model's lookback from the exchange (the warm-up), so the first
    bar trades. Each bar waits for every asset's candle in the real-time market database, runs the
    model, sizes the targets and sends the orders; everything goes to the session's system log dir, one line per bar to
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
    step = duration_option(bar, "bar")
    length = duration_option(duration, "duration")
    template = _template_config(config_path, model, run_mode, trigger, bar, root, universe, database, instruments)
    _check_instruments(template)
    check_writable(root, "--root")
    try:
        load_model(template.model, template.bar_delta, template.model_params)  # bad input before the exchange
    except ModelError as error:
        model_failure(error)
    # the candles come from the exchange (--ingest), a rehearsal's clock too (--speed): unreachable at
    # start, the session stops here, before anything is written (later outages are retried bar by bar)
    with _alert_on_failure(template, starting=True):  # the start alerts too (its window is not known yet)
        exchange_now = _exchange_time(exchange_url) if ingest or speed != 1.0 else None
        clock = ScaledClock(exchange_now, speed) if speed != 1.0 else RealClock()
        Path(root).mkdir(parents=True, exist_ok=True)
        if ingest and template.universe_rule:
            _ingest_ranking_window(template, clock, exchange_url)
        config = _session_config(config_path, template, clock, step, length, exchange_url)
    with _alert_on_failure(config):
        log_dir, outcomes = _trade(config, clock, ingest, exchange_url, _ingested(template, config))
    traded = sum(o.status == "traded" for o in outcomes)
    click.echo(f"log dir:     {log_dir}")
    click.echo(f"bars:        {traded} traded, {len(outcomes) - traded} skipped")


def _template_config(config_path, model, run_mode, trigger, bar, root, universe, database, instruments) -> SystemConfig:
    """The session's config on a placeholder window: every option checked before the exchange is asked."""
    database = database or f"sqlite:///{Path(root).resolve() / 'market.db'}"
    try:
        spec = parse_universe(universe) if universe else None
    except ValueError as error:
        fail(f"invalid system config: field 'universe': {error}", config_hint("field 'universe'"))
    if isinstance(spec, UniverseRule) and spec.count is None:
        fail(
            "invalid system config: field 'universe': 'all' needs a snapshot file; a live session reads the "
            "market database, which holds whatever was ingested",
            "give a list (--universe BTC,ETH) or top:N (e.g. --universe top:3/1d)",
        )
    try:
        return load_config(
            config_path, model=model, run_mode=run_mode, trigger=trigger, start="2000-01-01T00:00:00Z",
            end="2000-01-02T00:00:00Z", bar=bar, log_root=root,
            market_data={"source": database, "instruments": instruments},
            universe=spec if isinstance(spec, list) else None,
            universe_rule=str(spec) if isinstance(spec, UniverseRule) else None,
        )  # fmt: skip
    except ConfigError as error:
        fail(str(error), config_hint(str(error)))


def _check_instruments(template: SystemConfig) -> None:
    """The listed assets' exchange rules, before the exchange is asked: one line naming the command."""
    try:
        resolve_instruments(template)
    except InstrumentsError as error:
        fail(str(error), instruments_hint(str(error)))


def _session_config(config_path, template: SystemConfig, clock, step, length, exchange_url) -> SystemConfig:
    """The config of an unfinished session of this model and mode (resumed as it was), else of a new
    session from the bar in progress; a prod session trades through ccxt on ``exchange_url``."""
    from prod_system.runs.live import keeping_holdings, session_window, unfinished_session

    try:
        resumable = unfinished_session(
            template.log_root, template.model_name, template.run_mode, template.trigger, clock.now()
        )
        if resumable is not None:
            config = load_config(resumable / "system_config.yaml")
            click.echo(f"resuming the unfinished session {resumable}", err=True)
            return config
        start, end = session_window(clock.now(), step, length)
        broker = template.broker.model_dump()
        if template.run_mode == RunMode.PROD:
            broker.update(kind="ccxt", exchange_url=exchange_url or broker.get("exchange_url"))
        config = load_config(config_path, **{**template.model_dump(), "start": start, "end": end, "broker": broker})
        # a top:N ranked on the database's candles before the session's start, as known now
        config = keeping_holdings(resolve_config(config, known_at=clock.now()))
        if config.universe_rule:
            click.echo(f"universe {config.universe_rule}: {','.join(config.universe)}", err=True)
        return config
    except MarketDataError as error:
        fail(str(error), "check --database")
    except ConfigError as error:
        fail(str(error), config_hint(str(error)))


def _ingested(template: SystemConfig, config: SystemConfig) -> list[str]:
    """The assets the session's ingestion records: its universe, and under a top:N rule the assets it
    ranks (the listed ones), so that the next session's ranking sees all of them."""
    if not config.universe_rule:
        return list(config.universe)
    return [*template.universe, *(a for a in config.universe if a not in template.universe)]


def _ingest_ranking_window(template: SystemConfig, clock, exchange_url: str | None) -> None:
    """top:N ranks the listed assets on the database's candles before the session's start: with
    --ingest, their candles of the ranking window are fetched first (a fresh database has none)."""
    from prod_system.runs.ingestion import Ingestor

    rule = parse_universe(template.universe_rule)
    database = MarketDatabase(template.market_data.source)
    ingestor = Ingestor(database, template.universe, clock, exchange_url)
    try:
        report = ingestor.ingest_once(backfill=rule.window)
    finally:
        ingestor.close()
        database.close()
    failed = f"; failed for {', '.join(report.failed)}" if report.failed else ""
    click.echo(
        f"universe {rule}: the last {format_duration(rule.window)} of candles of {','.join(template.universe)} "
        f"ingested to rank them ({report.result.new} new{failed})",
        err=True,
    )


def _trade(
    config: SystemConfig, clock, ingest: bool, exchange_url: str | None, ingested: list[str] | None = None
) -> tuple[Path, list]:
    """Trade the session's bars (with the ingestion of their candles in a thread, --ingest): its log
    dir and the bars' outcomes; a failure is one line, and the ingestion stops however the session ends."""
    from prod_system.runs.live import LiveSession

    stop = threading.Event()
    ingestion = report = None
    try:
        session = LiveSession(config, clock)
        report = _reporter(config, clock, session.bar)
        session.on_bar = lambda outcome: (_print_bar(outcome), report(outcome))
        Invocation.log_file = session.log_dir.path / "log.txt"
        if ingest:
            from prod_system.runs.ingestion import Ingestor

            funding = config.costs.funding.mode == "data"  # the settled rates too, for the session's funding
            ingestor = Ingestor(session.database, ingested or config.universe, clock, exchange_url, funding=funding)
            _warm_up(ingestor, session.warm_up)
            ingestion = threading.Thread(
                target=ingestor.run, args=(stop,), kwargs={"at_once": False}, daemon=True, name="ingestion"
            )
            ingestion.start()
        click.echo(f"session {config.start} to {config.end}, log dir {session.log_dir.path}", err=True)
        return session.log_dir.path, session.run()
    except InstrumentsError as error:
        fail(str(error), instruments_hint(str(error)))
    except MarketDataError as error:
        fail(str(error), "check --database (and that the ingestion runs: --ingest)")
    except ModelError as error:
        model_failure(error)
    except BrokerError as error:
        fail(str(error), "check the exchange URL, the API key variables and the exchange's positions", EXIT_FAILED)
    except KeyboardInterrupt:
        fail("interrupted", "the session resumes when started again with the same options", EXIT_INTERRUPTED)
    finally:
        stop.set()
        if report is not None:
            report.flush()  # the bars whose reports waited while the session caught up
        if ingestion is not None:
            ingestion.join(timeout=10)


@contextmanager
def _alert_on_failure(config: SystemConfig, starting: bool = False) -> Iterator[None]:
    """A session that stops on an error alerts RUN_FAILED with it (the error line the CLI printed, or an
    unexpected exception); an interrupt (Ctrl-C, exit 130) is a person's doing and does not alert.
    ``starting``: the session's start (the exchange, the ranking window's ingest, the session's config),
    ``config`` its template (model and mode; its window is a placeholder, not named)."""
    try:
        yield
    except SystemExit as stop:
        if stop.code not in (None, 0, EXIT_INTERRUPTED):
            _send_failure(config, stop.__context__ or f"exit {stop.code}", starting)
        raise
    except Exception as error:
        _send_failure(config, error, starting)
        raise


def _send_failure(config: SystemConfig, error: BaseException | str, starting: bool = False) -> None:
    subject = run_subject(config)
    session = f"the {config.run_mode} session of {config.model}"
    what = f"the start of {session}" if starting else f"{session} ({config.start} to {config.end})"
    cause = cause_of(AlertKind.RUN_FAILED, config)
    Notifier.for_run(config).send(failure_alert(subject, cause, what, error, also=secret_names(config)))


def _warm_up(ingestor, span: pd.Timedelta) -> None:
    """Backfill the model's warm-up before the first bar (one pass, in this thread), so the session
    trades from its first bar; an asset whose fetch failed is named (the next passes retry it)."""
    report = ingestor.ingest_once(backfill=span)
    click.echo(
        f"warm-up: the last {format_duration(span)} of candles ingested ({report.result.new} new)"
        + (f"; failed for {', '.join(report.failed)}" if report.failed else ""),
        err=True,
    )


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
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else one_line(cause)[:200]
        fail(
            f"cannot reach the exchange at {url}: {reason} ({type(error).__name__})",
            "start the local exchange (prod-system exchange-sim --market-data FILE --port PORT) or check --exchange-url"
            if exchange_url
            else "check this machine's access to Binance, or give --exchange-url (e.g. a prod-system exchange-sim)",
            EXIT_UNREACHABLE,
        )


def _print_bar(outcome) -> None:
    detail = f"{outcome.orders} orders" if outcome.status == "traded" else outcome.reason
    click.echo(f"bar {outcome.bar_end:%Y-%m-%d %H:%M}: {outcome.status}, {detail}", err=True)


def _reporter(config, clock, bar):
    """Each bar's materialization in the Dagster instance (the UI), waiting while the session catches
    up (``BarReporter``): its ``flush`` reports the rest at the end."""
    from prod_system.cli.launch import LiveBarReporter

    return LiveBarReporter(config, clock, bar)
