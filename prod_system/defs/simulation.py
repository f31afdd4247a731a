"""The simulation asset graph of one model: market data -> DAG node outputs -> predictions ->
target positions -> orders -> fills -> portfolio, partitioned by session day.

Why days, not bars: one Dagster event costs ~19 ms on SQLite and one run ~1 s, so per-bar
partitions make a simulated day take minutes. A day partition holds its 288 five-minute bars (every
row of every table carries its ``bar_end``), a simulation is a single-run backfill over a range of
days, and the portfolio depends on its own previous day, whose end state it starts from. Live runs
use per-bar partitions (same core functions, one bar per run).

The chain of days: a run's first day starts from initial cash only if it is the first day of a
simulation window, as the run says (the tag ``prod_system/window_start``, or a ranged run's first
day: ``dagster/asset_partition_range_start``); any other day continues from the end state of the
day before, and a run whose previous day is not materialized fails before it writes anything, with
one line naming that day. So a backfill gives the tables of one ranged run over the window, or
refuses; never a day silently restarted from cash.
"""

import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetOut,
    AssetsDefinition,
    AssetSelection,
    BackfillPolicy,
    BetaWarning,
    DailyPartitionsDefinition,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    Output,
    TimeWindowPartitionMapping,
    asset,
    define_asset_job,
    in_process_executor,
    multi_asset,
)

from prod_system.analysis.report import PNL_REPORT_PNG
from prod_system.common import progress
from prod_system.common.timeutil import bar_ends
from prod_system.config import RunMode, SystemConfig
from prod_system.data.instruments import LOG_DIR_FILE, resolve_instruments
from prod_system.defs.metadata import performance_metadata, preview, usd
from prod_system.defs.resources import (
    BrokerResource,
    ClockResource,
    LogDirResource,
    MarketDataResource,
    SystemResource,
)
from prod_system.defs.resources.io_manager import LOG_DIR_TABLES
from prod_system.log_dir import TABLES
from prod_system.models.dag import Dag, load_model
from prod_system.naming import (
    MODEL_TAG,
    RANGE_START_TAG,
    RUN_MODE_TAG,
    TRIGGER_TAG,
    WINDOW_START_TAG,
    group_name,
    simulation_job_name,
    simulation_op_name,
    simulation_path,
)
from prod_system.runs.finish import RunSummary, finish_run
from prod_system.runs.stages import (
    data_window,
    guard_predictions,
    logger,
    predictions_table,
    run_model,
    run_trading,
    write_stage_tables,
)
from prod_system.trading.portfolio import PortfolioState
from prod_system.trading.positions import run_sizing

# single-run backfills and a self-dependency on a not-yet-existing first partition are documented
# Dagster features still marked beta; we rely on them deliberately.
warnings.filterwarnings("ignore", category=BetaWarning)

RUN_MODE = RunMode.SIMULATION.value
SESSION_DAYS = DailyPartitionsDefinition(start_date="2019-01-01")
PREVIOUS_DAY = TimeWindowPartitionMapping(start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True)
RESOURCE_KEYS = {"system", "market_data", "clock", "broker", "log_dir"}
PORTFOLIO_TABLES = tuple(name for name in TABLES if name.startswith("portfolio/"))


def simulation_key(model: str, name: str) -> AssetKey:
    """A simulation asset of ``model``: [model, simulation, name]."""
    return AssetKey(simulation_path(model, name))


def _window(context: AssetExecutionContext) -> tuple[pd.Timestamp, pd.Timestamp]:
    window = context.partition_time_window
    return pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")


def _day(timestamp: pd.Timestamp) -> str:
    return timestamp.strftime("%Y-%m-%d")


def continues_from(context: AssetExecutionContext, model: str) -> str | None:
    """The day whose end state the portfolio of this run's first day continues from; None when that
    day is the first of a simulation window (it starts from initial cash), as the run's tags say."""
    first = _window(context)[0]
    tags = context.run.tags
    tag = WINDOW_START_TAG if tags.get(WINDOW_START_TAG) else RANGE_START_TAG
    marked = tags.get(tag)
    if marked is None:
        return _day(first - pd.Timedelta(days=1))
    try:
        window_start = pd.Timestamp(SESSION_DAYS.time_window_for_partition_key(marked).start).tz_convert("UTC")
    except ValueError:
        raise Failure(f"run tag {tag}={marked!r}: expected a session day such as 2023-07-21") from None
    if first < window_start:
        raise Failure(
            f"{model} simulation of {_day(first)}: the day is before the first day {marked} of its "
            f"simulation window (run tag {tag}); run the window from {marked}"
        )
    return None if first == window_start else _day(first - pd.Timedelta(days=1))


