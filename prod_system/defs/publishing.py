"""Published outputs (thin: the core computes, these assets upload to S3 with dagster-aws).

- ``[model, historical, historical_pnl]``: the investor model in batch over its whole history
  (from ``history_start``, 2019 by default, or the first day of the market data), research portfolio.
- ``pnl_for_investors/*``: cumulative PnL in $ of the investor model, ``since_2019`` and
  ``since_2022`` from the historical simulation (daily), ``last_24hours`` and ``last_5minutes``
  from the live sessions (the trailing 24 hours up to the last recorded bar, daily; the current
  session, every 5 minutes), uploaded to ``s3://{bucket}/pnl_for_investors/cumulative_pnl.{window}.png``,
  with the window's performance figures (Sharpe, drawdown, fees, funding...) in
  ``s3://{bucket}/pnl_for_investors/performance.{window}.md`` and in the asset's metadata. The windows
  are selected by ``analysis.investor`` (one function each), which the investors' notebook calls too.
- ``pnl_for_investors/notebook``: the notebook ``historical_pnl_for_investors`` (the historical simulation and
  the four windows, plots and figures) executed daily after the plots into
  ``{historical run}/historical_pnl_for_investors/{run_timestamp}/`` (.ipynb and .html); its HTML is uploaded
  to ``s3://{bucket}/pnl_for_investors/historical_pnl_for_investors.html``.
- ``system_reconciliation/{model}_last_5minutes``: the latest reconciliation report of each model,
  uploaded to ``s3://{bucket}/system_reconciliation/{model}.last_5minutes.html``.

Their jobs and schedules, as in the seed: per model and live mode, reconcile and publish every 5
minutes; the history and its plots daily (UTC). The schedules are created stopped: they publish to
S3, so an operator turns them on (UI or ``dagster schedule start``) once the bucket and credentials
are in place. A tick with nothing to do (no live session yet) is skipped, not failed.

The runs are found on disk under the model's folder name: the readers take the model as configured.
"""

import json

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

from prod_system.analysis import investor, notebooks
from prod_system.analysis.investor import HISTORICAL_WINDOWS, LIVE_WINDOWS, WINDOWS, InvestorWindow
from prod_system.analysis.observer import find_runs, latest_report
from prod_system.analysis.report import PNL_REPORT_PNG
from prod_system.common.timeutil import compact
from prod_system.config import RunMode
from prod_system.defs.metadata import performance_metadata, preview, usd
from prod_system.defs.reconciliation import reconciliation_key
from prod_system.defs.resources import (
    BrokerResource,
    LogDirResource,
    MarketDataResource,
    PublishingResource,
    SystemResource,
)
from prod_system.errors import MarketDataError, NoInvestorDataError, NotebookError
from prod_system.naming import (
    HISTORICAL,
    INVESTOR_GROUP,
    INVESTOR_HISTORY_JOB,
    INVESTOR_NOTEBOOK,
    INVESTOR_NOTEBOOK_PATH,
    INVESTOR_PREFIX,
    REPORTS_GROUP,
    SCHEDULED_TAG,
    group_name,
    historical_path,
    investor_job_name,
    investor_notebook_object,
    investor_object,
    investor_performance_object,
    investor_plot_path,
    observer_job_name,
    report_object,
    report_path,
    schedule_name,
)
from prod_system.runs.historical import historical_pnl, history_window

SIMULATION = RunMode.SIMULATION.value  # the run mode of the historical simulation
EVERY_5_MINUTES = "*/5 * * * *"
DAILY = "15 0 * * *"  # 00:15 UTC: the day's last bars are in


def historical_key(model: str) -> AssetKey:
    return AssetKey(historical_path(model))


def investor_key(window: str) -> AssetKey:
    return AssetKey(investor_plot_path(window))


def report_key(model: str) -> AssetKey:
    return AssetKey(report_path(model))


NOTEBOOK_KEY = AssetKey(INVESTOR_NOTEBOOK_PATH)


