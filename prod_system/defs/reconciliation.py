"""Reconciliation assets: production vs research for each model and run mode (thin: calls the observer).

- ``[model, simulation, reconciliation]``: per session day, downstream of the simulated portfolio;
  it reconciles the run that produced the day's portfolio and writes its report next to the log dir.
- ``[model, paper_trading|prod, reconciliation]``: the latest live session so far, refreshed every
  5 minutes by a schedule while a session runs.

An asset check on each says whether production matches research; the report is the product either way.
The runs are found on disk under the model's folder name (``find_runs`` takes the model as configured).
"""

import json
from pathlib import Path

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from prod_system.analysis.observer import ObserverReport, find_runs, observe
from prod_system.common.timeutil import parse_duration
from prod_system.config import RunMode, load_config
from prod_system.data.market_data import CandleStore
from prod_system.defs.live import live_bar_key
from prod_system.defs.metadata import performance_metadata, preview, usd
from prod_system.defs.resources import LogDirResource, MarketDataResource
from prod_system.defs.simulation import SESSION_DAYS, simulation_key
from prod_system.errors import NotebookError, ReconciliationError
from prod_system.models.dag import load_model
from prod_system.naming import group_name, reconciliation_path
from prod_system.runs.stages import data_window

SIMULATION = RunMode.SIMULATION.value
SUMMARY_FILE = "summary.json"


def reconciliation_key(model: str, run_mode: str) -> AssetKey:
    return AssetKey(reconciliation_path(model, run_mode))


def report_metadata(report: ObserverReport) -> dict:
    s = report.summary
    divergence = s["first_divergence"]
    return {
        "reconciled": bool(s["reconciled"]),
        "verdict": s["verdict"],
        "judged_gap": MetadataValue.float(float(s["judged"])),
        "bound": MetadataValue.float(float(s["bound"])),
        "gap_dominated_by": s["dominant"] or "none",
        "fees_prod": usd(s["costs"]["fees_prod"]),
        "funding_prod": usd(s["costs"]["funding_prod"]),
        "funding_source": s["costs"]["funding_source"],
        "pnl_correlation": MetadataValue.float(float(s["pnl_correlation"])),
        "cumulative_pnl_prod": s["cumulative_pnl_prod"],
        "cumulative_pnl_research": s["cumulative_pnl_research"],
        "max_abs_pnl_diff": s["max_abs_pnl_diff"],
        "gross_volume_prod": s["gross_volume_prod"],
        "first_divergence": MetadataValue.json(divergence or {}),
        "bars": s["bars"],
        "last_bar_end": s["last_bar_end"],
        "dag_ms_per_bar_median": s["timing"]["dag_ms_per_bar"]["median"],
        "order_delay_seconds_median": s["timing"]["order_delay_seconds"]["median"],
        "report": MetadataValue.path(str(report.path)),  # the notebook's HTML (or summary.json without it)
        "log_dir": MetadataValue.path(s["log_dir"]),
        "cumulative_pnl": preview(report.plot.read_bytes(), "cumulative PnL, production vs research"),
        **performance_metadata(s["performance"]),
        "exchange_statement": s["exchange_statement"]["verdict"],  # prod: portfolio vs the exchange's statement
    }


def _observe(
    context: AssetExecutionContext, log_dir: Path, start=None, end=None, store: CandleStore | None = None
) -> ObserverReport:
    try:
        report = observe(log_dir, start, end, store=store)
    except (ReconciliationError, NotebookError) as error:  # a notebook's: its cell and error, in one line
        raise Failure(str(error)) from None
    context.log.info(report.summary["verdict"])
    return report


def _traded_candles(context: AssetExecutionContext, log_dir: Path) -> CandleStore | None:
    """The candles the simulation traded on, from the market-data resource: loaded once per process,
    so a run of the whole job in one process reads the market data once, not again for its report
    (a second read cost ~1 s for a day of 300 assets). None when the run read another source."""
    market_data: MarketDataResource = context.resources.market_data
    config = load_config(log_dir / "system_config.yaml")
    resource_delay = parse_duration(market_data.knowledge_delay)
    if (config.market_data.source, config.market_data.delay) != (market_data.source, resource_delay):
        return None
    dag = load_model(config.model, config.bar_delta, config.model_params)
    return market_data.candle_store(config.universe, data_window(config, dag))


def _latest_summary(context: AssetCheckExecutionContext, report_key: AssetKey) -> dict | None:
    """The summary.json of the report the asset's latest materialization wrote (None: no report yet)."""
    event = context.instance.get_latest_materialization_event(report_key)
    materialization = event.asset_materialization if event else None
    report = materialization.metadata.get("report") if materialization else None
    if report is None:
        return None
    return json.loads((Path(report.value).parent / SUMMARY_FILE).read_text())


