"""Live assets (thin: the core's ingestion and live session do the work).

- ``market_data/candles_1m``: each run ingests the universe's latest closed candles into the
  real-time market database (a schedule runs it every minute), reaching back the live models'
  longest warm-up when the database lacks it; asset checks guard it.
- ``[model, paper_trading|prod, bar]``: one partition per bar (dynamic: the sensor adds each bar
  when it requests its run); a run trades exactly that bar in the day's scheduled session, whose log dir is
  ``{root}/{model}/{mode}/scheduled/{day}.{day+1}/system_log_dir``.
- ``{model}_{mode}_session_job``: the whole day's session in one run (the daily schedule); it reports
  each bar as a materialization of the bar's partition, as the bar runs do.
- ``{model}_{mode}_bar_sensor``: requests each bar's run, once and in order.

Every bar's materialization carries the bar's status and latencies and the figures an operator
watches (bar and session PnL, net wealth, GMV, leverage, fees, funding, positions: ``bar_metadata``),
typed and under stable keys, so the asset's Plots chart them bar after bar.

``live_definitions`` gathers them with the ingestion job and the schedules.
"""

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    Config,
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    DynamicPartitionsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    define_asset_job,
    in_process_executor,
    job,
    op,
    sensor,
)

from prod_system.common.clock import RealClock
from prod_system.config import RunMode
from prod_system.data import market_checks
from prod_system.data.data_guard import DataGuard
from prod_system.data.market_db import MarketDatabase
from prod_system.defs.metadata import bar_figures_metadata
from prod_system.defs.resources import LogDirResource, SystemResource
from prod_system.defs.resources.live import LiveResource
from prod_system.errors import ModelError
from prod_system.log_dir import LogDir
from prod_system.models.dag import load_model
from prod_system.naming import (
    CANDLES_PATH,
    INGESTION_JOB,
    INGESTION_SCHEDULE,
    KILL_SWITCH_TAG,
    MARKET_DATA_GROUP,
    SESSION_TAG,
    bar_partitions_name,
    bar_run_key,
    bar_sensor_name,
    group_name,
    live_bar_path,
    session_job_name,
    session_op_name,
    session_schedule_name,
    session_tag_value,
)
from prod_system.runs.bar_figures import bar_figures
from prod_system.runs.ingestion import BACKFILL, Ingestor
from prod_system.runs.live import BarOutcome, LiveSession, bar_key, due_bar, parse_bar_key, warm_up_of
from prod_system.runs.stages import broker_factory_for

CANDLES_KEY = AssetKey(CANDLES_PATH)
CHECKED_WINDOW = pd.Timedelta(hours=1)
SEVERITY = {"no_missing_bars": AssetCheckSeverity.WARN, "no_price_jumps": AssetCheckSeverity.WARN}

logger = logging.getLogger(__name__)


def bar_partitions(model: str, mode: str) -> DynamicPartitionsDefinition:
    return DynamicPartitionsDefinition(name=bar_partitions_name(model, mode))


def ingestion_backfill(models: list[str], live: LiveResource, system: SystemResource) -> pd.Timedelta:
    """How far back an ingestion pass reaches: the longest warm-up of the live models on the live bar
    (their lookback, or the data guard's window), at least BACKFILL: a bar run's first bar then decides
    on a full window. A model that does not load is left out (its bar runs fail with the reason)."""
    spans = [BACKFILL]
    for model in models:
        try:
            dag = load_model(model, live.bar_delta, system.model_params.get(model, {}))
        except ModelError:
            continue
        spans.append(warm_up_of(dag, DataGuard(live.bar_delta)))
    return max(spans)


def build_candles_asset(models: list[str]):
    """The ingestion asset; its backfill is the live models' longest warm-up (``ingestion_backfill``)."""

    @asset(
        key=CANDLES_KEY,
        group_name=MARKET_DATA_GROUP,
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
                (
                    "no_price_jumps",
                    "no close more than 50% away from the minute before (the data guard does not trade it)",
                ),
            )
        ],
    )
    def candles_1m(context: AssetExecutionContext, live: LiveResource, system: SystemResource):
        clock = RealClock()
        database = MarketDatabase(live.database)
        assets = system.listed(live.database)
        backfill = ingestion_backfill(models, live, system)
        # the settled funding rates too: the sessions' funding at the market's rates, not the assumed one
        ingestor = Ingestor(database, assets, clock, live.exchange_url, backfill=backfill, funding=True)
        try:
            report = ingestor.ingest_once()
            now = clock.now()
            window_end = now.floor("1min")
            candles = database.snapshot(assets, window_end - CHECKED_WINDOW, window_end)
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
        for result in market_checks.run_all(candles, assets, window_end - CHECKED_WINDOW, window_end, now, stale_after):
            yield AssetCheckResult(
                check_name=result.name,
                passed=result.passed,
                severity=SEVERITY.get(result.name, AssetCheckSeverity.ERROR),
                description=result.description,
                metadata={"count": result.count, "examples": MetadataValue.json(result.examples)},
            )

    return candles_1m


