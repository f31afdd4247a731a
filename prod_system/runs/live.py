"""Live sessions (paper_trading, prod): the system on the real clock, bar after bar, from the database.

Per bar: wait for the bar's close and for every asset's candle in the real-time market database
(or the timeout: trade the assets that have data, or skip the bar), collect the fills of the
previous orders, mark the portfolio, run the model on what the clock lets it see, size, and send
the orders. The state (holdings, cash, orders still executing) is written after every bar, and the
bar's orders are written *before* they are sent, so a killed process restarts where it was:
orders already sent are found on the venue by their client ids, never sent twice, and their fills
are counted once. A bar that cannot be computed in time is recorded as skipped, with the reason.

``paper_trading`` and ``prod`` differ only in the broker (mocked, or the exchange through ccxt).
"""

from __future__ import annotations

import fcntl
import json
import logging
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from prod_system.alerts import Notifier, cause_of, kill_switch_alert, skipped_alert
from prod_system.common.clock import Clock
from prod_system.common.timeutil import bar_ends, compact
from prod_system.config import RunMode, SystemConfig, build_config, load_config
from prod_system.data.data_guard import DataGuard
from prod_system.data.funding import LOOK_BEHIND, FundingSchedule, empty_funding, funding_schedule
from prod_system.data.instruments import LOG_DIR_FILE, resolve_instruments
from prod_system.data.market_data import CANDLE, Candles, CandleStore, MarketDataReader
from prod_system.data.market_db import MarketDatabase
from prod_system.errors import BrokerError, DatabaseUnavailable
from prod_system.log_dir import LogDir, columns
from prod_system.models.dag import Dag, load_model
from prod_system.runs.bar_step import BarStep, BarTrade
from prod_system.runs.exchange_check import ExchangeWatch
from prod_system.runs.exchange_statement import StatementRecorder
from prod_system.runs.stages import BrokerFactory, broker_factory_for, data_guard_for, log_data_quality
from prod_system.trading.brokers.base import FILL_COLUMNS
from prod_system.trading.orders import ORDER_COLUMNS
from prod_system.trading.portfolio import Portfolio, PortfolioState
from prod_system.trading.positions import run_sizing

logger = logging.getLogger("prod_system.live")

STATE_FILE = "state.json"
INFLIGHT_FILE = "inflight.json"
MAX_DATA_TIMEOUT = pd.Timedelta(hours=1)  # the largest live.data_timeout_seconds the config takes
LATENCY_COLUMNS = columns("latency")


class DatabaseCandles:
    """The candle store of a live session: the database's candles as known at ``now``, through the
    same visibility rule as a replay (``CandleStore.visible``). The database holds 1-minute candles."""

    interval = CANDLE

    def __init__(self, database: MarketDatabase, assets: list[str]):
        self.database, self.assets = database, list(assets)

    def visible(self, now: pd.Timestamp, since: pd.Timestamp, until: pd.Timestamp | None = None) -> Candles:
        last = now if until is None else min(now, until)
        rows = self.database.snapshot(self.assets, since, last, now=now)
        if rows.empty:
            return Candles(since + CANDLE, max(0, int((last - since) / CANDLE)), self.assets)
        return CandleStore(rows, self.assets, every_asset=False).visible(now, since, until)


def database_funding(
    database: MarketDatabase, config: SystemConfig, bar_end: pd.Timestamp, now: pd.Timestamp
) -> FundingSchedule:
    """The session's funding settlements up to ``bar_end``, as the database holds them by ``now`` (rates
    ingested from the exchange, known from their ingestion, like candles), from a day before the session
    (one the previous session could not book is due now); an asset with none near the session, the
    config's assumed rate. Read with the bar's candles, before any fill is collected."""
    since = config.start - LOOK_BEHIND
    data = config.costs.funding.mode == "data"
    rows = database.funding(config.universe, since - LOOK_BEHIND, bar_end, now=now) if data else empty_funding()
    schedule = funding_schedule(rows, config.universe, since, config.end, config.costs.funding)
    return FundingSchedule(schedule, since=config.start)


def expected_missing(schedule: FundingSchedule, bar_end: pd.Timestamp) -> list[str]:
    """The assets whose next settlement, as their last two in the data imply, is due by ``bar_end`` (within
    the last hour) but not recorded yet: the exchange has published it, the ingestor has not written it."""
    rows = schedule.schedule[~schedule.schedule["assumed"]]
    missing = []
    for asset, times in rows.groupby("asset")["funding_time"]:
        if len(times) >= 2:
            expected = times.iloc[-1] + (times.iloc[-1] - times.iloc[-2])
            if bar_end - pd.Timedelta(hours=1) < expected <= bar_end:
                missing.append(asset)
    return missing


