"""Schedules of the observer and the investor plots, as in the seed: every 5 minutes and daily (UTC).

They are created stopped: they publish to S3, so an operator turns them on (UI or
``dagster schedule start``) once the bucket and credentials are in place. A tick with nothing to
do (no live session yet) is skipped, not failed.
"""

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    in_process_executor,
    schedule,
)

from prod_system.analysis.observer import find_runs
from prod_system.defs.publishing import HISTORICAL_WINDOWS, historical_key, investor_key, report_key
from prod_system.defs.reconciliation import LIVE_MODES, reconciliation_key
from prod_system.defs.resources import LogDirResource, PublishingResource
from prod_system.defs.simulation import model_slug

EVERY_5_MINUTES = "*/5 * * * *"
DAILY = "15 0 * * *"  # 00:15 UTC: the day's last bars are in


def _job(name: str, selection: AssetSelection, description: str):
    return define_asset_job(name, selection=selection, executor_def=in_process_executor, description=description)


def _schedule(job, cron: str, model: str, mode: str | None, description: str):
    """A schedule that requests a run only when the model has a session of ``mode`` (the investor
    mode when None) under the log root."""

    @schedule(
        name=f"{job.name}_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.STOPPED,
        description=description,
    )
    def _tick(context: ScheduleEvaluationContext, log_dir: LogDirResource, publishing: PublishingResource):
        run_mode = mode or publishing.investor_run_mode
        if not find_runs(log_dir.root, model_slug(model), run_mode):
            return SkipReason(f"no {run_mode} session of {model} under {log_dir.root}")
        return RunRequest(run_key=None, tags={"prod_system/scheduled": context.scheduled_execution_time.isoformat()})

    return _tick


def build_observer_jobs(models: list[str], investor_model: str) -> tuple[list, list]:
    """Jobs and schedules: per model and live mode, reconcile and publish every 5 minutes; for the
    investor model, the historical simulation and its plots daily, the live plots as in the seed."""
    jobs, schedules = [], []
    for model in models:
        for mode in LIVE_MODES:
            job = _job(
                f"{model_slug(model)}_{mode}_observer_job",
                AssetSelection.assets(reconciliation_key(model, mode), report_key(model)),
                f"Reconcile the latest {mode} session of {model} with research and publish the report.",
            )
            jobs.append(job)
            schedules.append(
                _schedule(job, EVERY_5_MINUTES, model, mode, f"Every 5 minutes during {mode} sessions of {model}.")
            )
    history = _job(
        "investor_history_job",
        AssetSelection.assets(historical_key(investor_model), *[investor_key(w) for w in HISTORICAL_WINDOWS]),
        f"The historical simulation of {investor_model} and its since-2019 and since-2022 cumulative PnL plots.",
    )
    jobs.append(history)
    schedules.append(
        schedule(
            name="investor_history_job_schedule",
            job=history,
            cron_schedule=DAILY,
            execution_timezone="UTC",
            default_status=DefaultScheduleStatus.STOPPED,
            description="Daily: the history and the long-run plots.",
        )(lambda _context: RunRequest())
    )
    for window, cron, when in (("last_24hours", DAILY, "Daily"), ("last_5minutes", EVERY_5_MINUTES, "Every 5 minutes")):
        job = _job(
            f"investor_{window}_job",
            AssetSelection.assets(investor_key(window)),
            f"The {window} cumulative PnL plot of {investor_model}.",
        )
        jobs.append(job)
        schedules.append(_schedule(job, cron, investor_model, None, f"{when}, while {investor_model} trades live."))
    return jobs, schedules