def missing_previous_day(model: str, first: pd.Timestamp, previous: str) -> Failure:
    """The one-line failure of a day whose previous day's portfolio is not there to continue from."""
    day = _day(first)
    return Failure(
        f"{model} simulation of {day}: the portfolio of the previous day {previous} is not materialized, "
        f"and {day} is not the first day of a simulation window: materialize {previous} first, or start "
        f"the window at {day} with the run tag {WINDOW_START_TAG}={day} (a ranged run starts its window "
        "at its first day)"
    )


class _Run:
    """What every step of a run needs: its config, model, bars, log dir, clock and broker."""

    def __init__(self, context: AssetExecutionContext, model: str):
        start, end = _window(context)
        trigger = context.run.tags.get(TRIGGER_TAG, "manual")
        resources = context.resources
        self.market_data: MarketDataResource = resources.market_data
        self.clock: ClockResource = resources.clock
        self.broker: BrokerResource = resources.broker
        log_dir: LogDirResource = resources.log_dir
        system: SystemResource = resources.system
        self.config: SystemConfig
        self.config, self.instruments = resolve_instruments(
            system.config_for(model, RUN_MODE, start, end, trigger, self.market_data, self.broker, log_dir)
        )
        self.dag: Dag = load_model(self.config.model, self.config.bar_delta, self.config.model_params)
        self.bars = bar_ends(start, end, self.config.bar_delta)
        self.log_dir = log_dir.for_config(self.config)
        self.context = context

    def store(self):
        return self.market_data.candle_store(self.config.universe, data_window(self.config, self.dag))

    def progress(self, stage: str, done: int, total: int) -> None:
        progress.report(stage, done, total)
        if done == total:  # each Dagster log line is a stored event (~2-10 ms on SQLite): one per stage
            self.context.log.info(f"{stage}: {done}/{total} bars")

    def write(self, tables: dict[str, pd.DataFrame]) -> None:
        write_stage_tables(self.log_dir, tables, self.bars[0])

    def where_stored(self, *tables: str) -> dict:
        """Output metadata naming the log dir and which of its tables the output is (a one-table output
        names one): the IO manager keeps a pointer to them instead of a second copy."""
        return {"log_dir": MetadataValue.path(str(self.log_dir.path)), LOG_DIR_TABLES: ", ".join(tables)}


def build_simulation_assets(model: str) -> list[AssetsDefinition]:
    """The simulation assets of ``model`` (a built-in name or an import path), keyed [model, simulation, ...]."""
    return [_market_data_asset(model), _model_asset(model), _positions_asset(model), _trading_asset(model)]


def simulation_definitions(models: list[str]) -> Definitions:
    """Per model, its simulation assets and the job that materializes them over a range of session days."""
    return Definitions(
        assets=[built for model in models for built in build_simulation_assets(model)],
        jobs=[_simulation_job(model) for model in models],
    )


def _simulation_job(model: str):
    return define_asset_job(
        simulation_job_name(model),
        selection=AssetSelection.groups(group_name(model)),
        # the steps form a chain: one process avoids 7-18 s of subprocess start-up per run
        executor_def=in_process_executor,
        description=f"Simulate {model}: materialize its simulation assets over a range of session days "
        "(one run; tags dagster/asset_partition_range_start and _end).",
        run_tags={MODEL_TAG: model, RUN_MODE_TAG: RUN_MODE},
    )


def _common(model: str) -> dict:
    """What every simulation asset of ``model`` shares: day partitions, single-run backfills, its group."""
    return {
        "partitions_def": SESSION_DAYS,
        "backfill_policy": BackfillPolicy.single_run(),
        "group_name": group_name(model),
        "required_resource_keys": RESOURCE_KEYS,
    }


def _out(model: str, name: str, owner: str, stage: str, description: str) -> AssetOut:
    return AssetOut(
        key=simulation_key(model, name),
        description=description,
        kinds={"pandas", "parquet"},
        owners=[owner],
        tags={"stage": stage},
    )


