"""Dagster's side of the alerts: a run-failure sensor that tells a person when any job of the code
location fails (a live bar's run, the daily session job, the observer's schedules, a simulation), with
the job, the run id, the partition and the error's first line.

Its default status is RUNNING: it only sends messages (no run is launched), sends nothing while no alert
URL is set (``PROD_SYSTEM_ALERT_URLS``: each failure is then only logged), and a failure nobody hears of
is the very thing alerts exist to prevent; an alerting sensor stopped by default would stay stopped on a
new deployment until someone remembers it. Its settings are the deployment's (``SystemResource.alerts``:
the URL variable and repeat window the sessions use). Its rate limit (per job and steady error line: a
failing live bar run is one message an hour, not one per bar) is kept under the log root of
``LogDirResource``, shared with the CLI's sessions and the observer. A live bar runs under Dagster's
implicit asset job (``__ASSET_JOB``): its alert names the model and mode of the bar, and each model and
mode is a cause of its own.
"""

from __future__ import annotations

from dagster import DefaultSensorStatus, Definitions, RunFailureSensorContext, SensorDefinition, run_failure_sensor

from prod_system.alerts import Notifier, failure_alert, first_line
from prod_system.defs.resources import LogDirResource, SystemResource
from prod_system.defs.resources.live import LiveResource
from prod_system.naming import RANGE_END_TAG, RANGE_START_TAG, live_bar_of

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


def run_subject(job_name: str, asset_keys: list[tuple[str, ...]]) -> str:
    """What a failed run is about: its job, or for Dagster's implicit asset job ("__ASSET_JOB") its
    selected assets, a live bar's as "C1b paper_trading"."""
    if not job_name.startswith("__") or not asset_keys:
        return job_name
    names = {" ".join(bar) if (bar := live_bar_of(path)) else "/".join(path) for path in asset_keys}
    return ", ".join(sorted(names))


@run_failure_sensor(
    name=SENSOR_NAME,
    description="Alerts a person (apprise URLs in PROD_SYSTEM_ALERT_URLS) when a run of any job here fails",
    default_status=DefaultSensorStatus.RUNNING,
)
def alert_on_run_failure(
    context: RunFailureSensorContext, log_dir: LogDirResource, system: SystemResource, live: LiveResource
) -> None:
    run = context.dagster_run
    partition = partition_of(dict(run.tags))
    subject = run_subject(run.job_name, sorted(tuple(key.path) for key in run.asset_selection or ()))
    what = f"run {run.run_id} of {subject}" + (f" (partition {partition})" if partition else "")
    config = system.alerts_config()
    also = (config.urls_env, live.api_key_env, live.api_secret_env)
    alert = failure_alert(subject, f"run failed|{subject}", what, failure_text(context), also=also)
    Notifier(config, log_dir.root, also).send(alert)


def alerts_definitions() -> Definitions:
    sensors: list[SensorDefinition] = [alert_on_run_failure]
    return Definitions(sensors=sensors)