def _check(report_key: AssetKey):
    """Production matches research net of costs: what the gap's attribution does not explain (with the
    mocked broker, all of it, and no bar and asset beyond the tolerances) within 0.1% of the run's gross
    PnL, at least 1 USDT."""

    @asset_check(asset=report_key, name="matches_research", blocking=False, description=_check.__doc__)
    def matches_research(context: AssetCheckExecutionContext) -> AssetCheckResult:
        summary = _latest_summary(context, report_key)
        if summary is None:
            return AssetCheckResult(passed=False, metadata={"error": "no reconciliation report yet"})
        passed = bool(summary["reconciled"])
        return AssetCheckResult(
            passed=passed,
            severity=AssetCheckSeverity.ERROR,
            description=summary["verdict"],
            metadata={
                "pnl_correlation": float(summary["pnl_correlation"] or float("nan")),
                "first_divergence": MetadataValue.json(summary["first_divergence"] or {}),
                "judged_gap": float(summary["judged"]),
                "bound": float(summary["bound"]),
            },
        )

    return matches_research


def _statement_check(report_key: AssetKey):
    """A prod session's portfolio agrees with the exchange's own statement (its income history and
    wallet): realized PnL, fees (also against the config's fee rate), funding and the wallet's change, to
    the cent."""

    @asset_check(asset=report_key, name="matches_exchange", blocking=False, description=_statement_check.__doc__)
    def matches_exchange(context: AssetCheckExecutionContext) -> AssetCheckResult:
        summary = _latest_summary(context, report_key)
        if summary is None:
            return AssetCheckResult(passed=False, metadata={"error": "no reconciliation report yet"})
        statement = summary["exchange_statement"]
        return AssetCheckResult(
            passed=bool(statement.get("agrees", False)),
            severity=AssetCheckSeverity.ERROR,
            description=statement["verdict"],
            metadata={"first_divergence": MetadataValue.json(statement.get("first_divergence") or {})},
        )

    return matches_exchange


def reconciliation_definitions(models: list[str]) -> Definitions:
    """The reconciliation assets of every model in every run mode, each with its check."""
    assets = []
    for model in models:
        assets.append(_simulation_reconciliation(model))
        assets.extend(_live_reconciliation(model, mode) for mode in RunMode.live())
    checks = [_check(asset.key) for asset in assets]
    checks += [_statement_check(reconciliation_key(model, RunMode.PROD.value)) for model in models]
    return Definitions(assets=assets, asset_checks=checks)


def _simulation_reconciliation(model: str) -> AssetsDefinition:
    """The simulation's reconciliation asset: part of the model's simulation group."""

    @asset(
        key=reconciliation_key(model, SIMULATION),
        description=f"{model} simulation vs its research portfolio, per session day: per-bar PnL, holdings and "
        "targets side by side, execution time per DAG node and bar, orders' delay; the executed observer notebook "
        "(.ipynb and its HTML, the report) and summary.json under "
        "{start}.{end}/pnl_realtime_observer_notebook/{run_timestamp}/.",
        deps=[simulation_key(model, name) for name in ("portfolio", "target_positions", "dag_node_outputs")],
        partitions_def=SESSION_DAYS,
        backfill_policy=BackfillPolicy.single_run(),
        group_name=group_name(model),
        kinds={"html", "matplotlib"},
        owners=["team:research"],
        tags={"stage": "reconciliation"},
        required_resource_keys={"log_dir", "market_data"},
    )
    def simulation_reconciliation(context: AssetExecutionContext) -> MaterializeResult:
        window = context.partition_time_window
        start, end = pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")
        log_root: LogDirResource = context.resources.log_dir
        runs = [
            run
            for run in find_runs(log_root.root, model, SIMULATION, start=start, end=end)
            if run.start <= start and run.end >= end and (run.log_dir / "run.json").exists()
        ]
        if not runs:
            raise Failure(
                f"no finished simulation of {model} under {log_root.root} covers {start} to {end}: "
                "materialize its portfolio for these days first"
            )
        # the run that last wrote a portfolio for these days is the one the asset graph holds
        latest = max(runs, key=lambda run: (run.log_dir / "run.json").stat().st_mtime)
        report = _observe(context, latest.log_dir, start, end, _traded_candles(context, latest.log_dir))
        return MaterializeResult(metadata=report_metadata(report))

    return simulation_reconciliation


def _live_reconciliation(model: str, mode: str) -> AssetsDefinition:
    @asset(
        key=reconciliation_key(model, mode),
        deps=[live_bar_key(model, mode)],
        description=f"The latest {mode} session of {model} vs its research portfolio, up to its last bar "
        "(refreshed every 5 minutes while a session runs): the same report as the simulation's.",
        group_name=group_name(model, mode),
        kinds={"html", "matplotlib"},
        owners=["team:research"],
        tags={"stage": "reconciliation"},
        required_resource_keys={"log_dir"},
    )
    def live_reconciliation(context: AssetExecutionContext) -> MaterializeResult:
        log_root: LogDirResource = context.resources.log_dir
        runs = find_runs(log_root.root, model, mode)
        if not runs:
            raise Failure(f"no {mode} session of {model} under {log_root.root} yet")
        report = _observe(context, runs[-1].log_dir)
        return MaterializeResult(metadata=report_metadata(report))

    return live_reconciliation
