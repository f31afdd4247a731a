"""Two runs starting the same fresh live session at the same moment (issue 13, item 4 (a)): the session
lock must cover the session's preparation too, else the second one's preparation replaces the first
one's log dir, its lock file included, and both trade every bar."""

from __future__ import annotations

import threading
import time

import pandas as pd

from prod_system.data.market_db import MarketDatabase
from prod_system.log_dir import LogDir
from prod_system_tests.kit.live import BAR_END, MINUTE, candles_of, one_bar_session


def test_two_runs_starting_a_fresh_session_at_once_trade_its_bar_once(candles, tmp_path):
    """Run B starts a fresh session and is held just before it prepares the log dir, until run A has
    entered ``run`` too (and had 2 s to check that the session is fresh and prepare it). Then B
    prepares; A's broker starts once B has prepared (while A trades, if it got that far first). One of
    them trades the bar, the other finds it done; neither fails."""
    db_url = f"sqlite:///{tmp_path / 'market.db'}"
    db = MarketDatabase(db_url)
    db.upsert(
        candles_of(candles, BAR_END - pd.Timedelta(hours=2), BAR_END - MINUTE), BAR_END - pd.Timedelta(seconds=50)
    )
    db.upsert(candles_of(candles, BAR_END - MINUTE, BAR_END), BAR_END + pd.Timedelta(seconds=5))
    db.close()
    a = one_bar_session(tmp_path / "runs", db_url)
    b = one_bar_session(tmp_path / "runs", db_url)
    assert a.log_dir.path == b.log_dir.path
    a_entered, b_preparing, b_prepared = threading.Event(), threading.Event(), threading.Event()
    prepare, a_factory = b.log_dir.prepare, a.broker_factory

    def held_prepare(*args, **kwargs):
        b_preparing.set()
        assert a_entered.wait(timeout=60)
        time.sleep(2.0)  # A checks whether the session is fresh (and prepares it) meanwhile, if it can
        prepare(*args, **kwargs)
        b_prepared.set()

    def a_broker(reader, bar):
        b_prepared.wait(timeout=60)
        return a_factory(reader, bar)

    b.log_dir.prepare, a.broker_factory = held_prepare, a_broker
    results, errors = {}, {}

    def run(name, session, before=None):
        if before:
            before.set()
        try:
            results[name] = session.run()
        except Exception as error:
            errors[name] = error

    threads = {"B": threading.Thread(target=run, args=("B", b))}
    threads["B"].start()
    assert b_preparing.wait(timeout=60)
    threads["A"] = threading.Thread(target=run, args=("A", a, a_entered))
    threads["A"].start()
    for thread in threads.values():
        thread.join(timeout=120)
    assert not errors, errors
    statuses = sorted([o.status for o in results["A"]] + [o.status for o in results["B"]])
    assert statuses == ["traded"], {name: [(o.status, o.reason) for o in r] for name, r in results.items()}
    logs = LogDir(a.log_dir.path)
    assert logs.read_table("portfolio/statistics")["bar_end"].tolist() == [BAR_END]
