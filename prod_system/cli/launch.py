"""The CLI's runs in the Dagster instance, where the UI shows them.

``prod-system simulate`` runs the model's simulation job of the code location (``C1b_simulation_job``)
in process, over the session days of the window: the same assets as in the UI, against the instance
of DAGSTER_HOME (or a persistent one under the log root). The run is named after its job, carries the
model, run mode and root in its tags and the resources in its run config (a re-execution from the UI
replays them), and names workspace.yaml's code location as its origin: the UI's Overview timeline
leaves out runs without one, such as those of ``materialize`` and ``execute_in_process``, hence the
instance's own ``create_run_for_job`` and ``execute_run`` (internal APIs: Dagster is pinned).

``prod-system run`` reports each bar of its live session as a materialization of the live asset's bar
partition (``LiveBarReporter``, given to the core session as its ``on_bar`` callback).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import pandas as pd
import yaml
from dagster import DagsterInstance, JobDefinition
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.execution.api import execute_run
from dagster._core.instance.ref import InstanceRef
from dagster._core.remote_origin import ManagedGrpcPythonEnvCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from prod_system.common import progress as progress_hook
from prod_system.common.files import write_atomically
from prod_system.common.timeutil import compact
from prod_system.config import SystemConfig
from prod_system.defs.live import BarReporter
from prod_system.defs.reconciliation import reconciliation_key
from prod_system.defs.resources import (
    BrokerResource,
    ClockResource,
    LogDirResource,
    MarketDataResource,
    SystemResource,
    TableStoreIOManager,
)
from prod_system.defs.simulation import SESSION_DAYS
from prod_system.errors import ConfigError
from prod_system.log_dir import LogDir
from prod_system.models.dag import load_model
from prod_system.naming import (
    CODE_LOCATION,
    MODEL_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    ROOT_TAG,
    RUN_MODE_TAG,
    TRIGGER_TAG,
    WINDOW_TAG,
    simulation_job_name,
)
from prod_system.runs.finish import RunSummary, summarize
from prod_system.runs.stages import check_coverage, data_window

DAY = pd.Timedelta(days=1)
logger = logging.getLogger(__name__)


# The settings of the repository's dagster.yaml, for an instance the CLI creates itself (a test keeps
# the two equal): no telemetry, no welcome dialog, one SQLite database in DAGSTER_HOME for all runs'
# events, written without an fsync per event.
INSTANCE_SETTINGS = {
    "telemetry": {"enabled": False},
    "nux": {"enabled": False},
    "event_log_storage": {"module": "prod_system.defs.instance", "class": "FastSqliteEventLogStorage"},
}
# The CLI's runs print their progress to the terminal themselves: no copy of their stdout and stderr
# in the instance. Capturing it would mirror the terminal through a `tail` process and a Python
# watcher, which a Ctrl-C in the terminal reaches too (a KeyboardInterrupt traceback each).
NO_COMPUTE_LOGS = {
    "compute_logs": {"module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}
}
RESOURCES = {
    "system": SystemResource,
    "market_data": MarketDataResource,
    "clock": ClockResource,
    "broker": BrokerResource,
    "log_dir": LogDirResource,
    "io_manager": TableStoreIOManager,
}


OLD_EVENT_LOG_MODULE = "prod_system.instance.sqlite_event_log"  # before the layers: the event log's module


def _upgrade_settings(settings: Path) -> None:
    """An instance created by an earlier version names the event log's module by its old path: point it
    to its new home, so that the runs of an existing log root stay readable."""
    text = settings.read_text()
    if OLD_EVENT_LOG_MODULE in text:
        new = INSTANCE_SETTINGS["event_log_storage"]["module"]
        write_atomically(settings, lambda tmp: tmp.write_text(text.replace(OLD_EVENT_LOG_MODULE, new)))


def instance_for(root: str | Path) -> DagsterInstance:
    """DAGSTER_HOME's instance if set, else a persistent SQLite instance under the log root (without
    compute-log capture: ``NO_COMPUTE_LOGS``)."""
    if not os.environ.get("DAGSTER_HOME"):
        home = (Path(root) / "dagster_home").resolve()
        home.mkdir(parents=True, exist_ok=True)
        settings = home / "dagster.yaml"
        if not settings.exists():
            settings.write_text(yaml.safe_dump(INSTANCE_SETTINGS, sort_keys=False))
        _upgrade_settings(settings)
        os.environ["DAGSTER_HOME"] = str(home)
    home = os.path.expanduser(os.environ["DAGSTER_HOME"])
    if not Path(home).is_absolute() or not Path(home).is_dir():
        return DagsterInstance.get()  # which says what is wrong with it
    return DagsterInstance.from_ref(InstanceRef.from_dir(home, overrides=NO_COMPUTE_LOGS))


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


def resource_config(config: SystemConfig) -> dict[str, dict]:
    """The config of each Dagster resource that makes the assets run exactly ``config`` (bar the window)."""
    return {
        "system": {
            "universe": list(config.universe),
            "universe_rule": config.universe_rule,
            "universe_each_day": config.universe_each_day,
            "universe_by_day": config.universe_by_day,
            "bar": config.bar,
            "portfolio": config.portfolio.model_dump(mode="json", exclude_defaults=True),
            "model_params": {config.model: config.model_params} if config.model_params else {},
            "profile_memory": config.profile_memory,
            "observer": config.observer.model_dump(mode="json", exclude_defaults=True),
            "alerts": config.alerts.model_dump(mode="json", exclude_defaults=True),
        },
        "market_data": {
            "source": config.market_data.source,
            "knowledge_delay": config.market_data.knowledge_delay,
            "instruments": config.market_data.instruments,
        },
        "clock": {"mode": "simulated"},
        "broker": {"kind": config.broker.kind},
        "log_dir": {"root": config.log_root},
        "io_manager": {"base_dir": str(Path(config.log_root) / "asset_store")},
    }


def resources_for(config: SystemConfig) -> dict:
    """The Dagster resources that make the assets run exactly ``config`` (bar the window)."""
    return {name: RESOURCES[name](**values) for name, values in resource_config(config).items()}


def run_config_for(config: SystemConfig, log_level: str = "CRITICAL") -> dict:
    """The run config of the model's simulation job for ``config``: its resources, and the level of
    Dagster's console log (by default none of it: the CLI says what went wrong in one line)."""
    return {
        "resources": {name: {"config": values} for name, values in resource_config(config).items()},
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }


