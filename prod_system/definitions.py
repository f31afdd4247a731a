"""The Dagster code location: one asset graph per model and run mode, its jobs, schedules and resources.

Models come from PROD_SYSTEM_MODELS (comma-separated built-in names or import paths; default
"C1b,C3a"); the investor plots show PROD_SYSTEM_INVESTOR_MODEL (default "C3a"). Resources read
their defaults from the environment (PROD_SYSTEM_ROOT, PROD_SYSTEM_S3_ENDPOINT, PROD_SYSTEM_S3_BUCKET)
and can be overridden in the run config of any job.
"""

from __future__ import annotations

import os

from dagster import (
    AssetChecksDefinition,
    AssetSelection,
    DefaultScheduleStatus,
    Definitions,
    ScheduleDefinition,
    define_asset_job,
    in_process_executor,
)

from prod_system.defs.bar_sensor import build_bar_sensor
from prod_system.defs.live import CANDLES_KEY, LIVE_MODES, build_live_assets, build_session_job, candles_1m
from prod_system.defs.observer_schedule import build_observer_jobs
from prod_system.defs.publishing import build_investor_assets, build_report_publishing
from prod_system.defs.reconciliation import build_reconciliation_assets
from prod_system.defs.resources import (
    BrokerResource,
    ClockResource,
    LogDirResource,
    MarketDataResource,
    PublishingResource,
    SystemResource,
    TableStoreIOManager,
    default_s3,
)
from prod_system.defs.resources.live import LiveResource
from prod_system.defs.simulation import build_simulation_assets, group_name

CODE_LOCATION = "prod_system"  # workspace.yaml's location_name; the CLI's runs name it as their origin
MODEL_TAG, RUN_MODE_TAG, ROOT_TAG = "prod_system/model", "prod_system/run_mode", "prod_system/root"


def models_from_env() -> list[str]:
    return [m.strip() for m in os.environ.get("PROD_SYSTEM_MODELS", "C1b,C3a").split(",") if m.strip()]


def investor_model_from_env() -> str:
    return os.environ.get("PROD_SYSTEM_INVESTOR_MODEL", "C3a").strip()


def default_resources() -> dict:
    """Resources for the UI and `dagster job execute`; any of them can be configured per run."""
    return {
        "system": SystemResource(),
        "market_data": MarketDataResource(),
        "clock": ClockResource(),
        "broker": BrokerResource(),
        "log_dir": LogDirResource(),
        "io_manager": TableStoreIOManager(),
        "publishing": PublishingResource(),
        "s3": default_s3(),
        "live": LiveResource(),
    }


def build_definitions(
    models: list[str] | None = None, resources: dict | None = None, investor_model: str | None = None
) -> Definitions:
    models = models or models_from_env()
    investor_model = investor_model or investor_model_from_env()
    assets, jobs = [], []
    for model in models:
        assets.extend(build_simulation_assets(model))
        assets.extend(build_reconciliation_assets(model))
        assets.append(build_report_publishing(model))
        jobs.append(
            define_asset_job(
                f"{group_name(model)}_job",
                selection=AssetSelection.groups(group_name(model)),
                # the steps form a chain: one process avoids 7-18 s of subprocess start-up per run
                executor_def=in_process_executor,
                description=f"Simulate {model}: materialize its simulation assets over a range of session days "
                "(one run; tags dagster/asset_partition_range_start and _end).",
                run_tags={MODEL_TAG: model, RUN_MODE_TAG: "simulation"},
            )
        )
    assets.extend(build_investor_assets(investor_model))
    observer_jobs, schedules = build_observer_jobs(models, investor_model)
    live_jobs, live_schedules, sensors = _live(models, assets)
    checks = [item for item in assets if isinstance(item, AssetChecksDefinition)]
    return Definitions(
        assets=[item for item in assets if item not in checks],
        asset_checks=checks,
        jobs=[*jobs, *observer_jobs, *live_jobs],
        schedules=[*schedules, *live_schedules],
        sensors=sensors,
        resources={**default_resources(), **(resources or {})},
    )


def _live(models: list[str], assets: list) -> tuple[list, list, list]:
    """The live side: candle ingestion every minute, per model and mode a per-bar asset driven by its
    bar sensor, and the daily 24-hour session job. Everything that trades is created stopped."""
    assets.append(candles_1m)
    ingestion = define_asset_job(
        "market_data_ingestion_job",
        selection=AssetSelection.assets(CANDLES_KEY),
        executor_def=in_process_executor,
        description="Fetch the universe's latest closed 1-minute candles into the real-time market database.",
    )
    jobs = [ingestion]
    schedules = [
        ScheduleDefinition(
            name="market_data_ingestion_schedule",
            job=ingestion,
            cron_schedule="* * * * *",
            execution_timezone="UTC",
            default_status=DefaultScheduleStatus.STOPPED,
            description="Every minute.",
        )
    ]
    sensors = []
    for model in models:
        for mode in LIVE_MODES:
            assets.append(build_live_assets(model, mode))
            sensors.append(build_bar_sensor(model, mode))
            session = build_session_job(model, mode)
            jobs.append(session)
            schedules.append(
                ScheduleDefinition(
                    name=f"{session.name}_daily",
                    job=session,
                    cron_schedule="0 0 * * *",
                    execution_timezone="UTC",
                    default_status=DefaultScheduleStatus.STOPPED,
                    description=f"Opens the 24-hour {mode} session of {model} at 00:00 UTC.",
                )
            )
    return jobs, schedules, sensors


defs = build_definitions()
