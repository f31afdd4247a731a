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

from prod_system.assets.live import bar_partitions
from prod_system.assets.simulation import model_slug
from prod_system.core.clock import RealClock
from prod_system.core.live import bar_key, due_bar, parse_bar_key
from prod_system.core.market_db import MarketDatabase
from prod_system.resources import SystemResource
from prod_system.resources.live import LiveResource

SESSION_TAG = "prod_system/session"


def build_bar_sensor(model: str, mode: str):
    """When a bar has closed and every asset's candle is in the database (or the data timeout has
    passed), request a run of exactly that bar's partition; the cursor makes it once and in order.

    Created stopped: it trades. Each run carries the session tag, so the run queue can hold a
    model's bars to one at a time (``tag_concurrency_limits`` in dagster.yaml); the session's lock
    serializes them anyway."""
    slug = model_slug(model)
    partitions = bar_partitions(model, mode)

    @sensor(
        name=f"{slug}_{mode}_bar_sensor",
        asset_selection=AssetSelection.assets([slug, mode, "bar"]),
        minimum_interval_seconds=5,
        default_status=DefaultSensorStatus.STOPPED,
        description=f"Requests one run per closed bar of {model} {mode}, once its candles are in the database.",
    )
    def bar_sensor(context: SensorEvaluationContext, live: LiveResource, system: SystemResource):
        last = parse_bar_key(context.cursor) if context.cursor else None
        database = MarketDatabase(live.database)
        try:
            bar_end, why = due_bar(
                RealClock().now(),
                live.bar_delta,
                last,
                lambda bar: database.missing(system.universe, bar),
                live.data_timeout_seconds,
            )
        finally:
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
