"""Dagster's side of the alerts: a run-failure sensor that tells a person when any job of the code
location fails (a live bar's run, the daily session job, the observer's schedules, a simulation), with
the job, the run id, the partition and the error's first line.

Its default status is RUNNING: it only sends messages (no run is launched), sends nothing while no alert
URL is set (``PROD_SYSTEM_ALERT_URLS``: each failure is then only logged), and a failure nobody hears of
is the very thing alerts exist to prevent; an alerting sensor stopped by default would stay stopped on a
new deployment until someone remembers it. Its rate limit (per job and steady error line: a failing
live bar run is one message an hour, not one per bar) is kept under the log root of ``LogDirResource``,
shared with the CLI's sessions and the observer.
"""

from __future__ import annotations

from dagster import DefaultSensorStatus, Definitions, RunFailureSensorContext, SensorDefinition, run_failure_sensor

from prod_system.alerts import Notifier, failure_alert, first_line
from prod_system.config import AlertsConfig
from prod_system.defs.resources import LogDirResource
from prod_system.naming import RANGE_END_TAG, RANGE_START_TAG

PARTITION_TAG = "dagster/partition"  # Dagster's tag of a run's single partition
SENSOR_NAME = "alert_on_run_failure"


def failure_text(context: RunFailureSensorContext) -> str:
    """The failure's first line: the first failed step's error, else the run's failure (a launch, say)."""
    for event in context.get_step_failure_events():
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            return first_line(f"{event.step_key}: {error.cls_name}: {error.message}")
    error = getattr(context.failure_event.event_specific_data, "error", None)
    if error is not None:
        return first_line(f"{error.cls_name}: {error.message}")
    return first_line(context.failure_event.message or "the run failed")


def partition_of(tags: dict[str, str]) -> str:
    """The run's partition (a bar, a day) or partition range, '' if it has none."""
    if PARTITION_TAG in tags:
        return tags[PARTITION_TAG]
    if RANGE_START_TAG in tags:
        return f"{tags[RANGE_START_TAG]}...{tags.get(RANGE_END_TAG, '')}"
    return ""


@run_failure_sensor(
    name=SENSOR_NAME,
    description="Alerts a person (apprise URLs in PROD_SYSTEM_ALERT_URLS) when a run of any job here fails",
    default_status=DefaultSensorStatus.RUNNING,
)
def alert_on_run_failure(context: RunFailureSensorContext, log_dir: LogDirResource) -> None:
    run = context.dagster_run
    partition = partition_of(dict(run.tags))
    what = f"run {run.run_id} of {run.job_name}" + (f" (partition {partition})" if partition else "")
    alert = failure_alert(run.job_name, f"run failed|{run.job_name}", what, failure_text(context))
    Notifier(AlertsConfig(), log_dir.root).send(alert)


def alerts_definitions() -> Definitions:
    sensors: list[SensorDefinition] = [alert_on_run_failure]
    return Definitions(sensors=sensors)
