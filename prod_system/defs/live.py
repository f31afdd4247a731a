"""Live assets (thin: the core's ingestion and live session do the work).

- ``market_data/candles_1m``: each run ingests the universe's latest closed candles into the
  real-time market database (a schedule runs it every minute); four asset checks guard it.
- ``[model, paper_trading|prod, bar]``: one partition per bar (dynamic: the sensor adds each bar
  when it requests its run); a run trades exactly that bar in the day's scheduled session, whose log dir is
  ``{root}/{model}/{mode}/scheduled/{day}.{day+1}/system_log_dir``.
- ``{model}_{mode}_session_job``: the whole day's session in one run (the daily schedule).
"""

from pathlib import Path

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Config,
    DynamicPartitionsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    asset,
    job,
    op,
)

from prod_system.common.clock import RealClock
from prod_system.config import RunMode
from prod_system.data import market_checks
from prod_system.data.market_db import MarketDatabase
from prod_system.defs.resources import LogDirResource, SystemResource
from prod_system.defs.resources.live import LiveResource
from prod_system.defs.simulation import model_slug
from prod_system.log_dir import LogDir
from prod_system.runs.ingestion import Ingestor
from prod_system.runs.live import BarOutcome, LiveSession, parse_bar_key
from prod_system.runs.stages import broker_factory_for

LIVE_MODES = RunMode.live()
CANDLES_KEY = AssetKey(["market_data", "candles_1m"])
KILL_SWITCH_TAG = "prod_system/kill_switch"  # 'stop' or 'flatten' on a run: no new orders / close all
CHECKED_WINDOW = pd.Timedelta(hours=1)
SEVERITY = {"no_missing_bars": AssetCheckSeverity.WARN, "no_price_jumps": AssetCheckSeverity.WARN}


def bar_partitions(model: str, mode: str) -> DynamicPartitionsDefinition:
    return DynamicPartitionsDefinition(name=f"{model_slug(model)}_{mode}_bars")


@asset(
    key=CANDLES_KEY,
    group_name="market_data",
    description="The universe's 1-minute candles in the real-time market database (PostgreSQL or SQLite): each "
    "run fetches the latest closed candles through ccxt and upserts them with their knowledge time (when "
    "written); never a candle still open; revisions kept. Scheduled every minute.",
    kinds={"postgres", "sqlite"},
    owners=["team:data"],
    tags={"stage": "market_data"},
    check_specs=[
        AssetCheckSpec(name, asset=CANDLES_KEY, description=text)
        for name, text in (
            ("no_missing_bars", "every asset has every minute of the last hour"),
            ("not_stale", "every asset's last candle closed within the live data timeout"),
            ("no_duplicates", "one candle per (asset, minute)"),
            ("valid_prices", "prices positive and finite, high >= low, open and close within [low, high]"),
            ("no_price_jumps", "no close more than 50% away from the minute before (the data guard does not trade it)"),
        )
    ],
)
def candles_1m(context: AssetExecutionContext, live: LiveResource, system: SystemResource):
    clock = RealClock()
    database = MarketDatabase(live.database)
    ingestor = Ingestor(database, system.universe, clock, live.exchange_url)
    try:
        report = ingestor.ingest_once()
        now = clock.now()
        window_end = now.floor("1min")
        candles = database.snapshot(system.universe, window_end - CHECKED_WINDOW, window_end)
    finally:
        ingestor.close()
        database.close()
    last = candles["bar_end"].max() if len(candles) else None
    yield MaterializeResult(
        metadata={
            "new": report.result.new,
            "revised": report.result.revised,
            "unchanged": report.result.unchanged,
            "failed_assets": MetadataValue.json(report.failed),
            "last_bar_end": str(last),
            "seconds": report.seconds,
            "database": live.database.split("@")[-1],  # host and database, never credentials
        }
    )
    stale_after = pd.Timedelta(seconds=live.data_timeout_seconds) + pd.Timedelta(minutes=1)
    for result in market_checks.run_all(
        candles, system.universe, window_end - CHECKED_WINDOW, window_end, now, stale_after
    ):
        yield AssetCheckResult(
            check_name=result.name,
            passed=result.passed,
            severity=SEVERITY.get(result.name, AssetCheckSeverity.ERROR),
            description=result.description,
            metadata={"count": result.count, "examples": MetadataValue.json(result.examples)},
        )


