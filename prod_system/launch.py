"""Launch a simulation as a Dagster single-run backfill over the session days of the window.

Used by ``prod-system simulate``: the same assets as in the UI, materialized in-process (no
subprocess per step) against the instance of DAGSTER_HOME, or a persistent one under the log
root, so that the run shows up in the UI with its lineage and metadata.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import yaml
from dagster import DagsterInstance, materialize

from prod_system import progress as progress_hook
from prod_system.assets.reconciliation import reconciliation_key, simulation_reconciliation_assets
from prod_system.assets.simulation import SESSION_DAYS, TRIGGER_TAG, build_simulation_assets
from prod_system.core.config import ConfigError, SystemConfig
from prod_system.core.dag import load_model
from prod_system.core.log_dir import LogDir
from prod_system.core.simulation import RunSummary, check_coverage, summarize
from prod_system.core.timeutil import compact
from prod_system.resources import (
    BrokerResource,
    ClockResource,
    LogDirResource,
    MarketDataResource,
    SystemResource,
    TableStoreIOManager,
)

DAY = pd.Timedelta(days=1)


# The settings of the repository's dagster.yaml, for an instance the CLI creates itself (a test keeps
# the two equal): no telemetry, no welcome dialog, one SQLite database in DAGSTER_HOME for all runs'
# events, written without an fsync per event.
INSTANCE_SETTINGS = {
    "telemetry": {"enabled": False},
    "nux": {"enabled": False},
    "event_log_storage": {"module": "prod_system.instance.sqlite_event_log", "class": "FastSqliteEventLogStorage"},
}


def instance_for(root: str | Path) -> DagsterInstance:
    """DAGSTER_HOME's instance if set, else a persistent SQLite instance under the log root."""
    if not os.environ.get("DAGSTER_HOME"):
        home = (Path(root) / "dagster_home").resolve()
        home.mkdir(parents=True, exist_ok=True)
        settings = home / "dagster.yaml"
        if not settings.exists():
            settings.write_text(yaml.safe_dump(INSTANCE_SETTINGS, sort_keys=False))
        os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.get()


def partition_range(config: SystemConfig) -> tuple[str, str]:
    """The session days (daily partitions) covering exactly the config's window."""
    if config.start.value % DAY.value or config.end.value % DAY.value:
        raise ConfigError(
            f"invalid system config: field 'start'/'end': a Dagster simulation covers whole session days "
            f"(00:00 UTC to 00:00 UTC), got {config.start} to {config.end}; use --engine core for other windows"
        )
    first = SESSION_DAYS.get_first_partition_key()
    if config.start < pd.Timestamp(first, tz="UTC"):
        raise ConfigError(f"invalid system config: field 'start': session days start on {first}")
    return config.start.strftime("%Y-%m-%d"), (config.end - DAY).strftime("%Y-%m-%d")


def resources_for(config: SystemConfig) -> dict:
    """The Dagster resources that make the assets run exactly ``config`` (bar the window)."""
    return {
        "system": SystemResource(
            universe=config.universe,
            bar=config.bar,
            portfolio=config.portfolio.model_dump(mode="json", exclude_defaults=True),
            model_params={config.model: config.model_params} if config.model_params else {},
            profile_memory=config.profile_memory,
        ),
        "market_data": MarketDataResource(
            source=config.market_data.source, knowledge_delay=config.market_data.knowledge_delay
        ),
        "clock": ClockResource(mode="simulated"),
        "broker": BrokerResource(kind=config.broker.kind),
        "log_dir": LogDirResource(root=config.log_root),
        "io_manager": TableStoreIOManager(base_dir=str(Path(config.log_root) / "asset_store")),
    }


def simulate_with_dagster(
    config: SystemConfig,
    overwrite: bool = False,
    progress: progress_hook.Reporter | None = None,
    instance: DagsterInstance | None = None,
) -> RunSummary:
    """Materialize the model's simulation assets over the window's days, in one run."""
    began = time.perf_counter()
    if config.broker.kind != "mocked":
        raise ConfigError(
            "invalid system config: field 'broker.kind': the Dagster simulation runs the mocked broker; "
            "use --engine core to trade a simulation through ccxt (on the local exchange)"
        )
    first, last = partition_range(config)
    # fail fast, before anything is written: a bad model, an occupied log dir, unreadable market data
    dag = load_model(config.model, config.bar_delta, config.model_params)
    log_dir = LogDir.for_config(config)
    log_dir.check_free(overwrite)
    resources = resources_for(config)
    check_coverage(resources["market_data"].candle_store(config.universe), config, dag)  # and warms its cache
    assets = build_simulation_assets(config.model) + simulation_reconciliation_assets(config.model)
    progress_hook.set_reporter(progress)
    try:
        result = materialize(
            assets,
            instance=instance or instance_for(config.log_root),
            resources=resources,
            tags={
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last,
                TRIGGER_TAG: config.trigger,
                "prod_system/window": f"{compact(config.start)}.{compact(config.end)}",
            },
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            raise_on_error=True,
        )
    finally:
        progress_hook.set_reporter(None)
    statistics = log_dir.read_table("portfolio/statistics")
    summary = summarize(str(log_dir.path), statistics, time.perf_counter() - began)
    summary.dagster_run_id = result.run_id
    for event in result.get_asset_materialization_events():
        if event.asset_key == reconciliation_key(config.model, "simulation"):
            metadata = event.materialization.metadata
            summary.reconciliation = metadata["verdict"].value
            summary.report = metadata["report"].value
    return summary
