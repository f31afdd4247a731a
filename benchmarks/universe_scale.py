"""Simulation speed by universe size: one day through Dagster for 8, 100 and 300 assets.

Binance's USDT-M list has about 300 perpetuals. The candles are synthetic: each asset's 1-minute
returns are bootstrapped (whole days, so intraday shape stays) from the bundled real candles, and
its exchange rules are XRP's (bundled), written as an instruments file the run reads (--instruments). Each
measurement is a fresh `prod-system simulate` process (CLI start to log dir written): wall time,
CPU time and the process's own peak RSS; sizes alternate within each repeat, figures are medians.

    python benchmarks/universe_scale.py [--assets 8 100 300] [--repeats 3] [--engine dagster]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DAY = pd.Timestamp("2023-07-21T00:00:00Z")
sys.path.insert(0, str(REPO))


def synthetic_candles(count: int, seed: int = 7) -> pd.DataFrame:
    """``count`` assets of one day (plus the day before, the models' warm-up) of 1-minute candles."""
    from prod_system.data import BUNDLED_CANDLES
    from prod_system.data.sources import load_source

    real = load_source(f"csv:{BUNDLED_CANDLES}", ["BTC", "ETH", "SOL", "XRP"], pd.Timedelta(0))
    real = real.sort_values(["asset", "bar_start"])
    returns = real.groupby("asset")["close"].pct_change().dropna().to_numpy()
    rng = np.random.default_rng(seed)
    opens = pd.date_range(DAY - pd.Timedelta(days=1), DAY + pd.Timedelta(days=1), freq="1min", inclusive="left")
    frames = []
    for i in range(count):
        path = 10 ** rng.uniform(-2, 4) * np.cumprod(1 + rng.choice(returns, len(opens)))
        spread = np.abs(rng.choice(returns, len(opens)))
        open_ = np.concatenate([[path[0]], path[:-1]])
        frames.append(
            pd.DataFrame(
                {
                    "asset": f"S{i:03d}",
                    "bar_start": opens,
                    "open": open_,
                    "high": np.maximum(open_, path) * (1 + spread),
                    "low": np.minimum(open_, path) * (1 - spread),
                    "close": path,
                    "volume": rng.lognormal(8, 1, len(opens)),
                }
            )
        )
    candles = pd.concat(frames, ignore_index=True)
    candles["bar_end"] = candles["bar_start"] + pd.Timedelta(minutes=1)
    candles["knowledge_ts"] = candles["bar_end"] + pd.Timedelta(seconds=10)
    return candles


def instruments_file(assets: list[str], path: Path) -> Path:
    """Rules for the synthetic assets: the bundled XRP's, renamed."""
    from dataclasses import replace

    from prod_system.data.instruments import bundled_instruments

    bundled = bundled_instruments()
    xrp = bundled.get("XRP")
    rules = {asset: replace(xrp, asset=asset, symbol=f"{asset}USDT") for asset in assets}
    return replace(bundled, rules=rules, source="synthetic: XRP's bundled rules, renamed").write(path)


def measure(args: list[str], env: dict) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (GB) of one CLI process (its own rusage, via wait4)."""
    began = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "prod_system.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"failed: {' '.join(args)}\n{process.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, nargs="+", default=[8, 100, 300])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engine", choices=["dagster", "core"], default="dagster")
    parser.add_argument("--model", default="C3a")
    options = parser.parse_args()
    from prod_system.data.market_data import write_snapshot

    work = Path(tempfile.mkdtemp(prefix="universe_scale_"))
    env = {**os.environ, "DAGSTER_HOME": str(work / "dagster_home")}
    (work / "dagster_home").mkdir()
    cases = {}
    for count in options.assets:
        candles = synthetic_candles(count)
        snapshot = write_snapshot(candles, work / f"snapshot_{count}.parquet")
        assets = sorted(candles["asset"].unique())
        instruments = instruments_file(assets, work / f"instruments_{count}.json")
        cases[count] = [
            "simulate",
            "--engine",
            options.engine,
            "--instruments",
            str(instruments),
            "--model",
            options.model,
            "--market-data",
            str(snapshot),
            "--universe",
            ",".join(assets),
            "--start",
            DAY.isoformat(),
            "--end",
            (DAY + pd.Timedelta(days=1)).isoformat(),
            "--overwrite",
        ]
    results: dict[int, list[tuple[float, float, float]]] = {count: [] for count in cases}
    for repeat in range(options.repeats):
        for count, args in cases.items():
            results[count].append(measure([*args, "--root", str(work / f"runs_{count}")], env))
            print(f"repeat {repeat + 1}: {count} assets {results[count][-1][0]:.1f} s", flush=True)
    print(f"\n{options.model}, one day of 5-minute bars from 1-minute candles, engine {options.engine}:")
    print("| assets | wall (median) | CPU (median) | peak RSS (max) |")
    print("|---|---|---|---|")
    for count, rows in results.items():
        wall = statistics.median(row[0] for row in rows)
        cpu = statistics.median(row[1] for row in rows)
        print(f"| {count} | {wall:.1f} s | {cpu:.1f} s | {max(row[2] for row in rows):.2f} GB |")


if __name__ == "__main__":
    main()
