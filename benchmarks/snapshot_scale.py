"""A long snapshot: 1 year x 50 assets of 1-minute candles (26M rows) from Binance's archive format.

The candles are synthetic: each asset's 1-minute bars are bootstrapped (whole days, so intraday shape
stays) from the bundled real candles, as ratios to the previous close (open, high, low, close) with
the real volumes, chained from a random start price. They are written as a folder of monthly kline
zips in Binance's public-data format (one per asset and month, with .CHECKSUM), then:

1. `prod-system dump-market-data --source binance-archive:DIR` over the whole year, in its own
   process: wall time and peak RSS (the child's ru_maxrss); it writes a snapshot partitioned by month;
2. one day's window of that snapshot loaded (`load_source` with the window, then the `CandleStore`),
   in a fresh process: the median of 5 loads and the process's peak RSS.

    python benchmarks/snapshot_scale.py [--assets 50] [--months 12] [--repeats 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prod_system.data.sources import load_source  # noqa: E402
from prod_system_tests.kit.archive import archive_path, kline_csv, write_zip  # noqa: E402
from prod_system_tests.kit.data import BUNDLED, UNIVERSE  # noqa: E402

FIRST = pd.Timestamp("2024-01-01", tz="UTC")
DAY = pd.Timedelta(days=1)
LOAD_DAY = pd.Timestamp("2024-06-15", tz="UTC")  # the window loaded: one day in the middle of the year


def real_days() -> np.ndarray:
    """The bundled candles as whole days of ratios to the previous close (open, high, low, close) and
    volumes: shape (days, 1440, 5), every asset's days pooled."""
    candles = load_source(f"csv:{BUNDLED}", UNIVERSE, pd.Timedelta(0))
    days = []
    for _, rows in candles.groupby("asset"):
        rows = rows.sort_values("bar_start")
        previous = rows["close"].shift(1).to_numpy()
        ratios = rows[["open", "high", "low", "close"]].to_numpy() / previous[:, None]
        table = np.column_stack([ratios, rows["volume"].to_numpy()])[1:]
        whole = len(table) // 1440 * 1440
        days.append(table[:whole].reshape(-1, 1440, 5))
    return np.concatenate(days)


def synthetic_asset(days: np.ndarray, count: int, rng: np.random.Generator) -> pd.DataFrame:
    """``count`` days of 1-minute candles from ``FIRST``: real days drawn at random, chained."""
    table = days[rng.integers(0, len(days), size=count)].reshape(-1, 5)
    close = rng.uniform(1, 1000) * np.cumprod(table[:, 3])
    previous = np.concatenate([[close[0] / table[0, 3]], close[:-1]])
    prices = np.round(table[:, :4] * previous[:, None], 6)
    return pd.DataFrame(
        {
            "bar_start": pd.date_range(FIRST, periods=len(table), freq="1min"),
            "open": prices[:, 0],
            "high": prices[:, 1],
            "low": prices[:, 2],
            "close": prices[:, 3],
            "volume": table[:, 4],
        }
    )


def write_archive(root: Path, assets: int, months: int, seed: int = 7) -> tuple[int, float]:
    """The archive folder (nested as downloaded, monthly zips): rows written and bytes of zips."""
    rng = np.random.default_rng(seed)
    days = real_days()
    end = FIRST + pd.DateOffset(months=months)
    count = (end - FIRST) // DAY
    rows, size = 0, 0
    for number in range(assets):
        symbol = f"A{number:02d}USDT"
        candles = synthetic_asset(days, count, rng)
        for period, month in candles.groupby(candles["bar_start"].dt.strftime("%Y-%m")):
            path = write_zip(archive_path(root, symbol, "1m", period), kline_csv(month, pd.Timedelta(minutes=1)))
            rows += len(month)
            size += path.stat().st_size
        print(f"  archive: {number + 1}/{assets} assets", end="\r", file=sys.stderr)
    print(file=sys.stderr)
    return rows, size


LOAD_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    import pandas as pd
    from prod_system.data.market_data import CandleStore
    from prod_system.data.sources import load_source
    path, universe, start, repeats = sys.argv[1], sys.argv[2].split(","), pd.Timestamp(sys.argv[3]), int(sys.argv[4])
    window = (start, start + pd.Timedelta(days=1))
    loads, stores = [], []
    for _ in range(repeats):
        began = time.perf_counter()
        candles = load_source(f"parquet:{path}", universe, pd.Timedelta(seconds=10), window)
        loaded = time.perf_counter()
        store = CandleStore(candles, universe)
        loads.append(loaded - began)
        stores.append(time.perf_counter() - began)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": len(candles), "load_s": loads, "load_and_store_s": stores, "peak_rss_mb": peak}))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=50)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--keep", type=Path, help="work in this folder and keep it (default: a temporary one); its archive is reused"
    )
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="snapshot_scale."))
    work.mkdir(parents=True, exist_ok=True)
    archive, snapshot = work / "archive", work / "snapshot.parquet"
    universe = [f"A{number:02d}" for number in range(args.assets)]
    end = FIRST + pd.DateOffset(months=args.months)
    try:
        if not archive.is_dir():  # with --keep, a second run reuses the archive of the first
            began = time.perf_counter()
            rows, size = write_archive(archive, args.assets, args.months)
            seconds = time.perf_counter() - began
            print(f"archive: {rows:,} candles in {size / 1e6:.0f} MB of monthly zips ({seconds:.0f} s)")
        command = [
            *[sys.executable, "-m", "prod_system.cli", "dump-market-data", "--source", f"binance-archive:{archive}"],
            *["--universe", ",".join(universe), "--start", f"{FIRST:%Y-%m-%dT%H:%M:%SZ}"],
            *["--end", f"{end:%Y-%m-%dT%H:%M:%SZ}", "--out", str(snapshot)],
        ]
        began = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        dump_s = time.perf_counter() - began
        child = resource.getrusage(resource.RUSAGE_CHILDREN)  # the first child: the dump
        dump_rss, dump_cpu = child.ru_maxrss / 1024, child.ru_utime + child.ru_stime
        if done.returncode != 0:
            sys.exit(f"dump failed: {done.stderr}")
        print(done.stdout.strip())
        parts = sorted(snapshot.glob("month=*/part.parquet"))
        snapshot_mb = sum(part.stat().st_size for part in parts) / 1e6
        load_day = min(LOAD_DAY, end - DAY)
        loaded = subprocess.run(
            [sys.executable, "-c", LOAD_SCRIPT, str(snapshot), ",".join(universe), str(load_day), str(args.repeats)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        load = json.loads(loaded.stdout)
        median = float(np.median(load["load_s"]))
        with_store = float(np.median(load["load_and_store_s"]))
        print(
            f"dump: {dump_s:.1f} s ({dump_cpu:.1f} s CPU), peak RSS {dump_rss:,.0f} MB; "
            f"snapshot: {len(parts)} month files, {snapshot_mb:.0f} MB\n"
            f"one day's window ({load['rows']:,} candles, {load_day:%Y-%m-%d}): load {median:.3f} s, "
            f"load + CandleStore {with_store:.3f} s (medians of {args.repeats}); "
            f"peak RSS of that process {load['peak_rss_mb']:,.0f} MB"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