def _market_data_asset(model: str) -> AssetsDefinition:
    @asset(
        key=simulation_key(model, "market_data"),
        description=f"1-minute candles of the session, as the {model} system sees them through the wall clock "
        "(knowledge time <= bar end + delay). The candles stay in the market-data source (snapshot or "
        "database); the model reads them through the one visibility rule, bar by bar. Starting a full "
        "simulation of a window resets its log dir.",
        kinds={"pandas", "parquet"},
        owners=["team:trading"],
        tags={"stage": "market_data"},
        **_common(model),
    )
    def market_data(
        context: AssetExecutionContext,
    ) -> MaterializeResult:
        return _read_market_data(context, model)

    return market_data


def _read_market_data(context: AssetExecutionContext, model: str) -> MaterializeResult:
    """Check the chain of days, read the session's candles and prepare the log dir."""
    run = _Run(context, model)
    if _trades(context, model):  # the chain of days, checked before anything is written
        previous = continues_from(context, model)
        portfolio = simulation_key(model, "portfolio")
        if previous is not None and previous not in context.instance.get_materialized_partitions(portfolio):
            raise missing_previous_day(model, run.config.start, previous)
    store = run.store()  # unreadable market data fails here, before the log dir is touched
    run.log_dir.prepare(run.config, overwrite=True)
    run.instruments.write(run.log_dir.path / LOG_DIR_FILE)  # the rules the run trades under
    seen = store.visible(run.bars[-1] + run.config.market_data.delay, run.config.start)
    close = seen.field("close")
    missing = int((~np.isfinite(close)).sum())
    with run.log_dir.capture_log(logger):
        logger.info(
            "dagster run %s: %d candles (%d missing) for %s to %s",
            context.run.run_id,
            close.size - missing,
            missing,
            run.config.start,
            run.config.end,
        )
    return MaterializeResult(metadata=_candles_metadata(run, close, missing))


def _trades(context: AssetExecutionContext, model: str) -> bool:
    """Whether the run goes on to the portfolio (the trading step), which continues the chain of days."""
    selected, steps = context.run.asset_selection, context.run.step_keys_to_execute
    return (not selected or simulation_key(model, "portfolio") in selected) and (
        steps is None or simulation_op_name(model, "trading") in steps
    )


def _candles_metadata(run: _Run, close: np.ndarray, missing: int) -> dict:
    return {
        "candles": int(close.size - missing),
        "missing_candles": missing,
        "missing_by_asset": MetadataValue.json(
            {a: int(n) for a, n in zip(run.config.universe, (~np.isfinite(close)).sum(axis=0), strict=True) if n}
        ),
        "assets": ", ".join(run.config.universe),
        "source": run.config.market_data.source,
        "log_dir": MetadataValue.path(str(run.log_dir.path)),
    }


def _model_asset(model: str) -> AssetsDefinition:
    market_data, node_outputs = simulation_key(model, "market_data"), simulation_key(model, "dag_node_outputs")

    @multi_asset(
        outs={
            "dag_node_outputs": _out(
                model,
                "dag_node_outputs",
                "team:research",
                "model",
                f"Every node of the {model} DAG, per bar and asset, computed bar by bar on the "
                "candles visible at the bar's decision time (streaming). Profiling in dag/profiling.",
            ),
            "predictions": _out(
                model,
                "predictions",
                "team:research",
                "model",
                "Prediction (expected next-bar log return), volatility and price per bar and asset.",
            ),
        },
        deps=[market_data],
        internal_asset_deps={"dag_node_outputs": {market_data}, "predictions": {node_outputs}},
        name=simulation_op_name(model, "model"),
        **_common(model),
    )
    def model_outputs(
        context: AssetExecutionContext,
    ):
        yield from _run_model(context, model)

    return model_outputs


def _run_model(context: AssetExecutionContext, model: str):
    """Every DAG node bar by bar, then the guarded predictions: the outputs dag_node_outputs and predictions."""
    run = _Run(context, model)
    began = time.perf_counter()
    with run.log_dir.capture_log(logger):
        outputs = run_model(run.config, run.dag, run.store(), run.bars, run.progress, run.clock.for_stage)
        predictions, quality = guard_predictions(run.config, run.store(), predictions_table(run.dag, outputs), run.bars)
        run.write(
            {"dag/node_outputs": outputs.node_outputs, "dag/profiling": outputs.profiling, "data_quality": quality}
        )
    per_bar = outputs.profiling.groupby("bar_end")["seconds"].sum()
    yield Output(
        outputs.node_outputs,
        output_name="dag_node_outputs",
        metadata={
            "nodes": ", ".join(run.dag.order),
            "bars": len(run.bars),
            "seconds_per_bar_median": float(per_bar.median()),
            "seconds_per_bar_p95": float(per_bar.quantile(0.95)),
            "peak_memory_bytes_max": float(outputs.profiling["peak_memory_bytes"].max()),
            "seconds": time.perf_counter() - began,
            **run.where_stored("dag/node_outputs"),
        },
    )
    last = predictions[predictions["bar_end"] == predictions["bar_end"].max()]
    yield Output(
        predictions,
        output_name="predictions",
        metadata={
            "bars": len(run.bars),
            "coverage": float(predictions["prediction"].notna().mean()),
            "data_issues": len(quality),
            "data_issues_by_kind": MetadataValue.json(quality["issue"].value_counts().to_dict()),
            "last_bar": MetadataValue.md(
                last[["asset", "prediction", "volatility", "price"]].to_markdown(index=False, floatfmt=".6g")
            ),
        },
    )