def build_investor_assets(model: str) -> list[AssetsDefinition]:
    """The historical simulation of the investor model, the four cumulative-PnL plots and the notebook."""
    assets = [_historical(model)]
    for window, since in HISTORICAL_WINDOWS.items():
        assets.append(_historical_plot(model, window, since))
    for window in LIVE_WINDOWS:
        assets.append(_live_plot(model, window))
    assets.append(_investor_notebook(model))
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
    context: AssetExecutionContext, s3: S3Resource, publishing: PublishingResource, window: str, view: InvestorWindow
) -> MaterializeResult:
    """Upload the window's cumulative PnL plot and its performance figures."""
    png = view.plot()
    uploaded = publishing.upload(s3, investor_object(window), png, "image/png")
    context.log.info(f"published {uploaded['s3_uri']} ({uploaded['bytes']:,} bytes)")
    figures = view.performance()
    figures_uploaded = publishing.upload(
        s3, investor_performance_object(window), view.markdown(figures).encode(), "text/markdown; charset=utf-8"
    )
    cumulative = view.cumulative
    return MaterializeResult(
        metadata={
            **uploaded,
            "s3_uri": MetadataValue.url(uploaded["s3_uri"]),
            "cumulative_pnl_usd": usd(cumulative.iloc[-1]),
            "first_bar_end": str(cumulative.index[0]),
            "last_bar_end": str(cumulative.index[-1]),
            "plot": preview(png, view.title),
            "performance_s3_uri": MetadataValue.url(figures_uploaded["s3_uri"]),
            **performance_metadata(figures.to_dict()),
        }
    )


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
        try:
            view = investor.history_since(log_dir.root, model, since)
        except NoInvestorDataError as error:
            raise Failure(str(error)) from None
        return _publish_plot(context, s3, publishing, window, view)

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
        try:
            view = investor.investor_window(log_dir.root, model, window, publishing.investor_run_mode)
        except NoInvestorDataError as error:
            raise Failure(str(error)) from None
        return _publish_plot(context, s3, publishing, window, view)

    return live_plot


def _investor_notebook(model: str):
    @asset(
        key=NOTEBOOK_KEY,
        description=f"The notebook {INVESTOR_NOTEBOOK} of {model} (its historical simulation and the four "
        "cumulative PnL windows, plots and performance figures), executed after the plots into the historical "
        f"simulation's folder and published as HTML to s3://{{bucket}}/{investor_notebook_object()}. "
        "Refreshed daily.",
        deps=[historical_key(model), *(investor_key(window) for window in WINDOWS)],
        group_name=INVESTOR_GROUP,
        kinds={"jupyter", "html", "s3"},
        owners=["team:investor-relations"],
        tags={"stage": "publishing"},
    )
    def investor_notebook(
        context: AssetExecutionContext, s3: S3Resource, publishing: PublishingResource, log_dir: LogDirResource
    ) -> MaterializeResult:
        stamp = compact(pd.Timestamp.now(tz="UTC"))
        directory = investor.notebook_directory(log_dir.root, model, stamp)
        parameters = investor.notebook_parameters(log_dir.root, model, publishing.investor_run_mode)
        try:
            executed = notebooks.execute(INVESTOR_NOTEBOOK, directory, parameters, show_input=publishing.show_input)
        except NotebookError as error:
            raise Failure(str(error)) from None
        html = executed.html.read_bytes()
        uploaded = publishing.upload(s3, investor_notebook_object(), html, "text/html; charset=utf-8")
        context.log.info(f"published {uploaded['s3_uri']} from {executed.html} ({executed.seconds:.1f} s)")
        return MaterializeResult(
            metadata={
                **uploaded,
                "s3_uri": MetadataValue.url(uploaded["s3_uri"]),
                "directory": MetadataValue.path(str(directory)),  # the operator's: the HTML shows no path
                "notebook": MetadataValue.path(str(executed.notebook)),
                "html": MetadataValue.path(str(executed.html)),
                "seconds": executed.seconds,
            }
        )

    return investor_notebook


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
    """The investor plots' jobs and schedules: the historical simulation, its plots and the notebook daily,
    the live plots as in the seed."""
    history = _job(
        INVESTOR_HISTORY_JOB,
        AssetSelection.assets(historical_key(model), *[investor_key(w) for w in HISTORICAL_WINDOWS], NOTEBOOK_KEY),
        f"The historical simulation of {model}, its since-2019 and since-2022 cumulative PnL plots and the "
        f"investors' notebook {INVESTOR_NOTEBOOK}.",
    )
    daily = schedule(
        name=schedule_name(history.name),
        job=history,
        cron_schedule=DAILY,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.STOPPED,
        description="Daily: the history, the long-run plots and the investors' notebook.",
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
