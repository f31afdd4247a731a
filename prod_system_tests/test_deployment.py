"""The production Dagster instance of deploy/production/dagster.yaml, for real: PostgreSQL storage
(dagster-postgres) and `dagster-daemon run` with the repository's workspace. A simulation job is launched
with `dagster job launch` (queued), the daemon dequeues and launches it, and the run, its events and the
daemon's heartbeats are read back from PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import psycopg
import pytest
from dagster import DagsterInstance, DagsterRunStatus

from prod_system.log_dir import LogDir
from prod_system_tests.kit.dagster_ui import REPO

PRODUCTION_YAML = REPO / "deploy" / "production" / "dagster.yaml"


@pytest.mark.wall_clock
def test_production_instance_on_postgres_with_the_daemon(postgres_url, tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PRODUCTION_YAML, home / "dagster.yaml")
    env = {
        "DAGSTER_HOME": str(home),
        # dagster-postgres speaks psycopg2 (SQLAlchemy 2.1 would pick psycopg 3 for a bare postgresql://)
        "PROD_SYSTEM_DAGSTER_POSTGRES_URL": postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1),
        "PROD_SYSTEM_ROOT": str(tmp_path / "runs"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    workspace = str(REPO / "workspace.yaml")
    # the deployment's first step: create Dagster's schema, once, before any service starts
    migrate = subprocess.run(["dagster", "instance", "migrate"], cwd=home, capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    daemon_log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        ["dagster-daemon", "run", "-w", workspace],
        cwd=home,
        stdout=daemon_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        tags = {"dagster/asset_partition_range_start": "2023-07-21", "dagster/asset_partition_range_end": "2023-07-21"}
        launched = subprocess.run(
            ["dagster", "job", "launch", "-w", workspace, "-j", "C1b_simulation_job", "--tags", json.dumps(tags)],
            cwd=home,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert launched.returncode == 0, launched.stdout + launched.stderr
        instance = DagsterInstance.get()
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        (run,) = instance.get_runs()
        deadline = time.monotonic() + 240
        while not run.is_finished and time.monotonic() < deadline:
            time.sleep(1)
            run = instance.get_run_by_id(run.run_id)
        assert run.status == DagsterRunStatus.SUCCESS, (tmp_path / "daemon.log").read_text()[-3000:]
        heartbeats = set(instance.get_daemon_heartbeats())
        instance.dispose()
    finally:
        os.killpg(daemon.pid, signal.SIGINT)
        daemon.wait(timeout=60)
        daemon_log.close()

    # the daemon ran the sensors, schedules, run queue and backfills of this instance
    assert {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR", "BACKFILL"} <= heartbeats
    # everything Dagster knows is in PostgreSQL, not in DAGSTER_HOME
    with psycopg.connect(postgres_url) as connection:
        runs = connection.execute("SELECT run_id, status FROM runs").fetchall()
        materialized = connection.execute(
            "SELECT count(DISTINCT asset_key) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
        ).fetchone()[0]
    assert runs == [(run.run_id, "SUCCESS")]
    assert materialized == 8  # the C1b simulation group, one day
    assert not list(home.glob("**/*.db"))
    # and the run wrote its system log dir
    (log_dir,) = (tmp_path / "runs").glob("C1b/simulation/*/*/system_log_dir")
    assert len(LogDir(log_dir).read_table("portfolio/statistics")) == 288
    daemon_output = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in daemon_output and " - ERROR - " not in daemon_output, daemon_output[-3000:]