def build_live_assets(model: str, mode: str):
    """The per-bar asset of one model and live mode."""
    slug = model_slug(model)

    @asset(
        key=live_bar_key(model, mode),
        group_name=f"{slug}_{mode}",
        partitions_def=bar_partitions(model, mode),
        deps=[CANDLES_KEY],
        description=f"One bar of {model} {mode}: the bar's candles from the database, the model's predictions, "
        "target positions, orders sent (mocked fills in paper trading, the exchange through ccxt in prod), "
        "fills and portfolio, written to the day's scheduled session log dir. Requested by the bar sensor, by "
        "default shortly before the bar's close: the run waits for the close and the bar's candles.",
        kinds={"pandas", "parquet"},
        owners=["team:trading"],
        tags={"stage": "live"},
    )
    def live_bar(
        context: AssetExecutionContext, live: LiveResource, system: SystemResource, log_dir: LogDirResource
    ) -> MaterializeResult:
        bar_end = parse_bar_key(context.partition_key)
        day = (bar_end - pd.Timedelta(microseconds=1)).floor("1D")
        config = live.session_config(system, log_dir.root, model, mode, day)
        session = LiveSession(config, RealClock(), broker_factory=_broker_factory(config, context))
        outcomes = session.run(only=bar_end)
        outcome = next((o for o in outcomes if o.bar_end == bar_end), None)
        if outcome is None:
            raise Failure(f"bar {bar_end} was already done in {session.log_dir.path}")
        return MaterializeResult(metadata=bar_metadata(outcome, session.log_dir.path))

    return live_bar


def live_bar_key(model: str, mode: str) -> AssetKey:
    return AssetKey([model_slug(model), mode, "bar"])


def bar_metadata(outcome: BarOutcome, log_dir: Path) -> dict:
    """What a bar's materialization shows: its status, orders, log dir and latencies after the close."""
    metadata = {
        "status": outcome.status,
        "reason": outcome.reason,
        "orders": outcome.orders,
        "log_dir": MetadataValue.path(str(log_dir)),
    }
    for name in ("data_complete_at", "predictions_at", "orders_submitted_at", "fills_recorded_at"):
        value = outcome.latency.get(name)
        if value is not None and not pd.isna(value):
            metadata[f"{name.removesuffix('_at')}_seconds_after_close"] = (value - outcome.bar_end).total_seconds()
    return metadata


def _broker_factory(config, context):
    """The config's broker, with the run's kill-switch tag applied (a prod run tagged 'stop' or 'flatten')."""
    factory = broker_factory_for(config, LogDir.for_config(config))  # the audit log goes in the session's log dir
    forced = context.run.tags.get(KILL_SWITCH_TAG)

    def make(reader, bar):
        broker = factory(reader, bar)
        if forced:
            broker.force_kill_switch(forced)  # a paper session's mocked broker ignores it, as before
        return broker

    return make


class SessionRunConfig(Config):
    """Stop the run after this many minutes (a rehearsal, or a hand-over); the session goes on when the
    job runs again. Empty: to the end of the day."""

    stop_after_minutes: int | None = None


def build_session_job(model: str, mode: str):
    """The whole day's session of ``model`` in ``mode`` in one run (the seed's scheduled 24-hour runs)."""
    slug = model_slug(model)

    @op(name=f"{slug}_{mode}_session", description=f"Trade today's {mode} session of {model} to its end.")
    def run_session(
        context: OpExecutionContext,
        config: SessionRunConfig,
        live: LiveResource,
        system: SystemResource,
        log_dir: LogDirResource,
    ):
        now = pd.Timestamp.now(tz="UTC")
        session_config = live.session_config(system, log_dir.root, model, mode, now.floor("1D"))
        session = LiveSession(session_config, RealClock(), broker_factory=_broker_factory(session_config, context))
        until = now + pd.Timedelta(minutes=config.stop_after_minutes) if config.stop_after_minutes else None
        outcomes = session.run(until=until)
        traded = sum(o.status == "traded" for o in outcomes)
        context.log.info(f"{traded} bars traded, {len(outcomes) - traded} skipped; log dir {session.log_dir.path}")

    @job(name=f"{slug}_{mode}_session_job", description=f"Today's 24-hour {mode} session of {model}.")
    def session_job():
        run_session()

    return session_job
