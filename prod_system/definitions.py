"""The Dagster code location: one asset graph per model and run mode, its jobs, schedules and resources.

Models come from PROD_SYSTEM_MODELS (comma-separated built-in names or import paths; default
"C1b,C3a"); the investor plots show PROD_SYSTEM_INVESTOR_MODEL (default "C3a"). Resources read
their defaults from the environment (PROD_SYSTEM_ROOT, PROD_SYSTEM_S3_ENDPOINT, PROD_SYSTEM_S3_BUCKET)
and can be overridden in the run config of any job.
"""

from __future__ import annotations

import os

from dagster import Definitions

from prod_system.defs.alerts import alerts_definitions
from prod_system.defs.live import live_definitions
from prod_system.defs.publishing import publishing_definitions
from prod_system.defs.reconciliation import reconciliation_definitions
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
from prod_system.defs.simulation import simulation_definitions


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
    """Each concern's definitions (simulation, live, reconciliation, publishing, alerts) and the resources."""
    models = models or models_from_env()
    investor_model = investor_model or investor_model_from_env()
    return Definitions.merge(
        simulation_definitions(models),
        live_definitions(models),
        reconciliation_definitions(models),
        publishing_definitions(models, investor_model),
        alerts_definitions(),  # every job's failure alerts a person
        Definitions(resources={**default_resources(), **(resources or {})}),
    )


defs = build_definitions()
