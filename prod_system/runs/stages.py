"""The system's stages, shared by the core simulation, the Dagster assets and the live session.

A run goes through three stages, each over a list of bars, each waiting on its clock for every
bar's decision time (a simulated clock jumps there, a real one sleeps):

1. ``run_model``: at each bar's decision time (bar end + knowledge delay) evaluate the model on the
   candles visible then; record every node's output and profiling.
2. ``run_sizing``: turn predictions and volatility into target positions.
3. ``run_trading``: at each bar's decision time collect the fills of the previous bar's orders, mark
   the portfolio, then place the orders that move holdings to the bar's targets (``bar_step``, the
   same step as a live session's).

The Dagster assets call these same functions on their partitions; ``runs.simulate`` calls them on
the whole window. In live runs each call covers one bar, so stage order and bar order coincide.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from prod_system.common.clock import Clock, SimulatedClock
from prod_system.config import CostsConfig, SystemConfig
from prod_system.data.data_guard import DataGuard, quality_frame
from prod_system.data.funding import LOOK_BEHIND, FundingSchedule, funding_schedule
from prod_system.data.market_data import CandleStore, MarketDataReader, interval_name
from prod_system.data.sources import load_funding, load_source
from prod_system.data.universe import outside_the_days_universe
from prod_system.errors import MarketDataError
from prod_system.log_dir import LogDir
from prod_system.models.dag import Dag, DagOutputs, run_streaming
from prod_system.runs.bar_step import BarStep
from prod_system.trading.brokers.base import FILL_COLUMNS, Broker
from prod_system.trading.brokers.exchange import ExchangeBroker
from prod_system.trading.brokers.kill_switch import KillSwitch
from prod_system.trading.brokers.mocked import MockedBroker
from prod_system.trading.orders import ORDER_COLUMNS
from prod_system.trading.portfolio import Portfolio, PortfolioState

logger = logging.getLogger("prod_system")

Progress = Callable[[str, int, int], None]


def load_store(config: SystemConfig, dag: Dag) -> CandleStore:
    """Load the market data of the run and check it covers the window (with the model's warm-up)."""
    data = config.market_data
    window = data_window(config, dag)
    candles = load_window(data.source, config.universe, data.delay, window)
    funding = load_funding(data.source, config.universe, data.delay, window)
    return check_coverage(CandleStore(candles, config.universe, funding=funding), config, dag)


def data_window(config: SystemConfig, dag: Dag) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The candles a run reads: its window and the history before it that the model (its warm-up)
    and the data guard read. A partitioned snapshot or the archive reads those months alone, however
    long it is (the core simulation, historical-pnl and the Dagster simulation all ask for this)."""
    return config.start - max(dag.lookback, data_guard_for(config).window), config.end


def load_window(
    source: str, universe: list[str], delay: pd.Timedelta, window: tuple[pd.Timestamp, pd.Timestamp]
) -> pd.DataFrame:
    """``load_source`` over a run's ``data_window``; nothing there is one line saying so."""
    candles = load_source(source, universe, delay, window)
    if candles.empty:
        since, end = window
        raise MarketDataError(
            f"market data {source} has no candles from {since:%Y-%m-%d %H:%M} (the model's warm-up) to the "
            f"run's end {end:%Y-%m-%d %H:%M} UTC: it lies outside the run's window"
        )
    return candles


def check_coverage(store: CandleStore, config: SystemConfig, dag: Dag) -> CandleStore:
    """Refuse market data that does not cover the whole window, from its start to its end; warn when it
    misses the model's warm-up. Every path calls it before anything runs or is written: the core
    simulation, the Dagster one (``launch``) and the historical simulation. A bar the market data's
    candles do not divide is refused here too."""
    check_bar(config.bar_delta, store.interval)
    first_open, last_close = store.first_bar_end - store.interval, store.last_bar_end
    if first_open > config.start or last_close < config.end:
        disjoint = last_close <= config.start or first_open >= config.end
        raise MarketDataError(
            f"market data covers {first_open:%Y-%m-%d %H:%M} to {last_close:%Y-%m-%d %H:%M} UTC (first candle's open "
            f"to last candle's close), {'outside' if disjoint else 'only part of'} the run's window "
            f"{config.start:%Y-%m-%d %H:%M} to {config.end:%Y-%m-%d %H:%M} UTC"
        )
    warm_up_from = config.start - dag.lookback
    if store.first_bar_end > warm_up_from + store.interval:
        logger.warning(
            "market data starts at %s, after the model's warm-up start %s: early predictions will be missing",
            store.first_bar_end,
            warm_up_from,
        )
    return store


def check_bar(bar: pd.Timedelta, interval: pd.Timedelta) -> None:
    """A bar is made of whole candles: refuse one shorter than the market data's candles or not a
    multiple of them (its close would be a candle's close from inside the next bar)."""
    if bar < interval:
        raise MarketDataError(
            f"bar {interval_name(bar)} is shorter than the market data's {interval_name(interval)} candles: "
            f"a bar is made of whole candles"
        )
    if bar.value % interval.value:
        raise MarketDataError(
            f"bar {interval_name(bar)} is not a multiple of the market data's {interval_name(interval)} candles"
        )


# A stage gets its clock from a factory, given the time it starts from: in a simulation each stage
# replays the past on a clock of its own; live, every stage shares the real clock.
ClockFactory = Callable[[pd.Timestamp], Clock]
BrokerFactory = Callable[[MarketDataReader, pd.Timedelta], Broker]


def replay_clock(start: pd.Timestamp) -> Clock:
    return SimulatedClock(start)


def mocked_broker(costs: CostsConfig, kill_switch_file: str | None = None) -> BrokerFactory:
    """The mocked broker, charging the config's fees and slippage (reporting the kill-switch file)."""

    def connect(reader: MarketDataReader, bar: pd.Timedelta) -> Broker:
        return MockedBroker(reader, bar, costs, KillSwitch(kill_switch_file))

    return connect


def broker_factory_for(config: SystemConfig, log_dir: LogDir | None = None) -> BrokerFactory:
    """The broker the config asks for: mocked, or the exchange through ccxt (audited in the log dir)."""
    if config.broker.kind == "mocked":
        return mocked_broker(config.costs, config.risk.kill_switch_file)
    audit = log_dir.path / "exchange_audit.jsonl" if log_dir else None

    def exchange_broker(reader: MarketDataReader, bar: pd.Timedelta) -> Broker:
        return ExchangeBroker(config.broker, config.risk, config.universe, reader.clock, bar, audit_path=audit)

    return exchange_broker


def run_model(
    config: SystemConfig,
    dag: Dag,
    store: CandleStore,
    bars: pd.DatetimeIndex,
    progress: Progress | None = None,
    clock_factory: ClockFactory = replay_clock,
) -> DagOutputs:
    reader = MarketDataReader(store, clock_factory(bars[0] - config.bar_delta))

    def on_bar(done: int) -> None:
        if progress:
            progress("model", done, len(bars))

    return run_streaming(dag, reader, bars, config.market_data.delay, config.profile_memory, on_bar)


def predictions_table(dag: Dag, outputs: DagOutputs) -> pd.DataFrame:
    """The model's prediction, volatility and price per bar and asset (long form)."""
    roles = {"prediction": dag.prediction_node, "volatility": dag.volatility_node, "price": dag.price_node}
    columns = [
        outputs.node(node).rename_axis(index="bar_end", columns="asset").stack(future_stack=True).rename(role)
        for role, node in roles.items()
    ]
    return pd.concat(columns, axis=1).reset_index()


def data_guard_for(config: SystemConfig) -> DataGuard:
    return DataGuard(config.bar_delta, config.market_data.max_jump, config.market_data.delisted_after_delta)


def guard_predictions(
    config: SystemConfig, store: CandleStore, predictions: pd.DataFrame, bars: pd.DatetimeIndex
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The data guard over a replay: each bar checked on what was visible at its decision time; an
    asset flagged on a bar loses its prediction there (no target: not traded, holdings kept). Returns
    the guarded predictions and the ``data_quality`` table, and logs what it found."""
    predictions = in_the_days_universe(config, predictions)
    guard = data_guard_for(config)
    delay = config.market_data.delay
    issues = [guard.check(bar_end, store.visible(bar_end + delay, bar_end - guard.window, bar_end)) for bar_end in bars]
    found = [frame for frame in issues if len(frame)]
    quality = pd.concat(found, ignore_index=True) if found else quality_frame([])
    log_data_quality(logger, quality, store.anomalies)
    if quality.empty:
        return predictions, quality
    flagged = pd.MultiIndex.from_frame(quality[["bar_end", "asset"]])
    mask = pd.MultiIndex.from_frame(predictions[["bar_end", "asset"]]).isin(flagged)
    guarded = predictions.copy()
    guarded.loc[mask, "prediction"] = np.nan
    return guarded, quality


def in_the_days_universe(config: SystemConfig, predictions: pd.DataFrame) -> pd.DataFrame:
    """A universe ranked again each day (``universe_each_day``): an asset outside its bar's day's list
    predicts 0 there, a zero target that closes its position (the run trades the union of the lists)."""
    outside = outside_the_days_universe(config, predictions)
    if not outside.any():
        return predictions
    ranked = predictions.copy()
    ranked.loc[outside.to_numpy(), "prediction"] = 0.0
    return ranked


def log_data_quality(log: logging.Logger, quality: pd.DataFrame, anomalies: pd.DataFrame | None = None) -> None:
    """One warning per screened candle anomaly and per guarded (bar, asset)."""
    if anomalies is not None:
        for row in anomalies.itertuples():
            log.warning("market data: %s %s: %s (%s; %s)", row.asset, row.bar_end, row.issue, row.action, row.detail)
    for row in quality.itertuples():
        log.warning("bar %s: %s not traded: %s (%s)", row.bar_end.isoformat(), row.asset, row.issue, row.detail)


@dataclass
class TradingResult:
    tables: dict[str, pd.DataFrame]
    state: PortfolioState


def run_trading(
    config: SystemConfig,
    store: CandleStore,
    targets: pd.DataFrame,
    bars: pd.DatetimeIndex,
    state: PortfolioState | None = None,
    progress: Progress | None = None,
    clock_factory: ClockFactory = replay_clock,
    broker_factory: BrokerFactory | None = None,
) -> TradingResult:
    """Per bar: the fills of the previous orders, the marks, then the orders towards the targets."""
    bar = config.bar_delta
    delay = config.market_data.delay
    clock = clock_factory(bars[0] - bar)
    reader = MarketDataReader(store, clock)
    broker = (broker_factory or mocked_broker(config.costs))(reader, bar)
    state = state or PortfolioState.empty(config.universe, config.portfolio.initial_cash)
    broker.reconcile(state)  # the mocked broker adopts nothing
    portfolio = Portfolio(state)
    target_shares = targets.pivot(index="bar_end", columns="asset", values="target_shares")
    targets_by_bar = target_shares.reindex(index=bars, columns=config.universe).to_numpy(dtype="float64")
    step = BarStep(config, broker, portfolio, clock, logger, funding=funding_of(config, store, bars))
    all_orders, all_fills = [], []
    for i, bar_end in enumerate(bars):
        clock.wait_until(bar_end + delay)
        bar_closes = reader.read(bar, since=bar_end - bar).field("close")
        trade = step.run(bar_end, bar_closes, targets_by_bar[i])
        all_fills.extend(trade.fills)
        all_orders.extend(trade.orders)
        if progress:
            progress("trading", i + 1, len(bars))
    tables = portfolio.tables()
    tables["orders"] = pd.DataFrame(all_orders, columns=ORDER_COLUMNS)
    tables["fills"] = pd.DataFrame(all_fills, columns=FILL_COLUMNS)
    if broker.keeps_execution_log:
        tables["broker/executions"] = broker.executions()
    broker.close()
    return TradingResult(tables=tables, state=portfolio.state(broker.open_orders(), bars[-1]))


def funding_of(config: SystemConfig, store: CandleStore, bars: pd.DatetimeIndex) -> FundingSchedule:
    """The funding settlements of the bars (the store's rates, else the config's assumed rate), from a day
    before the first: one that the state (``funded_until``) says an earlier run has not booked is due."""
    start = bars[0] - config.bar_delta
    schedule = funding_schedule(store.funding, config.universe, start - LOOK_BEHIND, bars[-1], config.costs.funding)
    return FundingSchedule(schedule, since=start)


def write_stage_tables(log_dir: LogDir, tables: dict[str, pd.DataFrame], first_bar: pd.Timestamp) -> None:
    for name, frame in tables.items():
        log_dir.write_table(name, frame, first_bar)