@dataclass
class BarOutcome:
    bar_end: pd.Timestamp
    status: str  # traded | skipped
    reason: str = ""
    orders: int = 0
    latency: dict = field(default_factory=dict)
    recorded: bool = False  # a skipped bar written to skipped_bars


@dataclass
class BarDecision:
    """A bar decided, before it is traded: what the model saw and said, and when."""

    bar_end: pd.Timestamp
    missing: list[str]  # the assets without the bar's candle by its deadline (not traded)
    data_complete_at: pd.Timestamp
    predictions_at: pd.Timestamp
    node_rows: pd.DataFrame
    profiling: pd.DataFrame
    quality: pd.DataFrame
    targets: pd.DataFrame
    latency: dict = field(default_factory=dict)  # once the bar is traded and recorded


BAR_KEY_FORMAT = "%Y-%m-%d-%H:%M"  # a bar's partition key: its end, UTC (as Dagster spells time partitions)


def bar_key(bar_end: pd.Timestamp) -> str:
    return bar_end.tz_convert("UTC").strftime(BAR_KEY_FORMAT)


def parse_bar_key(key: str) -> pd.Timestamp:
    return pd.to_datetime(key, format=BAR_KEY_FORMAT, utc=True)


def due_bar(
    now: pd.Timestamp,
    bar: pd.Timedelta,
    last_requested: pd.Timestamp | None,
    missing: Callable[[pd.Timestamp], list[str]],
    timeout_seconds: float,
    lead_seconds: float = 0.0,
) -> tuple[pd.Timestamp | None, str]:
    """The bar whose run to request now, if any; one at a time, in order, never one requested before.

    Without a lead: the latest closed bar, once all its candles are recorded (or its data timeout has
    passed: the run then trades what it has, or records the bar skipped). With a lead: the bar in
    progress, ``lead_seconds`` before its close, so that the run's start (a process, Python, Dagster,
    the code location: seconds) is paid before the close; the run itself waits for the close and the
    candles, with the same timeout (``LiveSession``), so it still decides only on complete data. A
    closed bar not requested yet and still within its timeout comes first."""
    closed = now.floor(bar)
    timeout = pd.Timedelta(seconds=timeout_seconds)
    pending = last_requested is None or last_requested < closed
    if lead_seconds > 0:
        upcoming = closed + bar
        if pending and now < closed + timeout:
            return closed, f"bar {closed} closed; its run waits for its candles"
        lead = pd.Timedelta(seconds=lead_seconds)
        if now < upcoming - lead:
            return None, f"next run {lead_seconds:g} s before {upcoming}"
        if last_requested is not None and upcoming <= last_requested:
            return None, f"bar {upcoming} already requested; next at {upcoming + bar - lead}"
        return upcoming, f"bar {upcoming} closes in {(upcoming - now).total_seconds():.0f} s; its run waits for it"
    if not pending:
        return None, f"bar {closed} already requested; next at {closed + bar}"
    absent = missing(closed)
    if absent and now < closed + timeout:
        return None, f"bar {closed}: waiting for the candles of {', '.join(absent)}"
    return closed, "complete" if not absent else f"timeout: {', '.join(absent)} missing"


def warm_up_of(dag: Dag, guard: DataGuard) -> pd.Timedelta:
    """The history a live bar reads before its end: the model's lookback (from its DAG), or the data
    guard's window if longer."""
    return max(dag.lookback, guard.window)


def session_window(now: pd.Timestamp, bar: pd.Timedelta, duration: pd.Timedelta) -> tuple[pd.Timestamp, pd.Timestamp]:
    """A session from the bar in progress: [now floored to the bar, + duration rounded up to bars)."""
    start = now.floor(bar)
    bars = max(1, int(np.ceil(duration / bar)))
    return start, start + bar * bars


def unfinished_session(
    root: str | Path, model_name: str, run_mode: str, trigger: str, now: pd.Timestamp
) -> Path | None:
    """The log dir of a session of this model and mode whose last bar can still be traded (to resume
    it): one killed in its last bar and started again before that bar's data timeout resumes, rather
    than leaving the bar's orders to a new session."""
    candidates = []
    for path in Path(root).glob(f"{model_name}/{run_mode}/{trigger}/*.*/system_log_dir"):
        config_file = path / "system_config.yaml"
        if not config_file.exists():
            continue
        end = pd.to_datetime(path.parent.name.split(".")[1], format="%Y%m%d_%H%M%S", utc=True)
        if end + MAX_DATA_TIMEOUT <= now:  # cheap filter first: months of sessions lie here
            continue
        if end + pd.Timedelta(seconds=load_config(config_file).live.data_timeout_seconds) <= now:
            continue
        state = path / STATE_FILE
        done = json.loads(state.read_text()).get("bar_end") if state.exists() else None
        if done is None or pd.Timestamp(done) < end:
            candidates.append(path)
    return sorted(candidates)[-1] if candidates else None


