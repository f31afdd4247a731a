"""Live sessions end to end: the local exchange replaying real candles, ingestion into the database,
paper_trading and prod sessions on 1-minute bars, on a clock 60 times faster than real time."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from prod_system.analysis.observer import observe
from prod_system.common.clock import ScaledClock
from prod_system.config import build_config
from prod_system.data.market_db import MarketDatabase
from prod_system.log_dir import LogDir
from prod_system.runs.live import LiveSession, due_bar
from prod_system.trading.portfolio import PortfolioState
from prod_system_tests.kit.accounting import assert_accounting
from prod_system_tests.kit.data import UNIVERSE
from prod_system_tests.kit.exchange import placed_ids, repeats
from prod_system_tests.kit.live import (
    KEY_ENV,
    SECRET_ENV,
    SPEED,
    Market,
    T,
    assert_exchange_holds_the_session,
    data_timeout,
    live_config,
    one_bar_session,
    prod_run,
)

KILLS = int(os.environ.get("PROD_SYSTEM_KILLS", "20"))  # kill -9 and restart this many times in one session


@pytest.mark.parametrize("mode", ["paper_trading", "prod"])
def test_a_warm_start_backfills_the_lookback_and_trades_from_the_first_bar(candles, tmp_path, monkeypatch, mode):
    """An empty database, an exchange with a day of closed history: the backfill before the first bar
    covers the model's lookback (C3a on 1-minute bars: 204 minutes, more than a fixed 2 hours) and
    the data guard's window, and the first bar sends orders."""
    market = Market(candles, f"sqlite:///{tmp_path / 'market.db'}", warm_start=True)
    monkeypatch.setenv(KEY_ENV, market.exchange.api_key)
    monkeypatch.setenv(SECRET_ENV, market.exchange.api_secret)
    try:
        session = LiveSession(live_config(market, tmp_path, mode, bars=2, model="C3a"), market.clock)
        assert session.warm_up == session.dag.lookback == pd.Timedelta(minutes=204)
        report = market.warm_up(session.warm_up)
        first = session.bars[0]
        held = MarketDatabase(market.database_url).snapshot(UNIVERSE, first - session.warm_up, first)
        outcomes = session.run()
    finally:
        market.close()
    assert not report.failed
    starts = held.groupby("asset")["bar_start"].min()
    assert (starts <= first - session.warm_up).all() and set(starts.index) == set(UNIVERSE)
    assert outcomes[0].status == "traded" and outcomes[0].orders > 0, outcomes[0]


