"""The market data the tests run on: the bundled real candles, their universe, and the config of a
one-day simulation over a snapshot of them."""

from __future__ import annotations

from pathlib import Path

from prod_system.config import SystemConfig, build_config

BUNDLED = Path(__file__).resolve().parents[2] / "prod_system" / "data" / "binance_futures_1m"
UNIVERSE = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "DOT", "MATIC"]


def sim_config(snapshot: Path, root: Path, **overrides) -> SystemConfig:
    """C1b simulated over 2023-07-21 on ``snapshot``, logging under ``root``; ``overrides`` replace
    top-level fields."""
    data = {
        "model": "C1b",
        "start": "2023-07-21T00:00:00Z",
        "end": "2023-07-22T00:00:00Z",
        "market_data": {"source": f"parquet:{snapshot}"},
        "log_root": str(root),
    }
    data.update(overrides)
    return build_config(data)
