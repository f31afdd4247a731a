"""The market data the tests run on: the bundled real candles, their universe, and the config of a
one-day simulation over a snapshot of them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

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


def bundled_klines(asset: str) -> pd.DataFrame:
    """An asset's bundled 1-minute candles as the file has them (open_time, open, high, low, close, volume)."""
    return pd.read_csv(BUNDLED / f"{asset}_USDT.csv.gz", parse_dates=["open_time"])


def aggregate_klines(klines: pd.DataFrame, interval: str) -> pd.DataFrame:
    """Longer klines made from 1-minute ones as Binance makes them: opens at multiples of ``interval``
    (e.g. '5min'), open first, high max, low min, close last, volume summed."""
    grouped = klines.groupby(klines["open_time"].dt.floor(interval), sort=True)
    out = grouped.agg(open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last"))
    out["volume"] = grouped["volume"].sum()
    return out.rename_axis("open_time").reset_index()


def write_klines(directory: Path, klines: dict[str, pd.DataFrame]) -> Path:
    """A csv market-data folder: one ``{ASSET}_USDT.csv.gz`` per asset."""
    directory.mkdir(parents=True, exist_ok=True)
    for asset, frame in klines.items():
        out = frame.assign(open_time=frame["open_time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        out.to_csv(directory / f"{asset}_USDT.csv.gz", index=False)
    return directory
