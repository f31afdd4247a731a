"""Sensors: the bar sensor that drives live runs, one bar per run, in order, once."""

from dagster import (
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from prod_system.common.clock import RealClock
from prod_system.data.market_db import MarketDatabase
from prod_system.defs.live import bar_partitions, live_bar_key
from prod_system.defs.resources import SystemResource
from prod_system.defs.resources.live import LiveResource
from prod_system.defs.simulation import model_slug
from prod_system.runs.live import bar_key, due_bar, parse_bar_key

SESSION_TAG = "prod_system/session"


def build_bar_sensor(model: str, mode: str):
    """Request a run of exactly one bar's partition, once and in order (the cursor): by default
    ``prelaunch_seconds`` before the bar's close, the run then waiting for the close and for every
    asset's candle (or the data timeout); with ``prelaunch_seconds: 0``, once the bar has closed and
    its candles are in the database. ``core.live.due_bar`` decides.

    Created stopped: it trades. Each run carries the session tag, so the run queue can hold a
    model's bars to one at a time (``tag_concurrency_limits`` in dagster.yaml); the session's lock
    serializes them anyway."""
    slug = model_slug(model)
    partitions = bar_partitions(model, mode)

    @sensor(
        name=f"{slug}_{mode}_bar_sensor",
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
        database: MarketDatabase | None = None

        def missing(bar_end):  # only without a pre-launch: the run itself waits for the candles otherwise
            nonlocal database
            database = database or MarketDatabase(live.database)
            return database.missing(system.universe, bar_end)

        try:
            bar_end, why = due_bar(
                RealClock().now(), live.bar_delta, last, missing, live.data_timeout_seconds, live.prelaunch
            )
        finally:
            if database is not None:
                database.close()
        if bar_end is None:
            return SkipReason(why)
        key = bar_key(bar_end)
        return SensorResult(
            run_requests=[
                RunRequest(run_key=f"{slug}-{mode}-{key}", partition_key=key, tags={SESSION_TAG: f"{slug}/{mode}"})
            ],
            dynamic_partitions_requests=[partitions.build_add_request([key])],
            cursor=key,
        )

    return bar_sensor