def _positions_asset(model: str) -> AssetsDefinition:
    @asset(
        key=simulation_key(model, "target_positions"),
        description="Target holdings per bar and asset: predictions sized cross-sectionally to the target gross "
        "market value, capped per asset, rounded to the lot size, min notional applied.",
        ins={"predictions": AssetIn(simulation_key(model, "predictions"))},
        kinds={"pandas", "parquet"},
        owners=["team:trading"],
        tags={"stage": "positions"},
        **_common(model),
    )
    def target_positions(
        context: AssetExecutionContext,
        predictions: pd.DataFrame,
    ):
        run = _Run(context, model)
        targets = run_sizing(run.config, predictions, run.bars)
        run.write({"target_positions": targets})
        gmv = (targets["target_shares"].abs() * targets["price"]).groupby(targets["bar_end"]).sum()
        metadata = {"bars": len(run.bars), "target_gmv_mean": usd(gmv.mean()), **run.where_stored("target_positions")}
        return Output(targets, metadata=metadata)

    return target_positions


PORTFOLIO_DESCRIPTION = (
    "Holdings and executed trades (shares, notional), cash and per-bar "
    "statistics (pnl, volumes, gmv, nmv, net wealth, leverage). Each day starts from the previous "
    f"day's end state; the first day of a simulation window (run tag {WINDOW_START_TAG}, or a "
    "ranged run's first day) from initial cash."
)


def _trading_asset(model: str) -> AssetsDefinition:
    def key(name: str) -> AssetKey:
        return simulation_key(model, name)

    @multi_asset(
        outs={
            "orders": _out(
                model,
                "orders",
                "team:trading",
                "orders",
                "Orders per bar: target minus holdings, with deterministic client order ids from (run, bar, asset).",
            ),
            "fills": _out(
                model,
                "fills",
                "team:trading",
                "fills",
                "Fills from the mocked broker: 100% of each order at the TWAP of the "
                "1-minute closes of the bar after the decision.",
            ),
            "portfolio": _out(model, "portfolio", "team:trading", "portfolio", PORTFOLIO_DESCRIPTION),
        },
        ins={
            "target_positions": AssetIn(key("target_positions")),
            "previous_portfolio": AssetIn(
                key("portfolio"), partition_mapping=PREVIOUS_DAY, metadata={"optional": True}
            ),
        },
        internal_asset_deps={
            "orders": {key("target_positions")},
            "fills": {key("orders")},
            "portfolio": {key("fills"), key("portfolio")},
        },
        name=simulation_op_name(model, "trading"),
        **_common(model),
    )
    def trading(
        context: AssetExecutionContext,
        target_positions: pd.DataFrame,
        previous_portfolio: dict | None,
    ):
        yield from _trade(context, model, target_positions, previous_portfolio)

    return trading


def _trade(context: AssetExecutionContext, model: str, target_positions: pd.DataFrame, previous_portfolio):
    """Orders, fills and portfolio of the run's days, from the previous day's end state or initial cash."""
    run = _Run(context, model)
    state, previous = _starting_state(context, model, run, previous_portfolio)
    began = time.perf_counter()
    with run.log_dir.capture_log(logger):
        if state is None:
            logger.info(
                "%s is the first day of the simulation window: starting with %.2f cash",
                _day(run.config.start),
                run.config.portfolio.initial_cash,
            )
        else:
            logger.info("continuing from the portfolio at the end of %s", previous)
        result = run_trading(
            run.config,
            run.store(),
            target_positions,
            run.bars,
            state,
            run.progress,
            run.clock.for_stage,
            run.broker.connect(run.config.costs),
        )
        run.write(result.tables)
        summary = finish_run(
            run.log_dir,
            run.config,
            result.tables["portfolio/statistics"],
            began,
            engine="dagster",
            dagster_run_id=context.run.run_id,
        )
        png = run.log_dir.path / PNL_REPORT_PNG
    orders, fills = result.tables["orders"], result.tables["fills"]
    portfolio = {name: result.tables[name] for name in PORTFOLIO_TABLES}
    portfolio["open_orders"] = pd.DataFrame(result.state.open_orders, columns=orders.columns)
    yield Output(orders, output_name="orders", metadata={**_orders_metadata(orders), **run.where_stored("orders")})
    yield Output(fills, output_name="fills", metadata={**_fills_metadata(fills), **run.where_stored("fills")})
    _add_day_metadata(context, model, result.tables["portfolio/statistics"])
    metadata = {**_portfolio_metadata(summary, state, png), **run.where_stored(*PORTFOLIO_TABLES)}
    yield Output(portfolio, output_name="portfolio", metadata=metadata)


