"""A live session through Dagster as the tests run it fast: the daily session job of C1b in paper trading,
in process, on a market 60 times faster than real time (the job reads the market's clock), stopped after
a few market minutes. Its bars are reported as materializations of the live bar asset in the instance
given (an ephemeral one, or the instance a `dagster dev` serves)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance, ExecuteInProcessResult

import prod_system.defs.live
from prod_system.definitions import build_definitions
from prod_system.defs.resources import LogDirResource, SystemResource
from prod_system.defs.resources.live import LiveResource
from prod_system.log_dir import LogDir
from prod_system_tests.kit.live import Market, data_timeout

# the exchange opens five minutes into the day: the session's first bar has closed beyond its data
# timeout when the job starts (it is skipped), the next ones are traded
OPENS = pd.Timestamp("2023-07-21T00:05:00Z")
JOB, OP = "C1b_paper_trading_session_job", "C1b_paper_trading_session"


def run_session_job(
    candles: pd.DataFrame,
    folder: Path,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    minutes: int = 4,
) -> tuple[ExecuteInProcessResult, LogDir]:
    """The session job for ``minutes`` of market time (a few real seconds) on its own market (a SQLite
    database in ``folder``), its runs' log root in ``folder``: its result and the session's log dir."""
    folder.mkdir(parents=True, exist_ok=True)
    market = Market(candles, f"sqlite:///{folder / 'market.db'}", opens=OPENS)
    monkeypatch.setattr(prod_system.defs.live, "RealClock", lambda: market.clock)
    resources = {
        "live": LiveResource(
            database=market.database_url,
            exchange_url=market.exchange.url,
            bar="1m",
            data_timeout_seconds=data_timeout(),
        ),
        "system": SystemResource(profile_memory=False),
        "log_dir": LogDirResource(root=str(folder / "runs")),
    }
    job = build_definitions(["C1b"], resources=resources, investor_model="C1b").resolve_job_def(JOB)
    try:
        run_config = {"ops": {OP: {"config": {"stop_after_minutes": minutes}}}}
        result = job.execute_in_process(run_config=run_config, instance=instance)
    finally:
        market.close()
    (log_dir,) = (folder / "runs").glob("C1b/paper_trading/scheduled/*/system_log_dir")
    return result, LogDir(log_dir)