def previous_state(config: SystemConfig, own: Path) -> Path | None:
    """The state file of the latest earlier session of the config's model and mode (one that ended by
    the config's start, not the log dir ``own``), where a new session carries on from; None if none."""
    root = Path(config.log_root) / config.model_name / config.run_mode
    previous = []
    for path in root.glob(f"*/*.*/system_log_dir/{STATE_FILE}"):
        end = pd.to_datetime(path.parent.parent.name.split(".")[1], format="%Y%m%d_%H%M%S", utc=True)
        if end <= config.start and path.parent != own:
            previous.append((end, str(path)))
    return Path(max(previous)[1]) if previous else None


def keeping_holdings(config: SystemConfig) -> SystemConfig:
    """A session whose universe a rule chose again (top:N each day), with the assets the previous
    session of its model and mode ended holding, or with orders that may still execute, added after
    the rule's: the carried-over state keeps only the universe's assets, so a dropped asset would
    vanish from the portfolio while the venue still holds it. They stay traded (the model's targets)
    until a day's ranking takes them back or they are flat. A listed universe is left as it is."""
    if not config.universe_rule:
        return config
    path = previous_state(config, LogDir.for_config(config).path)
    if path is None:
        return config
    data = json.loads(path.read_text())
    orders = _with_orders(data.get("open_orders", []), _inflight_orders(path.parent))
    held = {asset for asset, shares in data.get("shares", {}).items() if shares} | {o["asset"] for o in orders}
    kept = sorted(held - set(config.universe))
    if not kept:
        return config
    logger.info("universe %s: keeping %s, held at the end of %s", config.universe_rule, ",".join(kept), path.parent)
    return build_config({**config.model_dump(), "universe": [*config.universe, *kept]})


