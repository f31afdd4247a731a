"""Published outputs (thin: the core computes, these assets upload to S3 with dagster-aws).

- ``[model, historical, historical_pnl]``: the investor model in batch over its whole history
  (from ``history_start``, 2019 by default, or the first day of the market data), research portfolio.
- ``pnl_for_investors/*``: cumulative PnL in $ of the investor model, ``since_2019`` and
  ``since_2022`` from the historical simulation (daily), ``last_24hours`` and ``last_5minutes``
  from the live sessions (the trailing 24 hours up to the last recorded bar, daily; the current
  session, every 5 minutes), uploaded to ``s3://{bucket}/pnl_for_investors/cumulative_pnl.{window}.png``,
  with the window's performance figures (Sharpe, drawdown, fees, funding...) in
  ``s3://{bucket}/pnl_for_investors/performance.{window}.md`` and in the asset's metadata.
- ``system_reconciliation/{model}_last_5minutes``: the latest reconciliation report of each model,
  uploaded to ``s3://{bucket}/system_reconciliation/{model}.last_5minutes.html``.

Their jobs and schedules, as in the seed: per model and live mode, reconcile and publish every 5
minutes; the history and its plots daily (UTC). The schedules are created stopped: they publish to
S3, so an operator turns them on (UI or ``dagster schedule start``) once the bucket and credentials
are in place. A tick with nothing to do (no live session yet) is skipped, not failed.

The runs are found on disk under the model's folder name: the readers take the model as configured.
"""

import json
from pathlib import Path

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    DefaultScheduleStatus,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    asset,
    define_asset_job,
    in_process_executor,
    schedule,
)
from dagster_aws.s3 import S3Resource

from prod_system.analysis import performance, plots
from prod_system.analysis.observer import find_runs, latest_report, session_statistics
from prod_system.analysis.report import PNL_REPORT_PNG
from prod_system.config import RunMode, load_config
from prod_system.defs.metadata import performance_metadata, preview, usd
from prod_system.defs.reconciliation import reconciliation_key
from prod_system.defs.resources import (
    BrokerResource,
    LogDirResource,
    MarketDataResource,
    PublishingResource,
    SystemResource,
)
from prod_system.errors import MarketDataError
from prod_system.naming import (
    HISTORICAL,
    INVESTOR_GROUP,
    INVESTOR_HISTORY_JOB,
    INVESTOR_PREFIX,
    REPORTS_GROUP,
    SCHEDULED_TAG,
    group_name,
    historical_path,
    investor_job_name,
    investor_object,
    investor_performance_object,
    investor_plot_path,
    observer_job_name,
    report_object,
    report_path,
    schedule_name,
)
from prod_system.runs.historical import historical_pnl, historical_runs, history_window, read_statistics

SIMULATION = RunMode.SIMULATION.value  # the run mode of the historical simulation
HISTORICAL_WINDOWS = {"since_2019": "2019-01-01", "since_2022": "2022-01-01"}
LIVE_WINDOWS = ("last_24hours", "last_5minutes")
EVERY_5_MINUTES = "*/5 * * * *"
DAILY = "15 0 * * *"  # 00:15 UTC: the day's last bars are in


def historical_key(model: str) -> AssetKey:
    return AssetKey(historical_path(model))


def investor_key(window: str) -> AssetKey:
    return AssetKey(investor_plot_path(window))


def report_key(model: str) -> AssetKey:
    return AssetKey(report_path(model))


def build_investor_assets(model: str) -> list[AssetsDefinition]:
    """The historical simulation of the investor model and the four cumulative-PnL plots."""
    assets = [_historical(model)]
    for window, since in HISTORICAL_WINDOWS.items():
        assets.append(_historical_plot(model, window, pd.Timestamp(since, tz="UTC")))
    for window in LIVE_WINDOWS:
        assets.append(_live_plot(model, window))
    return assets


def _historical(model: str) -> AssetsDefinition:
    @asset(
        key=historical_key(model),
        description=f"{model} evaluated in batch over the whole market-data history (from history_start), traded "
        "by the research portfolio: the history behind the investors' cumulative PnL plots.",
        group_name=group_name(model, HISTORICAL),
        kinds={"pandas", "parquet"},
        owners=["team:research"],
        tags={"stage": "research"},
    )
    def historical(
        context: AssetExecutionContext,
        system: SystemResource,
        market_data: MarketDataResource,
        log_dir: LogDirResource,
        publishing: PublishingResource,
    ) -> MaterializeResult:
        store = market_data.candle_store(system.listed(market_data.source))
        now = pd.Timestamp.now(tz="UTC")
        try:
            start, end = history_window(
                store, pd.Timedelta(system.bar), pd.Timestamp(publishing.history_start, tz="UTC"), now
            )
        except MarketDataError as error:
            raise Failure(str(error)) from None
        config = system.config_for(
            model, SIMULATION, start, end, "scheduled", market_data, BrokerResource(kind="mocked"), log_dir
        )
        result = historical_pnl(config, overwrite=True)
        stats = result.statistics
        png = (result.directory / PNL_REPORT_PNG).read_bytes()
        return MaterializeResult(
            metadata={
                "first_bar_end": str(stats["bar_end"].iloc[0]),
                "last_bar_end": str(stats["bar_end"].iloc[-1]),
                "bars": len(stats),
                "pnl": usd(stats["pnl"].sum()),
                "gross_volume": usd(stats["gross_volume"].sum()),
                "seconds": result.seconds,
                "directory": MetadataValue.path(str(result.directory)),
                "cumulative_pnl": preview(png, "cumulative PnL"),
            }
        )

    return historical


