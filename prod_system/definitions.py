"""The Dagster code location: one asset graph per model and run mode, its jobs and resources.

Models come from PROD_SYSTEM_MODELS (comma-separated built-in names or import paths; default
"C1b,C3a"). Resources read their defaults from the environment (PROD_SYSTEM_ROOT) and can be
overridden in the run config of any job.
"""

from __future__ import annotations

import os

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from prod_system.assets.simulation import build_simulation_assets, group_name
from prod_system.resources import (
    BrokerResource,
    ClockResource,
    LogDirResource,
    MarketDataResource,
    SystemResource,
    TableStoreIOManager,
)


def models_from_env() -> list[str]:
    return [m.strip() for m in os.environ.get("PROD_SYSTEM_MODELS", "C1b,C3a").split(",") if m.strip()]


def default_resources() -> dict:
    """Resources for the UI and `dagster job execute`; any of them can be configured per run."""
    return {
        "system": SystemResource(),
        "market_data": MarketDataResource(),
        "clock": ClockResource(),
        "broker": BrokerResource(),
        "log_dir": LogDirResource(),
        "io_manager": TableStoreIOManager(),
    }


def build_definitions(models: list[str] | None = None, resources: dict | None = None) -> Definitions:
    assets, jobs = [], []
    for model in models or models_from_env():
        assets.extend(build_simulation_assets(model))
        jobs.append(
            define_asset_job(
                f"{group_name(model)}_job",
                selection=AssetSelection.groups(group_name(model)),
                # the steps form a chain: one process avoids 7-18 s of subprocess start-up per run
                executor_def=in_process_executor,
                description=f"Simulate {model}: materialize its simulation assets over a range of session days "
                "(one run; tags dagster/asset_partition_range_start and _end).",
            )
        )
    return Definitions(
        assets=assets,
        jobs=jobs,
        resources={**default_resources(), **(resources or {})},
    )


defs = build_definitions()
