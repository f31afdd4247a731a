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
    top-level fields. The observer's notebook is off (a kernel start costs seconds in every simulation):
    a test of the report passes ``observer={"notebook": True}``."""
    data = {
        "model": "C1b",
        "start": "2023-07-21T00:00:00Z",
        "end": "2023-07-22T00:00:00Z",
        "market_data": {"source": f"parquet:{snapshot}"},
        "log_root": str(root),
        "observer": {"notebook": False},
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


def write_bad_klines(folder: Path) -> None:
    """Small csv market-data folders of 2023-07-19 00:00-06:00 that a run or a dump must refuse (or, for
    ``k-5m``, 5-minute candles that a 1-minute bar must not be made of): the bad-input table's."""
    btc, eth = (bundled_klines(asset).head(360) for asset in ("BTC", "ETH"))
    five = aggregate_klines(btc, "5min")
    negative = btc.assign(low=btc["low"].where(~btc.index.isin([10, 11, 12]), -btc["low"]))
    folders = {
        "k-5m": {"BTC": five, "ETH": aggregate_klines(eth, "5min")},
        "k-mixed": {"BTC": btc, "ETH": aggregate_klines(eth, "5min")},
        "k-irregular": {"BTC": btc.iloc[::7], "ETH": eth},  # 7 minutes apart
        "k-unaligned": {"BTC": five.assign(open_time=five["open_time"] + pd.Timedelta(minutes=1)), "ETH": eth},
        "k-bad-prices": {"BTC": negative, "ETH": eth},
    }
    for name, klines in folders.items():
        write_klines(folder / name, klines)