def build_live_assets(model: str, mode: str):
    """The per-bar asset of one model and live mode."""

    @asset(
        key=live_bar_key(model, mode),
        group_name=group_name(model, mode),
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
    return AssetKey(live_bar_path(model, mode))


def bar_metadata(outcome: BarOutcome, log_dir: Path) -> dict:
    """What a bar's materialization shows: its status, orders, log dir, latencies after the close, and
    its figures from the log dir (``runs.bar_figures``; a bar is traded already: figures that cannot be
    read are said so in ``figures``, never a failed bar)."""
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
    try:
        metadata.update(bar_figures_metadata(bar_figures(log_dir, outcome.bar_end)))
    except Exception as error:  # any error (an unreadable part, pyarrow's ArrowTypeError...): the bar traded
        reason = f"{type(error).__name__}: {_one_line(error)}"
        logger.warning("bar %s: figures unavailable from %s: %s", bar_key(outcome.bar_end), log_dir, reason)
        metadata["figures"] = MetadataValue.text(f"unavailable: {reason}")
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


class BarReporter:
    """A live session's report of each bar (traded or skipped): a materialization of the live asset's
    bar partition with ``bar_metadata``, as a bar run's, made by ``emit`` (the session job's
    ``context.log_event``, the CLI's ``instance.report_runless_asset_event``), in the partitions of
    ``instance()``; ``extra`` metadata added to each.

    A report waits while the session has work due (the next bar has closed already: a session started
    late, or resumed, goes through the day's earlier bars at once, skipping them), so that a backlog
    of reports never makes a bar late; the waiting ones go out in order, with the next report made when
    the session waits for a close, as long as that close is ahead, and the rest at the end of the run
    (``flush``). Reporting never stops the session (its log dir has every bar): an instance that cannot
    register the bars' partitions is one warning (the bars keep waiting, and one more warning when
    reporting works again); a bar whose report fails is dropped with a warning that names it, the
    others still go out."""

    def __init__(
        self,
        model: str,
        mode: str,
        log_dir: Path,
        clock,
        bar: pd.Timedelta,
        emit: Callable[[AssetMaterialization], object],
        instance: Callable[[], DagsterInstance],
        warn: Callable[[str], object],
        extra: dict | None = None,
    ):
        self.log_dir, self.clock, self.bar = log_dir, clock, bar
        self.emit, self.instance, self.warn, self.extra = emit, instance, warn, extra or {}
        self.key, self.partitions = live_bar_key(model, mode), bar_partitions_name(model, mode)
        self.waiting: list[BarOutcome] = []
        self.failing = False

    def __call__(self, outcome: BarOutcome) -> None:
        self.waiting.append(outcome)
        self.flush(until=outcome.bar_end + self.bar)  # while the session waits for the next close

    def flush(self, until: pd.Timestamp | None = None) -> None:
        """Report the waiting bars, in order (those that ``until`` leaves no time for keep waiting)."""
        if not self.waiting or (until is not None and self.clock.now() >= until):  # the session goes on
            return
        try:  # the UI's record of a bar must never cost the session
            self.instance().add_dynamic_partitions(self.partitions, [bar_key(o.bar_end) for o in self.waiting])
        except Exception as error:
            self._failed(f"cannot report the session's bars (the log dir has them): {_one_line(error)}")
            return
        while self.waiting and (until is None or self.clock.now() < until):
            outcome = self.waiting.pop(0)
            partition = bar_key(outcome.bar_end)
            try:
                metadata = {**bar_metadata(outcome, self.log_dir), **self.extra}
                self.emit(AssetMaterialization(self.key, partition=partition, metadata=metadata))
            except Exception as error:  # this bar only: the others still go out
                self.warn(f"cannot report bar {partition} (the log dir has it): {_one_line(error)}")
                continue
            if self.failing:
                self.warn("the session's bars are reported again")
            self.failing = False

    def _failed(self, message: str) -> None:
        if not self.failing:
            self.warn(message)
        self.failing = True


class SessionBarReporter(BarReporter):
    """The session job's ``BarReporter``: its events in the run's log (``context.log_event``)."""

    def __init__(self, context: OpExecutionContext, model: str, mode: str, log_dir: Path, clock, bar: pd.Timedelta):
        super().__init__(
            model, mode, log_dir, clock, bar, context.log_event, lambda: context.instance, context.log.warning
        )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


class SessionRunConfig(Config):
    """Stop the run after this many minutes (a rehearsal, or a hand-over); the session goes on when the
    job runs again. Empty: to the end of the day."""

    stop_after_minutes: int | None = None


def build_session_job(model: str, mode: str):
    """The whole day's session of ``model`` in ``mode`` in one run (the seed's scheduled 24-hour runs)."""

    @op(name=session_op_name(model, mode), description=f"Trade today's {mode} session of {model} to its end.")
    def run_session(
        context: OpExecutionContext,
        config: SessionRunConfig,
        live: LiveResource,
        system: SystemResource,
        log_dir: LogDirResource,
    ):
        clock = RealClock()
        now = clock.now()
        session_config = live.session_config(system, log_dir.root, model, mode, now.floor("1D"))
        session = LiveSession(session_config, clock, broker_factory=_broker_factory(session_config, context))
        session.on_bar = report = SessionBarReporter(context, model, mode, session.log_dir.path, clock, session.bar)
        until = now + pd.Timedelta(minutes=config.stop_after_minutes) if config.stop_after_minutes else None
        try:
            outcomes = session.run(until=until)
        finally:
            report.flush()
        traded = sum(o.status == "traded" for o in outcomes)
        context.log.info(f"{traded} bars traded, {len(outcomes) - traded} skipped; log dir {session.log_dir.path}")

    @job(name=session_job_name(model, mode), description=f"Today's 24-hour {mode} session of {model}.")
    def session_job():
        run_session()

    return session_job


def build_bar_sensor(model: str, mode: str):
    """Request a run of exactly one bar's partition, once and in order (the cursor): by default
    ``prelaunch_seconds`` before the bar's close, the run then waiting for the close and for every
    asset's candle (or the data timeout); with ``prelaunch_seconds: 0``, once the bar has closed and
    its candles are in the database. ``runs.live.due_bar`` decides.

    Created stopped: it trades. Each run carries the session tag, so the run queue can hold a
    model's bars to one at a time (``tag_concurrency_limits`` in dagster.yaml); the session's lock
    serializes them anyway."""
    partitions = bar_partitions(model, mode)

    @sensor(
        name=bar_sensor_name(model, mode),
        asset_selection=AssetSelection.assets(live_bar_key(model, mode)),
        minimum_interval_seconds=5,
        default_status=DefaultSensorStatus.STOPPED,
        description=(
            f"Requests one run per bar of {model} {mode}, in order: prelaunch_seconds (30 s by default) before "
            "the bar's close, the run then waiting for its candles; with prelaunch_seconds 0, once the bar has "
            "closed and its candles are in the database."
        ),
    )
    def bar_sensor(context: SensorEvaluationContext, live: LiveResource, system: SystemResource):
        last = parse_bar_key(context.cursor) if context.cursor else None
        bar_end, why = _due_bar(live, system, last)
        if bar_end is None:
            return SkipReason(why)
        key = bar_key(bar_end)
        return SensorResult(
            run_requests=[
                RunRequest(
                    run_key=bar_run_key(model, mode, key),
                    partition_key=key,
                    tags={SESSION_TAG: session_tag_value(model, mode)},
                )
            ],
            dynamic_partitions_requests=[partitions.build_add_request([key])],
            cursor=key,
        )

    return bar_sensor


def _due_bar(live: LiveResource, system: SystemResource, last: pd.Timestamp | None):
    """The bar whose run is due now and why (or None and why not), asking the database only when needed."""
    database: MarketDatabase | None = None

    def missing(bar_end):  # only without a pre-launch: the run itself waits for the candles otherwise
        nonlocal database
        database = database or MarketDatabase(live.database)
        return database.missing(system.listed(live.database), bar_end)

    try:
        return due_bar(RealClock().now(), live.bar_delta, last, missing, live.data_timeout_seconds, live.prelaunch)
    finally:
        if database is not None:
            database.close()


def live_definitions(models: list[str]) -> Definitions:
    """The live side: candle ingestion every minute, per model and mode a per-bar asset driven by its
    bar sensor, and the daily 24-hour session job. Everything that trades is created stopped."""
    ingestion = define_asset_job(
        INGESTION_JOB,
        selection=AssetSelection.assets(CANDLES_KEY),
        executor_def=in_process_executor,
        description="Fetch the universe's latest closed 1-minute candles into the real-time market database.",
    )
    every_minute = ScheduleDefinition(
        name=INGESTION_SCHEDULE,
        job=ingestion,
        cron_schedule="* * * * *",
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.STOPPED,
        description="Every minute.",
    )
    live = [(model, mode) for model in models for mode in RunMode.live()]
    sessions = {(model, mode): build_session_job(model, mode) for model, mode in live}
    return Definitions(
        assets=[build_candles_asset(models), *(build_live_assets(model, mode) for model, mode in live)],
        jobs=[ingestion, *sessions.values()],
        schedules=[every_minute, *(_daily(job, model, mode) for (model, mode), job in sessions.items())],
        sensors=[build_bar_sensor(model, mode) for model, mode in live],
    )


def _daily(session_job, model: str, mode: str) -> ScheduleDefinition:
    """The session job's schedule: the 24-hour session opens at 00:00 UTC."""
    return ScheduleDefinition(
        name=session_schedule_name(model, mode),
        job=session_job,
        cron_schedule="0 0 * * *",
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"Opens the 24-hour {mode} session of {model} at 00:00 UTC.",
    )