def _publish_plot(
    context: AssetExecutionContext,
    s3: S3Resource,
    publishing: PublishingResource,
    window: str,
    stats: pd.DataFrame,
    bar: pd.Timedelta,
    title: str,
    source: str,
) -> MaterializeResult:
    """Upload the cumulative PnL plot of ``stats`` (statistics indexed by bar end) and its performance figures."""
    cumulative = stats["pnl"].cumsum()
    png = plots.investor_cumulative_pnl(cumulative, title, source)
    uploaded = publishing.upload(s3, investor_object(window), png, "image/png")
    context.log.info(f"published {uploaded['s3_uri']} ({uploaded['bytes']:,} bytes)")
    figures = performance.compute(stats.reset_index(), bar)
    text = "\n".join([f"# {title}", "", source, "", *performance.markdown(figures), ""])
    figures_uploaded = publishing.upload(
        s3, investor_performance_object(window), text.encode(), "text/markdown; charset=utf-8"
    )
    return MaterializeResult(
        metadata={
            **uploaded,
            "s3_uri": MetadataValue.url(uploaded["s3_uri"]),
            "cumulative_pnl_usd": usd(cumulative.iloc[-1]),
            "first_bar_end": str(cumulative.index[0]),
            "last_bar_end": str(cumulative.index[-1]),
            "plot": preview(png, title),
            "performance_s3_uri": MetadataValue.url(figures_uploaded["s3_uri"]),
            **performance_metadata(figures.to_dict()),
        }
    )


def _bar(directory: Path) -> pd.Timedelta:
    """The bar length of a run, from the config saved in its directory."""
    return load_config(directory / "system_config.yaml").bar_delta


def _historical_plot(model: str, window: str, since: pd.Timestamp):
    @asset(
        key=investor_key(window),
        description=f"Cumulative PnL in $ of {model} since {since:%Y-%m-%d} (historical simulation), published to "
        f"s3://{{bucket}}/{INVESTOR_PREFIX}.{window}.png. Refreshed daily.",
        deps=[historical_key(model)],
        group_name=INVESTOR_GROUP,
        kinds={"s3", "matplotlib"},
        owners=["team:investor-relations"],
        tags={"stage": "publishing"},
    )
    def historical_plot(
        context: AssetExecutionContext, s3: S3Resource, publishing: PublishingResource, log_dir: LogDirResource
    ) -> MaterializeResult:
        runs = historical_runs(log_dir.root, model)
        if not runs:
            raise Failure(f"no historical simulation of {model} under {log_dir.root}: materialize it first")
        stats = read_statistics(runs[-1]).set_index("bar_end")
        stats = stats[stats.index > since]
        if stats.empty:
            raise Failure(f"the historical simulation of {model} has no bar after {since}")
        first, last = stats.index[0], stats.index[-1]
        note = "" if first <= since + pd.Timedelta(days=1) else f" (market data from {first:%Y-%m-%d})"
        title = f"{model}: cumulative PnL since {since:%Y-%m-%d}{note}"
        source = f"historical simulation, bars ending {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC"
        return _publish_plot(context, s3, publishing, window, stats, _bar(runs[-1]), title, source)

    return historical_plot


def _live_plot(model: str, window: str):
    what = (
        "the trailing 24 hours of live trading up to the last recorded bar (refreshed daily)"
        if window == "last_24hours"
        else "the current live session (refreshed every 5 minutes)"
    )

    @asset(
        key=investor_key(window),
        description=f"Cumulative PnL in $ of {model} over {what}, from the live sessions of the configured run mode; "
        f"published to s3://{{bucket}}/{INVESTOR_PREFIX}.{window}.png.",
        group_name=INVESTOR_GROUP,
        kinds={"s3", "matplotlib"},
        owners=["team:investor-relations"],
        tags={"stage": "publishing"},
    )
    def live_plot(
        context: AssetExecutionContext, s3: S3Resource, publishing: PublishingResource, log_dir: LogDirResource
    ) -> MaterializeResult:
        mode = publishing.investor_run_mode
        runs = find_runs(log_dir.root, model, mode)
        if window == "last_5minutes":
            runs = runs[-1:]
        stats = session_statistics(runs)
        if stats.empty:
            raise Failure(f"no {mode} session of {model} under {log_dir.root} has recorded a bar yet")
        stats = stats.set_index("bar_end")
        if window == "last_24hours":
            stats = stats[stats.index > stats.index[-1] - pd.Timedelta(hours=24)]
            title = f"{model}: cumulative PnL over the last 24 hours ({mode})"
        else:
            title = f"{model}: cumulative PnL of the current session ({mode})"
        source = f"live {mode}, bars ending {stats.index[0]:%Y-%m-%d %H:%M} to {stats.index[-1]:%Y-%m-%d %H:%M} UTC"
        return _publish_plot(context, s3, publishing, window, stats, _bar(runs[-1].log_dir), title, source)

    return live_plot