def test_paper_and_prod_sessions_trade_the_same_targets(market, tmp_path):
    """Both live modes on the same data at the same time: identical target positions; prod's orders
    reach the exchange, whose positions match the prod portfolio."""
    sessions = {
        mode: LiveSession(live_config(market, tmp_path, mode), market.clock) for mode in ("paper_trading", "prod")
    }
    outcomes = {}
    threads = [
        threading.Thread(target=lambda m=mode, s=session: outcomes.__setitem__(m, s.run()))
        for mode, session in sessions.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for mode, session in sessions.items():
        assert [o.status for o in outcomes[mode]] == ["traded"] * 5, [(o.status, o.reason) for o in outcomes[mode]]
        logs = LogDir(session.log_dir.path)
        assert len(logs.read_table("portfolio/statistics")) == 5
        log = (session.log_dir.path / "log.txt").read_text()
        assert log.count("bar ") >= 5
        assert "warm-up" not in log  # the database holds the model's whole lookback
    paper = LogDir(sessions["paper_trading"].log_dir.path).read_table("target_positions")
    prod = LogDir(sessions["prod"].log_dir.path).read_table("target_positions")
    assert paper["target_shares"].notna().mean() > 0.9
    pd.testing.assert_frame_equal(paper, prod)
    # prod: every order's fills were counted; the exchange holds what the portfolio (plus the last
    # bar's fills, counted right after sending) holds
    logs = LogDir(sessions["prod"].log_dir.path)
    latency = logs.read_table("latency")
    assert latency["fills_recorded_at"].notna().all()
    assert ((latency["orders_submitted_at"] - latency["data_complete_at"]).dt.total_seconds() < 5 * SPEED).all()
    executions = logs.read_table("broker/executions")
    assert executions["client_order_id"].is_unique and set(executions["status"]) == {"closed"}
    # the identity net of costs in both modes: the config's taker fee on paper, the exchange's in prod
    fee = sessions["paper_trading"].config.costs.fees.taker
    assert assert_accounting(LogDir(sessions["paper_trading"].log_dir.path), fee)["fees"] > 0
    assert assert_accounting(logs)["fees"] > 0
    # prod against research: the exchange's prices and fees differ from research's, and the gap says by how
    # much each part; only what none of them explains is judged (a new user saw "NOT reconciled: pnl
    # correlation -0.34" and nothing more on such a session)
    report = observe(logs.path)
    summary, parts = report.summary, report.summary["attribution"]
    assert summary["explained"] == ["execution", "fees", "funding", "holdings"]
    assert sum(parts[c] for c in ("execution", "fees", "funding", "holdings", "residual")) == pytest.approx(
        parts["gap"]
    )
    assert summary["reconciled"] and abs(summary["judged"]) <= summary["bound"]
    assert summary["dominant"] in ("execution", "fees", "holdings") and summary["verdict"].startswith("reconciled (")
    assert (report.html.parent / "attribution.parquet").exists()


def test_a_database_short_of_the_lookback_is_said_in_the_log(candles, tmp_path):
    """Ten minutes of history for a model that looks back hours: the session trades on, and log.txt
    says once, at its first bar, that early predictions will be missing (docs/log_dir.md)."""
    short = Market(candles[candles["bar_start"] >= T - pd.Timedelta(minutes=10)], f"sqlite:///{tmp_path / 'm.db'}")
    try:
        session = LiveSession(live_config(short, tmp_path, "paper_trading", bars=2), short.clock)
        session.run()
    finally:
        short.close()
    log = (session.log_dir.path / "log.txt").read_text()
    assert log.count("early predictions will be missing") == 1, log
    assert f"candles from {(T - pd.Timedelta(minutes=10)).isoformat()} only" in log, log


def test_late_data_skips_the_bar_and_the_next_goes_on(market, tmp_path, reliability):
    """The exchange's klines fail for a while: the bar whose candles never arrive in time is skipped,
    with the reason; the next bar trades from the true holdings."""
    config = live_config(
        market, tmp_path, "paper_trading", bars=4, live={"data_timeout_seconds": data_timeout(), "poll_seconds": 0.01}
    )
    first_bar = config.start + pd.Timedelta(minutes=1)
    outage = [{"endpoint": "GET /fapi/v1/klines", "kind": "server_error"}]
    session = LiveSession(config, market.clock)

    def on_bar(outcome):
        if outcome.bar_end == first_bar:
            market.exchange.set_faults(outage)  # the next bar's candles will not arrive
        elif outcome.status == "skipped":
            market.exchange.set_faults([])

    session.on_bar = on_bar
    outcomes = session.run()
    statuses = [o.status for o in outcomes]
    assert statuses[0] == "traded" and "skipped" in statuses and statuses[-1] == "traded", statuses
    skipped = LogDir(session.log_dir.path).read_table("skipped_bars")
    assert skipped["reason"].str.contains("no candle by").all()
    reliability(
        "market_data",
        "candles late (klines failing)",
        injected=statuses.count("skipped"),
        traded_on_it=0,
        outcome=f"{len(skipped)} bar(s) skipped with the reason; the next traded",
    )


def test_reconcile_a_session_that_started_from_an_empty_database(candles, tmp_path):
    """Issue 12: a paper session on an empty market database (no warm-up: its first bars place no
    order, their parts of ``orders`` are empty), then `prod-system reconcile`, over the session and over
    its opening bars where nothing traded: a verdict and a report each time (exit 0, or 3 if they
    diverge), never an unexpected failure, and no RuntimeWarning (no correlation of flat PnLs)."""
    market = Market(candles, f"sqlite:///{tmp_path / 'market.db'}", history=False)
    root = tmp_path / "runs"
    try:
        # the candles known when the session starts: those since the exchange opened at T. C1b predicts
        # once int(0.8 * vol_window) returns are known before the bar: with this window, from the
        # session's third bar (its first two place no order)
        known = int((market.clock.now().floor("1min") - T) / pd.Timedelta(minutes=1))
        params = {"vol_window": math.ceil((known + 1) / 0.8), "horizon": 1}
        live = {"data_timeout_seconds": data_timeout(), "poll_seconds": 0.01}
        config = live_config(market, root, "paper_trading", bars=6, model_params=params, live=live)
        outcomes = LiveSession(config, market.clock).run()
    finally:
        market.close()
    placed = [(o.status, o.orders) for o in outcomes]
    assert placed[0] == ("traded", 0) and any(n > 0 for _, n in placed), [(o.status, o.reason) for o in outcomes]
    command = [sys.executable, "-m", "prod_system.cli", "reconcile", "--model", "C1b", "--root", str(root)]
    command += ["--market-data", market.database_url]
    opening = ["--start", config.start.isoformat(), "--end", (config.start + 2 * config.bar_delta).isoformat()]
    for window in ([], opening):
        done = subprocess.run(command + window, capture_output=True, text=True, timeout=300)
        assert done.returncode in ((0,) if window else (0, 3)), done.stdout + done.stderr  # flat opening: 0
        assert "RuntimeWarning" not in done.stderr and "unexpected" not in done.stderr, done.stderr
        (report,) = [line.split("report:", 1)[1].strip() for line in done.stdout.splitlines() if "report:" in line]
        assert Path(report).is_file()


@pytest.mark.wall_clock
def test_kill_and_restart_sends_no_order_twice_and_loses_no_fill(candles, tmp_path, reliability):
    """`prod-system run` in prod against the local exchange, killed with SIGKILL at random points of
    its bars (at least 20 times) and started again with the same command: one session, resumed each
    time; every bar traded or recorded as skipped; every order on the exchange is in the log dir,
    once; the exchange holds exactly what the portfolio holds."""
    speed = 30.0  # a market minute every 2 s: a kill lands anywhere in a bar, start-up included
    market = Market(candles, f"sqlite:///{tmp_path / 'market.db'}", speed=speed)
    root = tmp_path / "runs"
    command, env = prod_run(market, root, "50m")
    rng = random.Random(int(os.environ.get("PROD_SYSTEM_KILL_SEED", "7")))  # other seeds: other kill points
    kills = 0
    try:
        while kills < KILLS:
            process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(rng.uniform(2.5, 5.5))
            if process.poll() is not None:
                break  # the session is over
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            kills += 1
        final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stderr[-2000:]
        assert "resuming the unfinished session" in final.stderr
    finally:
        market.close()
    assert kills == KILLS
    (session,) = list(root.glob("C1b/prod/manual/*/system_log_dir"))
    logs = LogDir(session)
    stats = logs.read_table("portfolio/statistics")
    assert stats["bar_end"].is_unique and len(stats) >= 3
    skipped = logs.read_table("skipped_bars") if (session / "skipped_bars").exists() else pd.DataFrame()
    accounted = set(stats["bar_end"]) | set(skipped.get("bar_end", []))
    assert len(accounted) >= 48, f"{len(accounted)} of 50 bars traded or recorded as skipped"
    assert stats["bar_end"].max() == pd.Timestamp(json.loads((session / "state.json").read_text())["bar_end"])
    on_exchange, recorded = assert_exchange_holds_the_session(market.exchange, session)
    reliability(
        "process",
        "kill -9 at random points of bars, restart",
        injected=kills,
        orders=len(on_exchange),
        duplicated=repeats(on_exchange),
        lost=len(set(on_exchange) - recorded),
        matches_exchange=True,
        outcome=f"{len(accounted)} of 50 bars traded or recorded as skipped",
    )


@pytest.mark.wall_clock
def test_killed_between_sending_and_recording_an_order_the_restart_finds_it(candles, tmp_path, reliability):
    """Binance accepts a filled order's client id again, so nothing but the broker stands between a
    restart and a second order. `prod-system run` (prod) SIGKILLs itself right after the exchange
    accepted one of a bar's orders and before it recorded the answer (the `order_sent` failpoint), and
    is started again within the same bar: it must find that order by its client id and not send it
    again, send the bar's orders that never reached the exchange, and trade the bar."""
    seed = int(os.environ.get("PROD_SYSTEM_RESTART_SEED", "11"))
    print(f"restart seed {seed} (PROD_SYSTEM_RESTART_SEED)")
    speed = 4.0  # a bar is 15 s: a restart has the bar's 58 s of data timeout (14.5 s) to come back in
    market = Market(candles, f"sqlite:///{tmp_path / 'market.db'}", speed=speed)
    root = tmp_path / "runs"
    config = tmp_path / "session.yaml"
    config.write_text("live:\n  data_timeout_seconds: 58\n  poll_seconds: 0.05\n")
    command, env = prod_run(market, root, "3m", "--config", str(config))
    rng = random.Random(seed)
    killed_in: list[pd.Timestamp] = []
    try:
        for _ in range(3):
            armed = {**env, "PROD_SYSTEM_FAILPOINT": f"order_sent:{rng.randint(1, 6)}"}
            process = subprocess.run(command, env=armed, capture_output=True, text=True, timeout=240)
            if process.returncode == 0:
                break  # the session ended before the failpoint was due
            assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
            (session,) = list(root.glob("C1b/prod/manual/*/system_log_dir"))
            inflight = json.loads((session / "inflight.json").read_text())["orders"]
            killed_in.append(pd.Timestamp(inflight[0]["bar_end"]))
        final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
        assert final.returncode == 0, final.stderr[-2000:]
    finally:
        market.close()
    assert len(killed_in) >= 2, f"seed {seed}: the failpoint fired {len(killed_in)} times"
    logs = LogDir(session)
    traded = set(logs.read_table("portfolio/statistics")["bar_end"])
    assert set(killed_in) <= traded, f"seed {seed}: a bar killed mid-sending was not traded after the restart"
    on_exchange, recorded = assert_exchange_holds_the_session(market.exchange, session)
    assert repeats(on_exchange) == 0
    reliability(
        "process",
        "kill -9 between an order sent and recorded, restart in the same bar (Binance's client-id rule)",
        injected=len(killed_in),
        orders=len(on_exchange),
        duplicated=repeats(on_exchange),
        lost=len(set(on_exchange) - recorded),
        matches_exchange=True,
        outcome=f"{len(killed_in)} bars killed after an order reached the exchange; each traded on restart",
    )


def test_a_session_killed_in_its_last_bar_is_resumed_or_carried_with_its_orders(tmp_path):
    """Killed while sending its last bar's orders (inflight.json written, state.json a bar behind): a
    restart before that bar's data timeout resumes the session to trade the bar; a later one, a
    finished session, starts a new session that expects those orders on the venue (open orders to
    look up), so that the venue and the portfolio keep agreeing."""
    from prod_system.runs.live import INFLIGHT_FILE, unfinished_session

    start, end = pd.Timestamp("2023-07-21T06:00:00Z"), pd.Timestamp("2023-07-21T06:03:00Z")
    common = {"model": "C1b", "run_mode": "paper_trading", "bar": "1m", "log_root": str(tmp_path)}
    common |= {"market_data": {"source": f"sqlite:///{tmp_path / 'market.db'}"}, "live": {"data_timeout_seconds": 40}}
    killed = LiveSession(build_config({**common, "start": start, "end": end}), ScaledClock(start, 1.0))
    killed.log_dir.prepare(killed.config)
    held = pd.Series(0.0, index=UNIVERSE)
    held["BTC"] = 0.5
    last = {"unapplied_fills": [], "bar_end": "2023-07-21T06:02:00+00:00", "shares": held.to_dict()}
    last |= {"notional": (held * 30000).to_dict(), "cash": 985000.0, "open_orders": []}
    (killed.log_dir.path / "state.json").write_text(json.dumps(last))
    order = {"bar_end": end.isoformat(), "asset": "ETH", "client_order_id": "ps-x-2307210603-ETH"}
    order |= {"side": "buy", "quantity": 2.0, "decision_price": 1890.0}
    (killed.log_dir.path / INFLIGHT_FILE).write_text(json.dumps({"orders": [order]}))
    find = lambda now: unfinished_session(tmp_path, "C1b", "paper_trading", "manual", now)  # noqa: E731
    assert find(end + pd.Timedelta(seconds=39)) == killed.log_dir.path  # its last bar can still trade
    assert find(end + pd.Timedelta(seconds=40)) is None
    finished = {**last, "bar_end": end.isoformat()}  # a session that traded its last bar: never resumed
    (killed.log_dir.path / "state.json").write_text(json.dumps(finished))
    assert find(end + pd.Timedelta(seconds=10)) is None
    (killed.log_dir.path / "state.json").write_text(json.dumps(last))
    later = pd.Timestamp("2023-07-21T06:10:00Z")
    new = LiveSession(build_config({**common, "start": later, "end": later + pd.Timedelta(minutes=3)}), None)
    new.log_dir.prepare(new.config)
    new._carry_over()
    state, _ = new.load_state()
    assert state.shares["BTC"] == 0.5 and state.cash == 985000.0
    assert [o["client_order_id"] for o in state.open_orders] == ["ps-x-2307210603-ETH"]


def test_exchange_down_records_the_bar_and_the_session_goes_on(market, tmp_path, reliability):
    """prod with the exchange refusing every order for one bar: the bar is recorded with the reason,
    nothing is lost, and the next bars trade."""
    config = live_config(market, tmp_path, "prod", bars=4)
    second_bar = config.start + pd.Timedelta(minutes=2)
    session = LiveSession(config, market.clock)
    down = [{"endpoint": "POST /fapi/v1/order", "kind": "server_error", "status": 503}]

    def on_bar(outcome):
        if outcome.bar_end == second_bar - pd.Timedelta(minutes=1):
            market.exchange.set_faults(down)
        elif outcome.bar_end == second_bar:
            market.exchange.set_faults([])

    session.on_bar = on_bar
    session.broker_factory = _fast_retries(session.broker_factory)
    outcomes = session.run()
    failed = [o for o in outcomes if o.reason.startswith("orders failed")]
    assert [o.bar_end for o in failed] == [second_bar]
    assert outcomes[-1].status == "traded" and outcomes[-1].reason == ""
    skipped = LogDir(session.log_dir.path).read_table("skipped_bars")
    assert list(skipped["bar_end"]) == [second_bar] and "gave up after" in skipped["reason"].iloc[0]
    placed = placed_ids(market.exchange)
    reliability(
        "exchange",
        "exchange down for a bar (every order 503)",
        injected=1,
        duplicated=repeats(placed),
        lost=0,
        matches_exchange=None,
        outcome="the bar recorded as skipped with the reason; the next bars traded",
    )


def _fast_retries(factory):
    def make(reader, bar):
        broker = factory(reader, bar)
        broker.config = broker.config.model_copy(update={"max_attempts": 2, "backoff_seconds": 0.01})
        return broker

    return make


def test_state_round_trips_orders_and_fills():
    """What a restart reads back from state.json is what was written (times as timestamps again)."""
    from prod_system.runs.live import _order_from_json, _order_to_json

    fill = {
        "bar_end": pd.Timestamp("2023-07-21T06:02:00Z"),
        "asset": "BTC",
        "client_order_id": "ps-00000000-2307210601-BTC",
        "order_bar_end": pd.Timestamp("2023-07-21T06:01:00Z"),
        "shares": 0.5,
        "price": 29_800.0,
        "notional": 14_900.0,
        "fee": 5.96,
        "filled_at": pd.Timestamp("2023-07-21T06:01:10Z"),
    }
    assert _order_from_json(json.loads(json.dumps(_order_to_json(fill)))) == fill


def test_state_round_trips_the_settlements_already_funded(tmp_path):
    """A restart reads back, per asset, the last funding settlement booked: it never pays one twice."""
    session = one_bar_session(tmp_path, f"sqlite:///{tmp_path / 'market.db'}")
    session.log_dir.path.mkdir(parents=True)
    state = PortfolioState.empty(session.assets, 1_000_000.0)
    state.funded_until = {"BTC": pd.Timestamp("2023-07-21T08:00:00Z"), "ETH": pd.Timestamp("2023-07-21T04:00:00Z")}
    session._save_state(state, [])
    loaded, _ = session.load_state()
    assert loaded.funded_until == state.funded_until
    assert all(str(time.tz) == "UTC" for time in loaded.funded_until.values())


@pytest.mark.wall_clock
def test_database_lost_and_restored(candles, postgres_url, tmp_path, monkeypatch, reliability):
    """prod on PostgreSQL through a proxy that is cut for a few bars and restored: the bars without
    the database are recorded as skipped with the reason, nothing crashes, the session trades again
    once the database answers, and the exchange still holds exactly what the portfolio holds."""
    from sqlalchemy.engine import make_url

    from prod_system_tests.kit.tcp_proxy import TcpProxy

    speed = 30.0
    market = Market(candles, postgres_url, speed=speed)
    server = make_url(postgres_url)
    proxy = TcpProxy(server.host or "127.0.0.1", server.port or 5432)
    through_proxy = server.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    monkeypatch.setenv(KEY_ENV, market.exchange.api_key)
    monkeypatch.setenv(SECRET_ENV, market.exchange.api_secret)
    config = live_config(market, tmp_path, "prod", bars=10, market_data={"source": through_proxy})
    session = LiveSession(config, market.clock)
    # longer than a bar's data timeout plus two bars, so that some bars wait it out and are skipped
    cut = config.start + pd.Timedelta(minutes=2, seconds=30)
    outage = (cut, cut + pd.Timedelta(seconds=config.live.data_timeout_seconds) + pd.Timedelta(minutes=3))

    def partition() -> None:
        market.clock.wait_until(outage[0])
        proxy.cut()
        market.clock.wait_until(outage[1])
        proxy.restore()

    cutter = threading.Thread(target=partition, daemon=True)
    cutter.start()
    try:
        outcomes = session.run()
    finally:
        cutter.join(timeout=60)
        market.close()
        proxy.close()
    by_bar = {o.bar_end: o for o in outcomes}
    down = [o for o in outcomes if o.status == "skipped"]
    assert down and all("unreachable" in o.reason for o in down), [(o.bar_end, o.reason) for o in outcomes]
    assert all(outage[0] < o.bar_end <= outage[1] + pd.Timedelta(minutes=1) for o in down)
    assert by_bar[config.end].status == "traded"  # trading again after the outage
    assert by_bar[config.start + pd.Timedelta(minutes=2)].status == "traded"  # and before it
    log = (session.log_dir.path / "log.txt").read_text()
    assert "unreachable" in log and "answers again" in log and "Traceback" not in log
    on_exchange, recorded = assert_exchange_holds_the_session(market.exchange, session.log_dir.path)
    reliability(
        "process",
        f"market database (PostgreSQL) connection lost for {(outage[1] - outage[0]).total_seconds() / 60:g} minutes, "
        "restored",
        injected=1,
        orders=len(on_exchange),
        duplicated=repeats(on_exchange),
        lost=len(set(on_exchange) - recorded),
        matches_exchange=True,
        outcome=f"{len(down)} bar(s) skipped 'unreachable'; trading again after",
    )


CLOSE = pd.Timestamp("2026-01-05T10:10:00Z")  # a bar's close; 1-minute bars below


def _at(seconds: float) -> pd.Timestamp:
    return CLOSE + pd.Timedelta(seconds=seconds)


def test_the_bar_sensor_requests_a_closed_bar_once_its_candles_are_in():
    """Without a pre-launch (prelaunch_seconds 0): after the close, once every candle is recorded or
    the data timeout has passed; each bar once."""
    minute = pd.Timedelta(minutes=1)
    complete, waiting = (lambda bar: []), (lambda bar: ["ETH"])
    assert due_bar(_at(2), minute, CLOSE - minute, complete, 30) == (CLOSE, "complete")
    bar, why = due_bar(_at(2), minute, CLOSE - minute, waiting, 30)
    assert bar is None and "ETH" in why
    assert due_bar(_at(31), minute, CLOSE - minute, waiting, 30) == (CLOSE, "timeout: ETH missing")
    assert due_bar(_at(2), minute, CLOSE, complete, 30)[0] is None
    assert due_bar(_at(2), minute, None, complete, 30)[0] == CLOSE


def test_the_bar_sensor_prelaunches_each_bar_once_in_order():
    """With a pre-launch: the bar in progress, ``lead`` seconds before its close, without reading the
    database (the run waits for the candles); a closed bar still in its timeout and never requested
    comes first; one past its timeout is left to the next run, which records it skipped."""
    minute = pd.Timedelta(minutes=1)

    def never(bar):
        raise AssertionError("a pre-launching sensor does not read the database")

    assert due_bar(_at(20), minute, CLOSE, never, 30, 30)[0] is None  # 40 s before the next close
    assert due_bar(_at(30), minute, CLOSE, never, 30, 30)[0] == CLOSE + minute
    assert due_bar(_at(45), minute, CLOSE + minute, never, 30, 30)[0] is None  # once
    assert due_bar(_at(5), minute, CLOSE - minute, never, 30, 30)[0] == CLOSE  # catching up, in order
    assert due_bar(_at(5), minute, None, never, 30, 30)[0] == CLOSE
    assert due_bar(_at(35), minute, CLOSE - minute, never, 30, 30)[0] == CLOSE + minute


def test_the_prelaunch_must_be_under_a_bar(monkeypatch):
    from prod_system.defs.resources.live import LiveResource

    assert LiveResource(bar="1m").prelaunch == 30
    with pytest.raises(ValueError, match=r"live.prelaunch_seconds: 60 s must be under the bar \(1m\)"):
        _ = LiveResource(bar="1m", prelaunch_seconds=60).prelaunch
    monkeypatch.setenv("PROD_SYSTEM_PRELAUNCH_SECONDS", "soon")
    with pytest.raises(ValueError, match="PROD_SYSTEM_PRELAUNCH_SECONDS='soon': expected a number of seconds"):
        LiveResource()
