"""Shared fixtures: the bundled real candles, a snapshot of them, and one simulated day."""

from __future__ import annotations

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