def build_report_publishing(model: str):
    """Upload the latest reconciliation report of ``model`` (any run mode) as {model}.last_5minutes.html."""

    @asset(
        key=report_key(model),
        description=f"The latest prod-vs-research reconciliation report of {model}, published to "
        f"s3://{{bucket}}/system_reconciliation/{model}.last_5minutes.html (refreshed every 5 minutes "
        "during live sessions).",
        deps=[reconciliation_key(model, mode) for mode in RunMode.live()],
        group_name=REPORTS_GROUP,
        kinds={"s3", "html"},
        owners=["team:research"],
        tags={"stage": "publishing"},
    )
    def published_report(
        context: AssetExecutionContext, s3: S3Resource, publishing: PublishingResource, log_dir: LogDirResource
    ) -> MaterializeResult:
        report = latest_report(log_dir.root, model)
        if report is None:
            raise Failure(f"no reconciliation report of {model} under {log_dir.root}: reconcile a run first")
        summary = json.loads((report.parent / "summary.json").read_text())
        uploaded = publishing.upload(s3, report_object(model), report.read_bytes(), "text/html; charset=utf-8")
        context.log.info(f"published {uploaded['s3_uri']} from {report}")
        return MaterializeResult(
            metadata={
                **uploaded,
                "s3_uri": MetadataValue.url(uploaded["s3_uri"]),
                "report": MetadataValue.path(str(report)),
                "run_mode": summary["run_mode"],
                "verdict": summary["verdict"],
                "generated_at": summary["generated_at"],
            }
        )

    return published_report


def publishing_definitions(models: list[str], investor_model: str) -> Definitions:
    """The published reports of every model and the investor plots of one, with their jobs and schedules."""
    observer = [_observer(model, mode) for model in models for mode in RunMode.live()]
    investor = _investor_jobs(investor_model)
    return Definitions(
        assets=[*(build_report_publishing(model) for model in models), *build_investor_assets(investor_model)],
        jobs=[job for job, _ in [*observer, *investor]],
        schedules=[tick for _, tick in [*observer, *investor]],
    )


def _observer(model: str, mode: str) -> tuple:
    """The job that reconciles the latest session of ``model`` in ``mode`` and publishes the report, and
    its schedule (every 5 minutes)."""
    job = _job(
        observer_job_name(model, mode),
        AssetSelection.assets(reconciliation_key(model, mode), report_key(model)),
        f"Reconcile the latest {mode} session of {model} with research and publish the report.",
    )
    return job, _schedule(job, EVERY_5_MINUTES, model, mode, f"Every 5 minutes during {mode} sessions of {model}.")


def _investor_jobs(model: str) -> list[tuple]:
    """The investor plots' jobs and schedules: the historical simulation and its plots daily, the live
    plots as in the seed."""
    history = _job(
        INVESTOR_HISTORY_JOB,
        AssetSelection.assets(historical_key(model), *[investor_key(w) for w in HISTORICAL_WINDOWS]),
        f"The historical simulation of {model} and its since-2019 and since-2022 cumulative PnL plots.",
    )
    daily = schedule(
        name=schedule_name(history.name),
        job=history,
        cron_schedule=DAILY,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.STOPPED,
        description="Daily: the history and the long-run plots.",
    )(lambda _context: RunRequest())
    jobs = [(history, daily)]
    for window, cron, when in (("last_24hours", DAILY, "Daily"), ("last_5minutes", EVERY_5_MINUTES, "Every 5 minutes")):
        job = _job(
            investor_job_name(window),
            AssetSelection.assets(investor_key(window)),
            f"The {window} cumulative PnL plot of {model}.",
        )
        jobs.append((job, _schedule(job, cron, model, None, f"{when}, while {model} trades live.")))
    return jobs


def _job(name: str, selection: AssetSelection, description: str):
    return define_asset_job(name, selection=selection, executor_def=in_process_executor, description=description)


def _schedule(job, cron: str, model: str, mode: str | None, description: str):
    """A schedule that requests a run only when the model has a session of ``mode`` (the investor
    mode when None) under the log root (its folder: the model's log dirs are named after it)."""

    @schedule(
        name=schedule_name(job.name),
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.STOPPED,
        description=description,
    )
    def _tick(context: ScheduleEvaluationContext, log_dir: LogDirResource, publishing: PublishingResource):
        run_mode = mode or publishing.investor_run_mode
        if not find_runs(log_dir.root, model, run_mode):
            return SkipReason(f"no {run_mode} session of {model} under {log_dir.root}")
        return RunRequest(run_key=None, tags={SCHEDULED_TAG: context.scheduled_execution_time.isoformat()})

    return _tick