class LiveSession:
    """One live session: its config, clock, database, broker and log dir."""

    def __init__(
        self,
        config: SystemConfig,
        clock: Clock,
        broker_factory: BrokerFactory | None = None,
        on_bar: Callable[[BarOutcome], None] | None = None,
    ):
        if config.run_mode == RunMode.SIMULATION:
            raise ValueError("a live session runs in paper_trading or prod mode")
        config, self.instruments = resolve_instruments(config)  # an asset without exchange rules: refused here
        self.config, self.clock, self.on_bar = config, clock, on_bar
        self.bar = config.bar_delta
        self.assets = config.universe
        self.dag: Dag = load_model(config.model, self.bar, config.model_params)
        self.database = MarketDatabase(config.market_data.source)
        self.reader = MarketDataReader(DatabaseCandles(self.database, self.assets), clock)
        self.guard = data_guard_for(config)
        self._database_down = False
        self._warm_up_checked = False
        self._funding_waits = True  # a settlement may be due but unknown: look each bar (and at a restart)
        self.log_dir = LogDir.for_config(config)
        self.broker_factory = broker_factory or broker_factory_for(config, self.log_dir)
        self.notifier = Notifier.for_run(config)  # skipped bars, the kill switch
        self.bars = bar_ends(config.start, config.end, self.bar)

    @property
    def warm_up(self) -> pd.Timedelta:
        """The history a bar reads before its end: what ingestion backfills before the first bar, so
        that the session trades from it (``warm_up_of``)."""
        return warm_up_of(self.dag, self.guard)

    # -- state on disk ---------------------------------------------------------------------------

    def _state_path(self) -> Path:
        return self.log_dir.path / STATE_FILE

    def load_state(self) -> tuple[PortfolioState, list[dict]]:
        """The persisted state (a fresh session: cash only), and the fills already counted from the
        venue but not yet applied to the portfolio (they are applied at the next bar)."""
        path = self._state_path()
        data = json.loads(path.read_text()) if path.exists() else {}
        if data:
            state = PortfolioState(
                shares=pd.Series(data["shares"]).reindex(self.assets, fill_value=0.0).astype(float),
                notional=pd.Series(data["notional"]).reindex(self.assets, fill_value=0.0).astype(float),
                cash=float(data["cash"]),
                open_orders=[_order_from_json(o) for o in data["open_orders"]],
                bar_end=pd.Timestamp(data["bar_end"]) if data["bar_end"] else None,
                funded_until={asset: pd.Timestamp(t) for asset, t in data.get("funded_until", {}).items()},
            )
        else:
            state = PortfolioState.empty(self.assets, self.config.portfolio.initial_cash)
        # killed after deciding a bar's orders: they may be on the venue
        inflight = [_order_from_json(o) for o in _inflight_orders(self.log_dir.path)]
        state.open_orders[:] = _with_orders(state.open_orders, inflight)
        return state, [_order_from_json(f) for f in data.get("unapplied_fills", [])]

    def _carry_over(self) -> None:
        """A new session starts where the previous session of the model and mode ended (its holdings,
        cash, orders still executing), so that the venue and the portfolio keep agreeing."""
        path = previous_state(self.config, self.log_dir.path)
        if path is None:
            return
        data = json.loads(path.read_text())
        # killed while sending its last bar's orders: they may be on the venue
        data["open_orders"] = _with_orders(data["open_orders"], _inflight_orders(path.parent))
        data["bar_end"] = None  # none of this session's bars is done
        data["carried_from"] = str(path.parent)
        self.log_dir.write_text(STATE_FILE, json.dumps(data, indent=1))
        logger.info("starting from the end of the previous session %s", path.parent)

    def _write_inflight(self, orders: list[dict]) -> None:
        """Record the bar's orders before they are sent, beside those of an earlier attempt at the bar
        (a restart): inflight.json holds every order that may be on the venue and that state.json does
        not account for yet. A bar decided again after a restart does not send again what the first
        attempt placed (its fills are counted now), but until state.json is saved those orders and
        their fills exist nowhere else: replacing them would lose them to the next restart."""
        merged = _with_orders(_inflight_orders(self.log_dir.path), [_order_to_json(o) for o in orders])
        self.log_dir.write_text(INFLIGHT_FILE, json.dumps({"orders": merged}))

    def _save_state(self, state: PortfolioState, unapplied_fills: list[dict]) -> None:
        data = {
            "unapplied_fills": [_order_to_json(f) for f in unapplied_fills],
            "bar_end": state.bar_end.isoformat() if state.bar_end is not None else None,
            "shares": state.shares.to_dict(),
            "notional": state.notional.to_dict(),
            "cash": state.cash,
            "open_orders": [_order_to_json(o) for o in state.open_orders],
            "funded_until": {asset: time.isoformat() for asset, time in state.funded_until.items()},
        }
        self.log_dir.write_text(STATE_FILE, json.dumps(data, indent=1))
        (self.log_dir.path / INFLIGHT_FILE).unlink(missing_ok=True)

    # -- the session -----------------------------------------------------------------------------

    def run(self, only: pd.Timestamp | None = None, until: pd.Timestamp | None = None) -> list[BarOutcome]:
        """Trade every bar of the window still ahead, resuming a persisted state; with ``only``, that
        one bar (the bars before it that no run traded are recorded as skipped); with ``until``, the
        bars up to then (the session goes on when run again). One process at a time drives a session:
        a second one waits for the first (a lock beside the log dir), from before the session is prepared
        (two runs starting a fresh session at once: the second finds it prepared, never replaces it)."""
        with _session_lock(self.log_dir.path):
            fresh = not (self.log_dir.path / "system_config.yaml").exists()
            if fresh:
                self.log_dir.prepare(self.config, overwrite=False)
                self.instruments.write(self.log_dir.path / LOG_DIR_FILE)  # the rules the session trades under
                self._carry_over()
            return self._run(fresh, only, until)

    def _run(self, fresh: bool, only: pd.Timestamp | None, until: pd.Timestamp | None) -> list[BarOutcome]:
        state, early_fills = self.load_state()
        done_until = state.bar_end
        outcomes: list[BarOutcome] = []
        with self.log_dir.capture_log(logger):
            logger.info(
                "%s session of %s, %s to %s (%d bars of %s), run id %s: %s",
                self.config.run_mode,
                self.config.model,
                self.config.start,
                self.config.end,
                len(self.bars),
                self.config.bar,
                self.config.run_id,
                "started" if fresh else f"resumed after {done_until}",
            )
            broker = self.broker_factory(self.reader, self.bar)
            try:
                # the venue holds the portfolio plus the fills counted but not applied yet
                expected = replace(state, shares=_plus_fills(state.shares, early_fills))
                self.watch = ExchangeWatch(self.config, logger)  # the exchange checked in session (prod)
                adopted = broker.reconcile(expected, self.watch.alert)
                if adopted:  # booked as fills applied with the first traded bar, as in session
                    state = replace(state, shares=state.shares.fillna(0.0))  # one it could not tell: taken whole
                    early_fills = early_fills + adopted
                step = BarStep(
                    self.config,
                    broker,
                    Portfolio(state, history=self._holdings_at),
                    self.clock,
                    logger,
                    warn_unpriced=False,  # _wait_for_candles has said which assets have no candle
                    before_submit=self._record_orders,
                    on_broker_error=self._orders_failed,
                    count_immediate_fills=True,
                )
                self.statement = StatementRecorder(self.log_dir, self.config, logger)
                self.statement.open(broker)  # the venue's balances before the first order
                self._trade_bars(step, early_fills, done_until, only, until, outcomes)
                self._record_skipped(outcomes)
            finally:
                broker.close()
            traded = sum(o.status == "traded" for o in outcomes)
            logger.info("session done: %d bars traded, %d skipped", traded, len(outcomes) - traded)
        return outcomes

    def _trade_bars(
        self,
        step: BarStep,
        early_fills: list[dict],
        done_until: pd.Timestamp | None,
        only: pd.Timestamp | None,
        until: pd.Timestamp | None,
        outcomes: list[BarOutcome],
    ) -> None:
        """Every bar of the window after ``done_until`` (up to ``only`` or ``until``), into ``outcomes``."""
        for bar_end in self.bars:
            if done_until is not None and bar_end <= done_until:
                continue
            if only is not None and bar_end > only:
                break
            if until is not None and bar_end > until:
                break
            late = self.clock.now() > self._deadline(bar_end)
            if only is not None and bar_end < only:
                outcome = BarOutcome(bar_end, "skipped", "no run traded this bar in time")
            elif late:
                outcome = BarOutcome(bar_end, "skipped", "the process was not running at the bar's close")
            else:
                self._record_skipped(outcomes)
                try:
                    outcome, early_fills = self._bar(bar_end, step, early_fills)
                except DatabaseUnavailable as error:  # the mocked broker reads prices too
                    outcome = self._skip(bar_end, str(error))
            outcomes.append(outcome)
            self._watch_kill_switch(step.broker.kill_switch_state(), bar_end)
            if self.on_bar:
                self.on_bar(outcome)

    def _check_warm_up(self, bar_end: pd.Timestamp, candles: Candles) -> None:
        """Warn once, at the session's first decided bar, when the database holds less history than the
        model's lookback: its first predictions are missing or computed on a short window."""
        if self._warm_up_checked:
            return
        self._warm_up_checked = True
        seen = np.flatnonzero(np.isfinite(candles.field("close")).any(axis=1))
        warm_up_from = bar_end - self.dag.lookback
        if len(seen) and seen[0] <= 1:  # a minute's slack, as a simulation allows
            return
        first = "no candle" if not len(seen) else f"candles from {(candles.index[seen[0]] - CANDLE).isoformat()} only"
        logger.warning(
            "bar %s: the market database has %s, after the model's warm-up start %s (lookback %s): "
            "early predictions will be missing",
            bar_end.isoformat(),
            first,
            warm_up_from.isoformat(),
            f"{self.dag.lookback // CANDLE} minutes",
        )

    def _funding(self, bar_end: pd.Timestamp) -> FundingSchedule | None:
        """The funding settlements a bar may apply, read from the database when one can be due: at a bar
        that holds a whole hour (Binance settles on whole hours, every 1, 4 or 8), waiting until the bar's
        deadline for the rates the data says are due (the ingestor records them once published), and at
        every bar after it while one is still missing; None (nothing due) at other bars, which then cost
        no query. A rate recorded later still is booked when it comes, on the holdings at its time."""
        holds_an_hour = bar_end.floor("1h") > bar_end - self.bar
        if not (holds_an_hour or self._funding_waits):
            return None
        schedule = database_funding(self.database, self.config, bar_end, self.clock.now())
        missing = expected_missing(schedule, bar_end)
        while missing and holds_an_hour and self.clock.now() < self._deadline(bar_end):
            time.sleep(self.config.live.poll_seconds)
            schedule = database_funding(self.database, self.config, bar_end, self.clock.now())
            missing = expected_missing(schedule, bar_end)
        if missing and holds_an_hour:
            logger.warning("bar %s: no funding rate yet for %s: booked when it comes", bar_end, ", ".join(missing))
        self._funding_waits = bool(missing)
        return schedule

    def _holdings_at(self, when: pd.Timestamp) -> tuple[np.ndarray, np.ndarray] | None:
        """The shares and marks of the bar that contains ``when``, from this session's log dir or the
        previous session's (a settlement booked late after a restart, or by a run per bar)."""
        previous = previous_state(self.config, self.log_dir.path)
        for path in (self.log_dir.path, *([previous.parent] if previous else [])):
            logs = LogDir(path)
            try:
                shares = logs.read_table("portfolio/holdings_shares")
                notional = logs.read_table("portfolio/holdings_notional")
            except FileNotFoundError:
                continue
            after = shares.loc[shares["bar_end"] >= when, "bar_end"]
            if after.empty or after.min() - self.bar >= when:
                continue
            bar = after.min()
            held = shares[shares["bar_end"] == bar].set_index("asset")["shares"].reindex(self.assets, fill_value=0.0)
            value = notional[notional["bar_end"] == bar].set_index("asset")["notional"].reindex(self.assets)
            marks = (value / held.where(held != 0)).fillna(0.0)
            return held.to_numpy(dtype="float64"), marks.to_numpy(dtype="float64")
        return None

    def _deadline(self, bar_end: pd.Timestamp) -> pd.Timestamp:
        """The latest time a bar is decided on (run() skips bars already past it)."""
        return bar_end + pd.Timedelta(seconds=self.config.live.data_timeout_seconds)

    def _bar(self, bar_end: pd.Timestamp, step: BarStep, early_fills: list[dict]) -> tuple[BarOutcome, list[dict]]:
        """Decide and trade one bar (or record why not). ``early_fills``, counted after the previous
        bar's orders were sent, are applied now; returns those counted after this bar's."""
        if self.watch.refusing:  # a check disagreed: check again at the bar's close, trade once it agrees
            self.clock.wait_until(bar_end)
            shares = pd.Series(step.portfolio.shares, index=self.assets)
            refused = self.watch.before_bar(step.broker, _plus_fills(shares, early_fills), bar_end)
            if refused:
                return self._skip(bar_end, refused), early_fills
        missing, data_complete_at, skipped = self._wait_for_candles(bar_end)
        if skipped:
            return self._skip(bar_end, skipped), early_fills  # their fills wait for the next traded bar
        # what the bar could know by its deadline, never later (a bar decided late after a restart too);
        # every read of the database comes before the fills are collected, so that a database lost in
        # the middle of the bar skips it without consuming the exchange's fills
        asof = min(self.clock.now(), self._deadline(bar_end))
        window = self.guard.window
        try:
            candles = self.reader.read(self.dag.lookback, since=bar_end - self.dag.lookback, until=bar_end, asof=asof)
            recent = self.reader.read(window, since=bar_end - window, until=bar_end, asof=asof)  # ends at bar_end
            step.funding = self._funding(bar_end)
        except DatabaseUnavailable as error:
            return self._skip(bar_end, str(error)), early_fills
        decision = self._decide(bar_end, candles, recent, missing, data_complete_at)
        target_shares = decision.targets.set_index("asset")["target_shares"].reindex(self.assets)
        trade = step.run(
            bar_end,
            recent.field("close")[-(self.bar // CANDLE) :],  # the bar's 1-minute candles
            target_shares.to_numpy(dtype="float64"),
            early_fills,
            record=partial(self._record_bar, step, decision),
        )
        outcome = BarOutcome(bar_end, "traded", trade.failure, len(trade.orders), decision.latency)
        return outcome, trade.immediate_fills

    def _wait_for_candles(self, bar_end: pd.Timestamp) -> tuple[list[str], pd.Timestamp, str]:
        """Wait for the bar's close and its candles, until its deadline: the assets still missing, when
        the wait ended, and why the bar is skipped ('' if it is traded)."""
        live = self.config.live
        deadline = self._deadline(bar_end)
        self.clock.wait_until(bar_end)
        missing, unreachable = self._missing(bar_end)
        while missing and self.clock.now() < deadline:
            time.sleep(live.poll_seconds)
            missing, unreachable = self._missing(bar_end)
        data_complete_at = self.clock.now()
        if unreachable:  # the database never answered by the deadline: nothing to decide on
            return missing, data_complete_at, f"{unreachable} (until {deadline.isoformat()})"
        if missing and (live.on_missing == "skip_bar" or len(missing) == len(self.assets)):
            return missing, data_complete_at, f"no candle by {deadline.isoformat()} for {', '.join(missing)}"
        if missing:
            logger.warning("bar %s: no candle for %s: they are not traded this bar", bar_end, ", ".join(missing))
        return missing, data_complete_at, ""

    def _decide(
        self,
        bar_end: pd.Timestamp,
        candles: Candles,
        recent: Candles,
        missing: list[str],
        data_complete_at: pd.Timestamp,
    ) -> BarDecision:
        """The model on the bar's candles, the data guard on its recent ones, and the bar's targets."""
        self._check_warm_up(bar_end, candles)
        outputs, profile = self.dag.evaluate(candles, self.config.profile_memory)
        predictions_at = self.clock.now()
        node_rows, predictions = self._bar_outputs(bar_end, outputs, missing)
        # the data guard: no order on a bar whose data is unusable for an asset (as in a simulation)
        quality = self.guard.check(bar_end, recent)
        predictions.loc[predictions["asset"].isin(quality["asset"]), "prediction"] = np.nan
        log_data_quality(logger, quality)
        return BarDecision(
            bar_end=bar_end,
            missing=missing,
            data_complete_at=data_complete_at,
            predictions_at=predictions_at,
            node_rows=node_rows,
            profiling=pd.DataFrame([{"bar_end": bar_end, **item, "decided_at": predictions_at} for item in profile]),
            quality=quality,
            targets=run_sizing(self.config, predictions, pd.DatetimeIndex([bar_end])),
        )

    def _record_orders(self, bar_end: pd.Timestamp, orders: list[dict]) -> None:
        """The bar's orders, before they are sent: a process killed while sending finds them on restart,
        and every order that may reach the venue is in the log dir (a bar decided again keeps the
        first ones: the orders part is merged by client order id)."""
        self._write_inflight(orders)
        orders_table = pd.DataFrame(orders, columns=ORDER_COLUMNS)
        part = self.log_dir.path / "orders" / f"part-{compact(bar_end)}.parquet"
        if part.exists():
            earlier = self.log_dir.read_part("orders", part)
            orders_table = pd.concat([earlier, orders_table]).drop_duplicates("client_order_id", keep="first")
        self.log_dir.write_table("orders", orders_table, bar_end)

    def _orders_failed(self, bar_end: pd.Timestamp, error: BrokerError) -> str:
        """The exchange is down or refuses: the bar is decided, not executed (recorded as skipped too)."""
        reason = f"orders failed: {error}"
        self._write_skipped([BarOutcome(bar_end, "skipped", reason)])
        return reason

    def _record_bar(self, step: BarStep, decision: BarDecision, trade: BarTrade) -> None:
        """Write the traded bar's tables, then the state (the bar is done: a restart goes on after it)."""
        bar_end = decision.bar_end
        decision.latency = {
            "bar_end": bar_end,
            "data_complete_at": decision.data_complete_at,
            "predictions_at": decision.predictions_at,
            "orders_submitted_at": trade.submitted_at,
            "fills_recorded_at": trade.immediate_fills_at,
            "orders": len(trade.orders),
            "missing_assets": ",".join(decision.missing),
        }
        tables = {
            "dag/node_outputs": decision.node_rows,
            "dag/profiling": decision.profiling,
            "target_positions": decision.targets,
            "fills": pd.DataFrame(trade.fills, columns=FILL_COLUMNS),
            "latency": _utc_times(pd.DataFrame([decision.latency], columns=LATENCY_COLUMNS)),
            **step.portfolio.tables(last_bar_only=True),
        }
        if len(decision.quality):
            tables["data_quality"] = decision.quality
        if step.broker.keeps_execution_log:
            executions = step.broker.executions()
            tables["broker/executions"] = executions[executions["bar_end"] == bar_end]
        for name, frame in tables.items():
            self.log_dir.write_table(name, frame, bar_end)
        state = step.portfolio.state(step.broker.open_orders(), bar_end)
        self._save_state(state, trade.immediate_fills)  # the bar is done whatever the check finds
        # every check_every_bars: the exchange against the portfolio (its fills counted after sending
        # included); adopted positions come as fills applied with the next bar, saved with those (a
        # kill before that save: the next start finds the same difference and adopts it then)
        shares = _plus_fills(pd.Series(step.portfolio.shares, index=self.assets), trade.immediate_fills)
        adopted = self.watch.after_bar(step.broker, shares, bar_end + self.bar)
        if adopted:
            trade.immediate_fills.extend(adopted)
            self._save_state(state, trade.immediate_fills)
        self.statement.after_bar(step.broker, bar_end)  # the venue's income and balances (prod)

    def _bar_outputs(
        self, bar_end: pd.Timestamp, outputs: dict[str, pd.DataFrame], missing: list[str]
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Every node's value at ``bar_end`` (long), and the predictions table of the bar."""
        rows = {}
        for name in self.dag.order:
            frame = outputs[name]
            values = (
                frame.to_numpy(dtype="float64")[-1]
                if len(frame.index) and frame.index[-1] == bar_end
                else np.full(len(self.assets), np.nan)
            )
            rows[name] = pd.Series(values, index=self.assets)
        for name in (self.dag.prediction_node, self.dag.volatility_node, self.dag.price_node):
            rows[name] = rows[name].where(~rows[name].index.isin(missing))  # no decision on missing data
        node_rows = pd.DataFrame(
            [
                {"bar_end": bar_end, "node": name, "asset": asset, "value": float(value)}
                for name in self.dag.order
                for asset, value in rows[name].items()
            ]
        )
        predictions = pd.DataFrame(
            {
                "bar_end": bar_end,
                "asset": self.assets,
                "prediction": rows[self.dag.prediction_node].to_numpy(),
                "volatility": rows[self.dag.volatility_node].to_numpy(),
                "price": rows[self.dag.price_node].to_numpy(),
            }
        )
        return node_rows, predictions

    def _missing(self, bar_end: pd.Timestamp) -> tuple[list[str], str]:
        """The assets without their candle of ``bar_end`` yet, and why if the database is unreachable
        (then every asset counts as missing and the wait goes on until the deadline)."""
        try:
            missing = self.database.missing(self.assets, bar_end, self.clock.now())
        except DatabaseUnavailable as error:
            if not self._database_down:  # once per outage, not once per poll
                logger.warning("bar %s: %s; waiting for it until the bar's deadline", bar_end.isoformat(), error)
            self._database_down = True
            return list(self.assets), str(error)
        if self._database_down:
            logger.warning("bar %s: the market database answers again", bar_end.isoformat())
            self._database_down = False
        return missing, ""

    def _skip(self, bar_end: pd.Timestamp, reason: str) -> BarOutcome:
        """Record a bar that was not traded (the holdings stay as they are)."""
        outcome = BarOutcome(bar_end, "skipped", reason)
        self._write_skipped([outcome])
        return outcome

    def _record_skipped(self, outcomes: list[BarOutcome]) -> None:
        """Write the skipped bars not written yet (a day of them is one file, not 1,440)."""
        self._write_skipped([o for o in outcomes if o.status == "skipped" and not o.recorded])

    def _write_skipped(self, pending: list[BarOutcome]) -> None:
        """One part of ``skipped_bars`` for these bars (the bar, and why it was not traded)."""
        if not pending:
            return
        rows = pd.DataFrame([{"bar_end": o.bar_end, "reason": o.reason} for o in pending])
        self.log_dir.write_table("skipped_bars", rows, pending[0].bar_end)
        logger.warning(
            "%d bars skipped (%s to %s): %s", len(pending), pending[0].bar_end, pending[-1].bar_end, pending[0].reason
        )
        for outcome in pending:
            outcome.recorded = True
        self.notifier.send(skipped_alert(self.config, [o.bar_end for o in pending], pending[0].reason))

    def _watch_kill_switch(self, state: str | None, bar_end: pd.Timestamp) -> None:
        """Alert when the kill switch engages (once per engagement: the state seen last is kept beside the
        alerts' rate limit, so the run of each bar in Dagster does not alert again); log its release."""
        if not self.notifier.changed(cause_of("kill switch state", self.config), state):
            return
        if state is None:
            logger.warning("bar %s: the kill switch is released", bar_end)
        else:
            self.notifier.send(kill_switch_alert(self.config, state, bar_end))


@contextmanager
def _session_lock(path: Path):
    """An exclusive lock on the session's log dir, released when the process ends, however it ends. Its
    file lies beside the dir (``.system_log_dir.lock``): preparing a fresh session replaces the dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f".{path.name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _utc_times(frame: pd.DataFrame) -> pd.DataFrame:
    """Time columns as UTC timestamps, even when empty (NaT) in this bar."""
    for column in frame.columns:
        if column.endswith("_at") or column == "bar_end":
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _plus_fills(shares: pd.Series, fills: list[dict]) -> pd.Series:
    shares = shares.copy()
    for fill in fills:
        shares[fill["asset"]] = round(shares[fill["asset"]] + fill["shares"], 12)
    return shares


def _inflight_orders(log_dir: Path) -> list[dict]:
    """The orders in a session's inflight.json (as JSON), none if it has none."""
    path = log_dir / INFLIGHT_FILE
    return json.loads(path.read_text())["orders"] if path.exists() else []


def _with_orders(orders: list[dict], more: list[dict]) -> list[dict]:
    """``orders``, then those of ``more`` whose client order id is not among them (the first kept)."""
    known = {o["client_order_id"] for o in orders}
    return orders + [o for o in more if o["client_order_id"] not in known]


def _order_to_json(order: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in order.items()}


def _order_from_json(record: dict) -> dict:
    """An order or fill read back from JSON: its times as timestamps again (bar_end, order_bar_end,
    submitted_at, filled_at, ...)."""
    out = dict(record)
    for key, value in record.items():
        if value and (key.endswith("bar_end") or key.endswith("_at")):
            out[key] = pd.Timestamp(value)
    return out
