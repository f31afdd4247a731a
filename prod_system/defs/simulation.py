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

import re
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
    BackfillPolicy,
    BetaWarning,
    DailyPartitionsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    Output,
    TimeWindowPartitionMapping,
    asset,
    multi_asset,
)

from prod_system.analysis.report import PNL_REPORT_PNG
from prod_system.common import progress
from prod_system.common.timeutil import bar_ends
from prod_system.config import SystemConfig
from prod_system.defs.figures import usd
from prod_system.defs.previews import preview
from prod_system.defs.resources import (
    BrokerResource,
    ClockResource,
    LogDirResource,
    MarketDataResource,
    SystemResource,
)
from prod_system.log_dir import TABLES
from prod_system.models.dag import Dag, load_model
from prod_system.runs.finish import finish_run
from prod_system.runs.stages import (
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

RUN_MODE = "simulation"
TRIGGER_TAG = "prod_system/trigger"
WINDOW_START_TAG = "prod_system/window_start"  # value: the first session day of the simulation window
RANGE_START_TAG = "dagster/asset_partition_range_start"  # a ranged run's first day (Dagster's tag)
SESSION_DAYS = DailyPartitionsDefinition(start_date="2019-01-01")
PREVIOUS_DAY = TimeWindowPartitionMapping(start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True)
RESOURCE_KEYS = {"system", "market_data", "clock", "broker", "log_dir"}
PORTFOLIO_TABLES = tuple(name for name in TABLES if name.startswith("portfolio/"))


def model_slug(model: str) -> str:
    """A name Dagster accepts for a model: 'C1b', or 'mypkg_models_build_dag' for an import path."""
    return re.sub(r"[^A-Za-z0-9_]", "_", model)


def group_name(model: str, run_mode: str = RUN_MODE) -> str:
    return f"{model_slug(model)}_{run_mode}"


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
        self.config: SystemConfig = system.config_for(
            model, RUN_MODE, start, end, trigger, self.market_data, self.broker, log_dir
        )
        self.dag: Dag = load_model(self.config.model, self.config.bar_delta, self.config.model_params)
        self.bars = bar_ends(start, end, self.config.bar_delta)
        self.log_dir = log_dir.for_config(self.config)
        self.context = context

    def store(self):
        return self.market_data.candle_store(self.config.universe)

    def progress(self, stage: str, done: int, total: int) -> None:
        progress.report(stage, done, total)
        if done == total:  # each Dagster log line is a stored event (~2-10 ms on SQLite): one per stage
            self.context.log.info(f"{stage}: {done}/{total} bars")

    def write(self, tables: dict[str, pd.DataFrame]) -> None:
        write_stage_tables(self.log_dir, tables, self.bars[0])


def build_simulation_assets(model: str) -> list[AssetsDefinition]:
    """The simulation assets of ``model`` (a built-in name or an import path), keyed [model, simulation, ...]."""
    prefix = [model_slug(model), RUN_MODE]
    group = group_name(model)
    common = {
        "partitions_def": SESSION_DAYS,
        "backfill_policy": BackfillPolicy.single_run(),
        "group_name": group,
        "required_resource_keys": RESOURCE_KEYS,
    }

    def key(name: str) -> AssetKey:
        return AssetKey([*prefix, name])

    def out(name: str, owner: str, stage: str, description: str) -> AssetOut:
        return AssetOut(
            key=key(name), description=description, kinds={"pandas", "parquet"}, owners=[owner], tags={"stage": stage}
        )

    @asset(
        key=key("market_data"),
        description=f"1-minute candles of the session, as the {model} system sees them through the wall clock "
        "(knowledge time <= bar end + delay). The candles stay in the market-data source (snapshot or "
        "database); the model reads them through the one visibility rule, bar by bar. Starting a full "
        "simulation of a window resets its log dir.",
        kinds={"pandas", "parquet"},
        owners=["team:trading"],
        tags={"stage": "market_data"},
        **common,
    )
    def market_data(
        context: AssetExecutionContext,
    ) -> MaterializeResult:
        run = _Run(context, model)
        selected, steps = context.run.asset_selection, context.run.step_keys_to_execute
        trades = (not selected or key("portfolio") in selected) and (steps is None or f"{group}_trading" in steps)
        if trades:  # the chain of days, checked before anything is written
            previous = continues_from(context, model)
            if previous is not None and previous not in context.instance.get_materialized_partitions(key("portfolio")):
                raise missing_previous_day(model, run.config.start, previous)
        store = run.store()  # unreadable market data fails here, before the log dir is touched
        run.log_dir.prepare(run.config, overwrite=True)
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
        return MaterializeResult(
            metadata={
                "candles": int(close.size - missing),
                "missing_candles": missing,
                "missing_by_asset": MetadataValue.json(
                    {
                        a: int(n)
                        for a, n in zip(run.config.universe, (~np.isfinite(close)).sum(axis=0), strict=True)
                        if n
                    }
                ),
                "assets": ", ".join(run.config.universe),
                "source": run.config.market_data.source,
                "log_dir": MetadataValue.path(str(run.log_dir.path)),
            },
        )

    @multi_asset(
        outs={
            "dag_node_outputs": out(
                "dag_node_outputs",
                "team:research",
                "model",
                f"Every node of the {model} DAG, per bar and asset, computed bar by bar on the "
                "candles visible at the bar's decision time (streaming). Profiling in dag/profiling.",
            ),
            "predictions": out(
                "predictions",
                "team:research",
                "model",
                "Prediction (expected next-bar log return), volatility and price per bar and asset.",
            ),
        },
        deps=[key("market_data")],
        internal_asset_deps={
            "dag_node_outputs": {key("market_data")},
            "predictions": {key("dag_node_outputs")},
        },
        name=f"{group}_model",
        **common,
    )
    def model_outputs(
        context: AssetExecutionContext,
    ):
        run = _Run(context, model)
        began = time.perf_counter()
        with run.log_dir.capture_log(logger):
            outputs = run_model(run.config, run.dag, run.store(), run.bars, run.progress, run.clock.for_stage)
            predictions, quality = guard_predictions(
                run.config, run.store(), predictions_table(run.dag, outputs), run.bars
            )
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

    @asset(
        key=key("target_positions"),
        description="Target holdings per bar and asset: predictions sized cross-sectionally to the target gross "
        "market value, capped per asset, rounded to the lot size, min notional applied.",
        ins={"predictions": AssetIn(key("predictions"))},
        kinds={"pandas", "parquet"},
        owners=["team:trading"],
        tags={"stage": "positions"},
        **common,
    )
    def target_positions(
        context: AssetExecutionContext,
        predictions: pd.DataFrame,
    ):
        run = _Run(context, model)
        targets = run_sizing(run.config, predictions, run.bars)
        run.write({"target_positions": targets})
        gmv = (targets["target_shares"].abs() * targets["price"]).groupby(targets["bar_end"]).sum()
        return Output(targets, metadata={"bars": len(run.bars), "target_gmv_mean": usd(gmv.mean())})

    @multi_asset(
        outs={
            "orders": out(
                "orders",
                "team:trading",
                "orders",
                "Orders per bar: target minus holdings, with deterministic client order ids from (run, bar, asset).",
            ),
            "fills": out(
                "fills",
                "team:trading",
                "fills",
                "Fills from the mocked broker: 100% of each order at the TWAP of the "
                "1-minute closes of the bar after the decision.",
            ),
            "portfolio": out(
                "portfolio",
                "team:trading",
                "portfolio",
                "Holdings and executed trades (shares, notional), cash and per-bar "
                "statistics (pnl, volumes, gmv, nmv, net wealth, leverage). Each day starts from the previous "
                "day's end state; the first day of a simulation window (run tag prod_system/window_start, or a "
                "ranged run's first day) from initial cash.",
            ),
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
        name=f"{group}_trading",
        **common,
    )
    def trading(
        context: AssetExecutionContext,
        target_positions: pd.DataFrame,
        previous_portfolio: dict | None,
    ):
        run = _Run(context, model)
        previous = continues_from(context, model)
        state = None if previous is None else _state_at(previous_portfolio, run.config.start, run.config.universe)
        if previous is not None and state is None:
            raise missing_previous_day(model, run.config.start, previous)
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
                run.broker.connect,
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
        yield Output(
            orders,
            output_name="orders",
            metadata={
                "orders": len(orders),
                "buys": int((orders["side"] == "buy").sum()),
                "sells": int((orders["side"] == "sell").sum()),
                "notional_estimate": usd(orders["notional_estimate"].abs().sum()) if len(orders) else 0.0,
            },
        )
        yield Output(
            fills,
            output_name="fills",
            metadata={
                "fills": len(fills),
                "gross_notional": usd(fills["notional"].abs().sum()) if len(fills) else 0.0,
            },
        )
        stats = result.tables["portfolio/statistics"]
        for partition in context.partition_keys:
            start = pd.Timestamp(partition, tz="UTC")
            day = stats[(stats["bar_end"] > start) & (stats["bar_end"] <= start + pd.Timedelta(days=1))]
            context.add_asset_metadata(
                {
                    "day_pnl": usd(day["pnl"].sum()),
                    "day_gross_volume": usd(day["gross_volume"].sum()),
                    "day_end_net_wealth": usd(day["net_wealth"].iloc[-1]) if len(day) else float("nan"),
                },
                asset_key=key("portfolio"),
                partition_key=partition,
            )
        yield Output(
            portfolio,
            output_name="portfolio",
            metadata={
                "run_pnl": usd(summary.pnl),
                "run_gross_volume": usd(summary.gross_volume),
                "run_turnover": round(summary.turnover, 2),
                "net_wealth": usd(summary.final_net_wealth),
                "run_bars": summary.bars,
                "started_from": "previous day" if state is not None else "initial cash",
                "log_dir": MetadataValue.path(summary.log_dir),
                "pnl_report": MetadataValue.path(png),
                "pnl_plot": preview(Path(png).read_bytes(), "cumulative PnL and GMV"),
            },
        )

    return [market_data, model_outputs, target_positions, trading]


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