def simulation_job(model: str) -> tuple[JobDefinition, str]:
    """The model's simulation job and its repository's name: from the code location, or for a model
    it does not list (PROD_SYSTEM_MODELS), from the same definitions built for that model."""
    from prod_system import definitions

    name = simulation_job_name(model)
    defs = definitions.defs
    if name not in {job.name for job in defs.jobs or ()}:
        defs = definitions.build_definitions([model])
    return defs.resolve_job_def(name), defs.get_repository_def().name


def job_origin(job_name: str, repository: str) -> RemoteJobOrigin:
    """The job in workspace.yaml's code location (prod_system.definitions), as the UI addresses it."""
    target = LoadableTargetOrigin(executable_path=sys.executable, module_name="prod_system.definitions")
    location = ManagedGrpcPythonEnvCodeLocationOrigin(target, CODE_LOCATION)
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, repository), job_name)


def simulate_with_dagster(
    config: SystemConfig,
    overwrite: bool = False,
    progress: progress_hook.Reporter | None = None,
    instance: DagsterInstance | None = None,
    log_level: str = "CRITICAL",
) -> RunSummary:
    """Run the model's simulation job over the window's days, in one run, in this process.

    Interrupted (Ctrl-C), it raises ``KeyboardInterrupt``: the run is marked failed (Dagster's own
    account of it) or canceled (if it had not started), and the log dir holds no finished run, so the
    same simulation can simply be run again."""
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
    store = resources["market_data"].candle_store(config.universe, data_window(config, dag))  # and warms its cache
    check_coverage(store, config, dag)
    job, repository = simulation_job(config.model)
    instance = instance or instance_for(config.log_root)
    tags = {
        **job.run_tags,
        RANGE_START_TAG: first,
        RANGE_END_TAG: last,
        TRIGGER_TAG: config.trigger,
        WINDOW_TAG: f"{compact(config.start)}.{compact(config.end)}",
        MODEL_TAG: config.model,
        RUN_MODE_TAG: config.run_mode,
        ROOT_TAG: str(Path(config.log_root).resolve()),
    }
    run = None
    progress_hook.set_reporter(progress)
    try:
        run = instance.create_run_for_job(
            job_def=job,
            run_config=run_config_for(config, log_level),
            tags=tags,
            remote_job_origin=job_origin(job.name, repository),
        )
        result = execute_run(InMemoryJob(job), run, instance, raise_on_error=True)
    except (KeyboardInterrupt, DagsterExecutionInterruptedError):
        if run is not None and not instance.get_run_by_id(run.run_id).is_finished:
            instance.report_run_canceled(run, "interrupted before it started (Ctrl-C)")
        raise KeyboardInterrupt from None  # the CLI's one line: 'error: interrupted', exit 130
    finally:
        progress_hook.set_reporter(None)
    return _run_summary(config, log_dir, result, began)


def _run_summary(config: SystemConfig, log_dir: LogDir, result, began: float) -> RunSummary:
    """The run's summary from its log dir, with its Dagster run id and its reconciliation's verdict
    and report (the metadata of the reconciliation asset it materialized)."""
    statistics = log_dir.read_table("portfolio/statistics")
    summary = summarize(str(log_dir.path), statistics, time.perf_counter() - began, config.bar_delta)
    summary.dagster_run_id = result.run_id
    for event in result.get_asset_materialization_events():
        if event.asset_key == reconciliation_key(config.model, "simulation"):
            metadata = event.materialization.metadata
            summary.reconciliation = metadata["verdict"].value
            summary.report = metadata["report"].value
    return summary


class LiveBarReporter(BarReporter):
    """Reports each bar of a live session of the CLI (``prod-system run``) to the Dagster instance:
    the session job's ``BarReporter`` (the same partitions, metadata, waiting while the session catches
    up, and warnings), its events reported runless (``report_runless_asset_event``) and marked
    ``launched_by``, so the UI shows the session's bars with the bars that the bar sensor's runs trade."""

    def __init__(self, config: SystemConfig, clock, bar: pd.Timedelta):
        self.root = config.log_root
        self._instance: DagsterInstance | None = None
        super().__init__(
            config.model,
            config.run_mode,
            LogDir.for_config(config).path,
            clock,
            bar,
            emit=lambda event: self.dagster().report_runless_asset_event(event),
            instance=self.dagster,
            warn=lambda message: logger.warning("%s", message),
            extra={"launched_by": "prod-system run"},
        )
        try:
            self.dagster()  # now, so that the first bar does not wait for it
        except Exception as error:
            self._failed(f"cannot report the bars to the Dagster instance (the log dir has them): {error}")

    def dagster(self) -> DagsterInstance:
        """The instance of the log root (opened once)."""
        self._instance = self._instance or instance_for(self.root)
        return self._instance
