"""Alerts end to end: a paper session on a crafted market database, with bars skipped for missing
candles, the kill switch engaged between two runs of the session, and a divergence from research planted
in its log dir, reaches a real HTTP endpoint on loopback (apprise's json://) with exactly one message per
cause: the same event twice is one message, the switch still engaged at the next run is not announced
again, and no secret (the exchange's API secret, the alert URL's own token) is in any message."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from prod_system.alerts import STATE_FILE, Alert, AlertKind, Notifier
from prod_system.analysis.alerting import send_observer_alerts
from prod_system.analysis.observer import observe
from prod_system.cli import main as cli_main
from prod_system.cli.errors import EXIT_FAILED
from prod_system.config import build_config
from prod_system.data.market_db import MarketDatabase
from prod_system.log_dir import LogDir
from prod_system.runs.live import LiveSession
from prod_system_tests.kit.alerts import URLS_ENV, AlertEndpoint
from prod_system_tests.kit.data import UNIVERSE
from prod_system_tests.kit.live import ReadAdvancingClock, candles_of

T = pd.Timestamp("2023-07-21T10:00:00Z")
FIVE = pd.Timedelta(minutes=5)
SECRET = "sekr3t-api-marker"  # BINANCE_API_SECRET
TOKEN = "urltok3n-marker"  # the alert URL's own password


def record_candles(database: MarketDatabase, candles: pd.DataFrame) -> None:
    """Six hours of history, then each minute's candles known 5 s after its close; ETH's never come for
    the minutes of the session's first two bars (both skipped, for the same reason, before anything was
    held: a skipped bar with orders executing diverges from research, which fills them on time)."""
    start = T - 2 * FIVE
    database.upsert(candles_of(candles, start - pd.Timedelta(hours=6), start), start)
    for close in pd.date_range(start + pd.Timedelta(minutes=1), T + 4 * FIVE, freq="1min"):
        rows = candles_of(candles, close - pd.Timedelta(minutes=1), close)
        if close <= T:
            rows = rows[rows["asset"] != "ETH"]
        database.upsert(rows, close + pd.Timedelta(seconds=5))


def session(root, url, kill_file, clock_from: pd.Timestamp, on_bar=None) -> LiveSession:
    config = build_config(
        {
            "model": "C1b",
            "run_mode": "paper_trading",
            "universe": UNIVERSE,
            "start": (T - 2 * FIVE).isoformat(),
            "end": (T + 4 * FIVE).isoformat(),
            "market_data": {"source": url},
            "log_root": str(root),
            "live": {"data_timeout_seconds": 20, "poll_seconds": 0.001, "on_missing": "skip_bar"},
            "risk": {"kill_switch_file": str(kill_file)},
            "observer": {"notebook": False, "min_balance": 1e12},  # any balance is below it
            "profile_memory": False,
        }
    )
    return LiveSession(config, ReadAdvancingClock(clock_from, pd.Timedelta(milliseconds=200)), on_bar=on_bar)


@pytest.fixture
def endpoint(monkeypatch):
    with AlertEndpoint() as running:
        monkeypatch.setenv(URLS_ENV, running.url(TOKEN))
        monkeypatch.setenv("BINANCE_API_SECRET", SECRET)
        yield running


def test_a_paper_session_alerts_each_cause_once_without_secrets(candles, tmp_path, endpoint):
    url = f"sqlite:///{tmp_path / 'market.db'}"
    record_candles(MarketDatabase(url), candles)
    # the operator's kill-switch file, in a folder whose name holds both secrets (were it ever printed)
    kill_file = tmp_path / f"{SECRET}_{TOKEN}" / "kill"
    kill_file.parent.mkdir()

    def engage(outcome) -> None:
        if outcome.bar_end == T + FIVE:
            kill_file.write_text("stop")

    first = session(tmp_path, url, kill_file, T - 2 * FIVE - pd.Timedelta(seconds=1), on_bar=engage)
    outcomes = first.run(until=T + 2 * FIVE)  # 09:55 and 10:00 skipped (no ETH), 10:10: the switch seen
    assert [o.status for o in outcomes] == ["skipped", "skipped", "traded", "traded"], outcomes
    # the next run of the session (a new process: a new notifier) still sees the switch engaged
    second = session(tmp_path, url, kill_file, T + 2 * FIVE + pd.Timedelta(minutes=4))
    assert [o.status for o in second.run()] == ["traded", "traded"]

    # a divergence planted in the log dir: BTC's target at 10:15 is not what its prediction sizes to
    logs = LogDir(first.log_dir.path)
    targets = logs.read_table("target_positions")
    bar = targets[targets["bar_end"] == T + 3 * FIVE].copy()
    bar.loc[bar["asset"] == "BTC", "target_notional"] += 1000.0
    logs.write_table("target_positions", bar, T + 3 * FIVE)
    # the observer (over the bars after the skipped ones: the reconciliation counts a skipped bar's missing
    # holdings row as a divergence too), then its next look finding the same divergence and balance
    report = observe(logs.path, start=T, now=T + 4 * FIVE + pd.Timedelta(minutes=1))
    assert send_observer_alerts(report.summary, report.config) == 0
    assert not report.summary["reconciled"]
    assert report.summary["first_divergence"]["asset"] == "BTC"

    messages = endpoint.wait_for(5, timeout=0.5)  # (sent synchronously: a fifth would be here already)
    subject = "C1b paper_trading"
    assert sorted(m["title"] for m in messages) == sorted(
        f"prod_system {kind}: {subject}" for kind in ("bar skipped", "kill switch", "divergence", "threshold")
    ), [m["title"] for m in messages]
    text = {m["title"].split(": ")[0].removeprefix("prod_system "): m["message"] for m in messages}
    assert text["bar skipped"].startswith(f"bar {(T - FIVE).isoformat()} skipped: no candle by")
    assert text["bar skipped"].endswith("for ETH")
    assert "kill switch engaged: stop" in text["kill switch"] and (T + 2 * FIVE).isoformat() in text["kill switch"]
    assert "first divergence at 2023-07-21T10:15:00+00:00 on BTC (target)" in text["divergence"]
    assert "below min_balance" in text["threshold"]
    for message in messages:
        body = json.dumps({k: v for k, v in message.items() if not k.startswith("_")})
        assert SECRET not in body and TOKEN not in body, body
    assert messages[0]["_headers"]["Authorization"].startswith("Basic ")  # the URL's token was used, not shown
    # a cause holding a secret (an error's text, say) is scrubbed before the rate limit's file keeps it
    Notifier.for_run(first.config).send(Alert(AlertKind.RUN_FAILED, "C1b", "failed", f"run failed|{SECRET}|{TOKEN}"))
    state = (tmp_path / STATE_FILE).read_bytes()
    assert b"run failed|***|***" in state and SECRET.encode() not in state and TOKEN.encode() not in state


def test_a_cli_session_that_stops_on_an_error_alerts_run_failed(tmp_path, endpoint, monkeypatch):
    """`prod-system run` in prod without the exchange's keys stops at once (exit 1): one RUN_FAILED
    message with the error line the command printed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BINANCE_API_KEY", raising=False)
    monkeypatch.delenv("BINANCE_API_SECRET", raising=False)
    args = ["run", "--model", "C1b", "--mode", "prod", "--duration", "2m", "--bar", "1m", "--root", "runs"]
    done = CliRunner().invoke(cli_main, [*args, "--exchange-url", "http://127.0.0.1:9", "--no-ingest"])
    assert done.exit_code == EXIT_FAILED, done.output
    (message,) = endpoint.wait_for(1)
    assert message["title"] == "prod_system run failed: C1b prod" and message["type"] == "failure"
    assert message["message"].startswith("the prod session of C1b (")
    assert (
        "failed: BrokerError: set the environment variables BINANCE_API_KEY, BINANCE_API_SECRET" in message["message"]
    )
