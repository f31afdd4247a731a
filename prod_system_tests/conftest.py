"""Shared fixtures: the bundled real candles, a snapshot of them, one simulated day, a local S3 server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from prod_system.core.config import SystemConfig, build_config
from prod_system.core.market_data import load_source, select_window, write_snapshot
from prod_system.core.simulation import simulate

BUNDLED = Path(__file__).resolve().parents[1] / "prod_system" / "data" / "binance_futures_1m"
UNIVERSE = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "DOT", "MATIC"]


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


def sim_config(snapshot: Path, root: Path, **overrides) -> SystemConfig:
    data = {
        "model": "C1b",
        "start": "2023-07-21T00:00:00Z",
        "end": "2023-07-22T00:00:00Z",
        "market_data": {"source": f"parquet:{snapshot}"},
        "log_root": str(root),
    }
    data.update(overrides)
    return build_config(data)


@pytest.fixture(scope="session")
def simulated_day(tmp_path_factory, snapshot):
    """One day of C1b simulated in the pure core: (config, log dir path)."""
    config = sim_config(snapshot, tmp_path_factory.mktemp("runs"))
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