def _starting_state(
    context: AssetExecutionContext, model: str, run: _Run, previous_portfolio: dict | None
) -> tuple[PortfolioState | None, str | None]:
    """The portfolio the run starts from (None: initial cash) and the day it continues from; a day
    whose previous day is not there to continue from fails."""
    previous = continues_from(context, model)
    state = None if previous is None else _state_at(previous_portfolio, run.config.start, run.config.universe)
    if previous is not None and state is None:
        raise missing_previous_day(model, run.config.start, previous)
    return state, previous


def _orders_metadata(orders: pd.DataFrame) -> dict:
    return {
        "orders": len(orders),
        "buys": int((orders["side"] == "buy").sum()),
        "sells": int((orders["side"] == "sell").sum()),
        "notional_estimate": usd(orders["notional_estimate"].abs().sum()) if len(orders) else 0.0,
    }


def _fills_metadata(fills: pd.DataFrame) -> dict:
    return {
        "fills": len(fills),
        "gross_notional": usd(fills["notional"].abs().sum()) if len(fills) else 0.0,
    }


def _add_day_metadata(context: AssetExecutionContext, model: str, stats: pd.DataFrame) -> None:
    """Each session day's PnL, volume and end wealth, on the portfolio's partition of that day."""
    for partition in context.partition_keys:
        start = pd.Timestamp(partition, tz="UTC")
        day = stats[(stats["bar_end"] > start) & (stats["bar_end"] <= start + pd.Timedelta(days=1))]
        context.add_asset_metadata(
            {
                "day_pnl": usd(day["pnl"].sum()),
                "day_gross_volume": usd(day["gross_volume"].sum()),
                "day_end_net_wealth": usd(day["net_wealth"].iloc[-1]) if len(day) else float("nan"),
            },
            asset_key=simulation_key(model, "portfolio"),
            partition_key=partition,
        )


def _portfolio_metadata(summary: RunSummary, state: PortfolioState | None, png: Path) -> dict:
    return {
        "run_pnl": usd(summary.pnl),
        "run_gross_volume": usd(summary.gross_volume),
        "run_turnover": round(summary.turnover, 2),
        "net_wealth": usd(summary.final_net_wealth),
        "run_bars": summary.bars,
        "started_from": "previous day" if state is not None else "initial cash",
        "log_dir": MetadataValue.path(summary.log_dir),
        "pnl_report": MetadataValue.path(png),
        "pnl_plot": preview(Path(png).read_bytes(), "cumulative PnL and GMV"),
        **performance_metadata(summary.performance),
    }


def _state_at(previous: dict | None, start: pd.Timestamp, assets: list[str]) -> PortfolioState | None:
    """The portfolio at the end of the previous day, from that day's stored tables."""
    if not previous or "portfolio/statistics" not in previous:
        return None
    stats = previous["portfolio/statistics"]
    row = stats[stats["bar_end"] == start]
    if row.empty:
        return None
    shares = previous["portfolio/holdings_shares"].query("bar_end == @start").set_index("asset")["shares"]
    notional = previous["portfolio/holdings_notional"].query("bar_end == @start").set_index("asset")["notional"]
    open_orders = previous.get("open_orders", pd.DataFrame())
    open_orders = open_orders[open_orders["bar_end"] == start] if len(open_orders) else open_orders
    return PortfolioState(
        shares=shares.reindex(assets, fill_value=0.0),
        notional=notional.reindex(assets, fill_value=0.0),
        cash=float(row["cash"].iloc[0]),
        open_orders=open_orders.to_dict("records"),
        bar_end=start,
    )
