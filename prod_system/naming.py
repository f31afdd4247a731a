"""Every name the system gives a model's runs: its folder on disk, its Dagster names (groups, jobs,
schedules, sensors, partitions, asset keys), the run tags and the published objects, each spelled once.

Two names per model, never to be mixed up: the folder (``model_folder``: 'mypkg.models.build_dag'
for 'mypkg.models:build_dag') names its log dirs on disk; the slug (``model_slug``:
'mypkg_models_build_dag') names it in Dagster, which accepts only letters, digits and ``_``.
Asset keys are tuples of strings here; the Dagster layer wraps them in ``AssetKey``. Pure: no
Dagster, nothing from the project, so that config, the core and the Dagster layer all use it.
"""

from __future__ import annotations

import re

CODE_LOCATION = "prod_system"  # workspace.yaml's location_name; the CLI's runs name it as their origin

# run tags
MODEL_TAG = "prod_system/model"
RUN_MODE_TAG = "prod_system/run_mode"
ROOT_TAG = "prod_system/root"
WINDOW_TAG = "prod_system/window"  # value: the run's window, {start}.{end} compact
TRIGGER_TAG = "prod_system/trigger"
WINDOW_START_TAG = "prod_system/window_start"  # value: the first session day of the simulation window
KILL_SWITCH_TAG = "prod_system/kill_switch"  # 'stop' or 'flatten' on a run: no new orders / close all
SESSION_TAG = "prod_system/session"  # a live bar's run: deploy/production/dagster.yaml limits on it
SCHEDULED_TAG = "prod_system/scheduled"  # value: the tick's scheduled time
RANGE_START_TAG = "dagster/asset_partition_range_start"  # a ranged run's first day (Dagster's tag)
RANGE_END_TAG = "dagster/asset_partition_range_end"  # and its last (Dagster's tag)

# the asset key segments of the stages that are not run modes
SIMULATION = "simulation"
HISTORICAL = "historical"

# groups without a model
MARKET_DATA_GROUP = "market_data"
INVESTOR_GROUP = "pnl_for_investors"
REPORTS_GROUP = "system_reconciliation"

# the jobs and schedules without a model
INGESTION_JOB = "market_data_ingestion_job"
INGESTION_SCHEDULE = "market_data_ingestion_schedule"
INVESTOR_HISTORY_JOB = "investor_history_job"

CANDLES_PATH = (MARKET_DATA_GROUP, "candles_1m")
INVESTOR_PREFIX = f"{INVESTOR_GROUP}/cumulative_pnl"  # the investor plots' S3 objects
INVESTOR_NOTEBOOK = "historical_pnl_for_investors"  # the investors' notebook: its name, folder and S3 object
INVESTOR_NOTEBOOK_PATH = (INVESTOR_GROUP, "notebook")


def model_folder(model: str) -> str:
    """The log-dir folder of a model: 'C1b', or 'mypkg.models.build_dag' for 'mypkg.models:build_dag'.
    Idempotent, so readers can pass either form."""
    return model.replace(":", ".").replace("/", "_")


def model_slug(model: str) -> str:
    """A name Dagster accepts for a model: 'C1b', or 'mypkg_models_build_dag' for an import path."""
    return re.sub(r"[^A-Za-z0-9_]", "_", model)


def group_name(model: str, run_mode: str = SIMULATION) -> str:
    """The asset group of a model's run mode (or of its historical simulation)."""
    return f"{model_slug(model)}_{run_mode}"


def simulation_job_name(model: str) -> str:
    return f"{group_name(model)}_job"


def simulation_op_name(model: str, stage: str) -> str:
    """The step of a model's simulation that computes several assets at once ('model', 'trading')."""
    return f"{group_name(model)}_{stage}"


def session_job_name(model: str, mode: str) -> str:
    return f"{group_name(model, mode)}_session_job"


def session_op_name(model: str, mode: str) -> str:
    return f"{group_name(model, mode)}_session"


def session_schedule_name(model: str, mode: str) -> str:
    return f"{session_job_name(model, mode)}_daily"


def bar_sensor_name(model: str, mode: str) -> str:
    return f"{group_name(model, mode)}_bar_sensor"


def bar_partitions_name(model: str, mode: str) -> str:
    """The dynamic partitions (one per bar) of a model's live bar asset."""
    return f"{group_name(model, mode)}_bars"


def bar_run_key(model: str, mode: str, bar: str) -> str:
    """The run key of one bar's run: the sensor requests it once."""
    return f"{model_slug(model)}-{mode}-{bar}"


def session_tag_value(model: str, mode: str) -> str:
    return f"{model_slug(model)}/{mode}"


def observer_job_name(model: str, mode: str) -> str:
    return f"{group_name(model, mode)}_observer_job"


def investor_job_name(window: str) -> str:
    return f"investor_{window}_job"


def schedule_name(job_name: str) -> str:
    """The schedule of an observer or investor job."""
    return f"{job_name}_schedule"


def simulation_path(model: str, name: str) -> tuple[str, ...]:
    """A simulation asset of a model: (model, 'simulation', stage)."""
    return (model_slug(model), SIMULATION, name)


def live_bar_path(model: str, mode: str) -> tuple[str, ...]:
    return (model_slug(model), mode, "bar")


def live_bar_of(path: tuple[str, ...] | list[str]) -> tuple[str, str] | None:
    """The (model slug, mode) of a live bar's asset key (``live_bar_path``), None for another key."""
    return (path[0], path[1]) if len(path) == 3 and path[2] == "bar" and path[1] != SIMULATION else None


def reconciliation_path(model: str, run_mode: str) -> tuple[str, ...]:
    return (model_slug(model), run_mode, "reconciliation")


def historical_path(model: str) -> tuple[str, ...]:
    return (model_slug(model), HISTORICAL, "historical_pnl")


def investor_plot_path(window: str) -> tuple[str, ...]:
    return (INVESTOR_GROUP, f"cumulative_pnl_{window}")


def report_path(model: str) -> tuple[str, ...]:
    """The published reconciliation report of a model."""
    return (REPORTS_GROUP, f"{model_slug(model)}_last_5minutes")


def investor_object(window: str) -> str:
    """The S3 object of an investor plot."""
    return f"{INVESTOR_PREFIX}.{window}.png"


def investor_performance_object(window: str) -> str:
    """The S3 object of the performance figures published with an investor plot (Markdown)."""
    return f"{INVESTOR_GROUP}/performance.{window}.md"


def investor_notebook_object() -> str:
    """The S3 object of the investors' executed notebook (HTML)."""
    return f"{INVESTOR_GROUP}/{INVESTOR_NOTEBOOK}.html"


def report_object(model: str) -> str:
    """The S3 object of a model's latest reconciliation report (named after the model as configured)."""
    return f"{REPORTS_GROUP}/{model}.last_5minutes.html"
