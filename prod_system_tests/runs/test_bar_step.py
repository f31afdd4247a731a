"""One bar step for every run: a simulation and a paper session trade a bar through the same code, and
every broker answers the whole interface, so that no run asks which broker it holds."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pandas as pd

from prod_system.common.clock import SimulatedClock
from prod_system.config import CostsConfig, build_config
from prod_system.data.market_data import CandleStore, MarketDataReader
from prod_system.data.market_db import MarketDatabase
from prod_system.log_dir import LogDir
from prod_system.models.dag import load_model
from prod_system.runs.live import LiveSession
from prod_system.runs.stages import guard_predictions, load_store, predictions_table, run_model, run_trading
from prod_system.trading.brokers.base import EXECUTION_COLUMNS, Broker
from prod_system.trading.brokers.exchange import ExchangeBroker
from prod_system.trading.brokers.mocked import MockedBroker
from prod_system.trading.portfolio import PortfolioState
from prod_system.trading.positions import run_sizing
from prod_system_tests.kit.data import UNIVERSE
from prod_system_tests.kit.live import ReadAdvancingClock, candles_of

PACKAGE = Path(__file__).resolve().parents[2] / "prod_system"
START = pd.Timestamp("2023-07-21T12:00:00Z")
END = START + pd.Timedelta(minutes=8)
KNOWN_AFTER = pd.Timedelta(seconds=10)  # a candle is known 10 s after its close (the bundled candles' delay)


def test_every_broker_implements_the_whole_interface_itself(candles):
    """Each broker defines every method of the interface (none inherited by default), so the ABC lets
    it be built; the mocked one keeps no execution log, fills nothing at once and ignores a forced
    kill switch in its orders (a paper session's orders stay the model's) but reports it (the session
    alerts on it, as prod's does)."""
    wanted = set(Broker.__abstractmethods__) | {"keeps_execution_log"}
    assert wanted >= {"reconcile", "submit", "collect_fills", "collect_immediate_fills", "open_orders"}
    assert wanted >= {"executions", "force_kill_switch", "kill_switch_state", "close"}
    for broker_class in (MockedBroker, ExchangeBroker):
        assert issubclass(broker_class, Broker)
        assert not broker_class.__abstractmethods__, broker_class
        assert wanted <= set(vars(broker_class)), (broker_class, wanted - set(vars(broker_class)))
        for name in Broker.__abstractmethods__:
            interface = inspect.signature(getattr(Broker, name)).parameters
            assert list(inspect.signature(getattr(broker_class, name)).parameters) == list(interface), name
    assert ExchangeBroker.keeps_execution_log and not MockedBroker.keeps_execution_log

    clock = SimulatedClock(START)
    broker = MockedBroker(
        MarketDataReader(CandleStore(candles, UNIVERSE), clock), pd.Timedelta(minutes=1), CostsConfig()
    )
    state = PortfolioState.empty(UNIVERSE, 1000.0)
    assert broker.reconcile(state) == []
    order = {"bar_end": START, "asset": "BTC", "client_order_id": "x", "quantity": 0.1}
    broker.submit([order])
    assert broker.kill_switch_state() is None
    broker.force_kill_switch("flatten")
    assert broker.kill_switch_state() == "flatten"
    assert broker.collect_immediate_fills(START + pd.Timedelta(minutes=1)) == []
    assert broker.open_orders() == [order]
    executions = broker.executions()
    assert executions.empty and list(executions.columns) == EXECUTION_COLUMNS
    broker.close()


def test_no_run_asks_which_broker_it_holds():
    """Outside the brokers, nothing tests a broker's class: whatever a bar needs is on the interface."""
    concrete = {"MockedBroker", "ExchangeBroker"}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "brokers":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("isinstance", "issubclass"):
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                names |= {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
                if names & concrete:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found, found


def test_a_simulation_and_a_paper_session_trade_the_same_bars_alike(candles, snapshot, tmp_path):
    """Eight 1-minute bars of C1b over the same real candles, known 10 s after their close: replayed in
    the core's stages, and traded by a paper session on the market database. Both go through the bar
    step: the same orders, and the same fills of them (at the TWAP of the next bar)."""
    sim_orders, sim_fills = _simulated(snapshot, tmp_path / "sim")
    live_orders, live_fills = _paper_session(candles, tmp_path)
    assert len(sim_orders) and len(sim_fills), "the window trades: its orders are filled in it"
    filled = live_orders[live_orders["bar_end"] < END]  # the last bar's orders fill after the session
    assert len(live_fills) == len(filled), "the paper session collects the fill of every earlier order"
    pd.testing.assert_frame_equal(live_orders, sim_orders)
    pd.testing.assert_frame_equal(live_fills, sim_fills)


def _simulated(snapshot: Path, root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    config = build_config(_settings(f"parquet:{snapshot}", root, "simulation"))
    dag = load_model(config.model, config.bar_delta, config.model_params)
    store = load_store(config, dag)
    bars = pd.date_range(START + config.bar_delta, END, freq=config.bar_delta)
    predictions, _ = guard_predictions(config, store, predictions_table(dag, run_model(config, dag, store, bars)), bars)
    tables = run_trading(config, store, run_sizing(config, predictions, bars), bars).tables
    return _comparable(tables["orders"], tables["fills"])


def _paper_session(candles: pd.DataFrame, tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    url = f"sqlite:///{tmp_path / 'market.db'}"
    database = MarketDatabase(url)
    database.upsert(candles_of(candles, START - pd.Timedelta(hours=6), START), START)
    minute = pd.Timedelta(minutes=1)
    for bar_end in pd.date_range(START + minute, END + minute, freq=minute):  # and the last fills' window
        database.upsert(candles_of(candles, bar_end - minute, bar_end), bar_end + KNOWN_AFTER)
    database.close()
    config = build_config(_settings(url, tmp_path / "live", "paper_trading"))
    session = LiveSession(config, ReadAdvancingClock(START - pd.Timedelta(seconds=5), pd.Timedelta(seconds=1)))
    outcomes = session.run()
    assert [o.status for o in outcomes] == ["traded"] * 8, outcomes
    log_dir = LogDir(session.log_dir.path)
    return _comparable(log_dir.read_table("orders"), log_dir.read_table("fills"))


def _settings(source: str, root: Path, mode: str) -> dict:
    return {
        "model": "C1b",
        "run_mode": mode,
        "bar": "1m",
        "universe": UNIVERSE,
        "start": START.isoformat(),
        "end": END.isoformat(),
        "market_data": {"source": source},
        "log_root": str(root),
        "live": {"data_timeout_seconds": 30, "poll_seconds": 0.001},
        "profile_memory": False,
    }


def _comparable(orders: pd.DataFrame, fills: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the bars decided and what they got, without the run's id and the times of its clock."""
    orders = orders[["bar_end", "asset", "side", "quantity", "decision_price"]]
    fills = fills[["bar_end", "asset", "order_bar_end", "shares", "price"]]
    return tuple(  # the times at one resolution (a table read back from its parquet part, or in memory)
        frame.astype({c: "datetime64[ns, UTC]" for c in frame.columns if c.endswith("bar_end")}).reset_index(drop=True)
        for frame in (orders, fills)
    )
