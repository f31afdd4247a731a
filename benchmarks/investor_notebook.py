"""The investors' notebook (historical_pnl_for_investors): seconds of one execution, kernel start and HTML included.

On the tests' fixtures: the bundled candles of 2023-07-20 to 2023-07-23 (8 assets), a historical simulation of
C3a over them (2023-07-20 12:00 to 2023-07-23, 720 bars) and two paper-trading sessions (2023-07-21, and
2023-07-22 00:00 to 12:00), as prod_system_tests/defs/test_publishing.py builds them. Each repeat executes the
notebook (papermill, a fresh kernel of this Python) into a new folder and converts it to HTML; the seconds
in the cells (papermill's per-cell durations) are printed beside the total.

    python benchmarks/investor_notebook.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from prod_system.analysis.notebooks import execute
from prod_system.config import build_config
from prod_system.data.market_data import select_window, write_snapshot
from prod_system.data.sources import load_source
from prod_system.naming import INVESTOR_NOTEBOOK
from prod_system.runs.historical import historical_pnl
from prod_system.runs.simulate import simulate

BUNDLED = Path(__file__).resolve().parents[1] / "prod_system" / "data" / "binance_futures_1m"
UNIVERSE = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "DOT", "MATIC"]
SESSIONS = [("2023-07-21T00:00:00Z", "2023-07-22T00:00:00Z"), ("2023-07-22T00:00:00Z", "2023-07-22T12:00:00Z")]


def config(snapshot: Path, root: Path, **fields):
    return build_config(
        {"model": "C3a", "market_data": {"source": f"parquet:{snapshot}"}, "log_root": str(root), **fields}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        raw = load_source(f"csv:{BUNDLED}", UNIVERSE, pd.Timedelta(seconds=10))
        window = (pd.Timestamp("2023-07-20", tz="UTC"), pd.Timestamp("2023-07-23", tz="UTC"))
        snapshot = write_snapshot(select_window(raw, *window), scratch / "snapshot.parquet")
        root = scratch / "runs"
        historical_pnl(config(snapshot, root, start="2023-07-20T12:00:00Z", end="2023-07-23T00:00:00Z"))
        for start, end in SESSIONS:
            simulate(config(snapshot, root, run_mode="paper_trading", start=start, end=end))
        parameters = {"model": "C3a", "root": str(root), "run_mode": "paper_trading"}
        seconds = []
        for repeat in range(args.repeats):
            began = time.perf_counter()
            done = execute(INVESTOR_NOTEBOOK, scratch / f"notebook{repeat}", parameters)
            seconds.append(time.perf_counter() - began)
            cells = [c["metadata"].get("papermill", {}) for c in json.loads(done.notebook.read_text())["cells"]]
            in_cells = sum(c.get("duration") or 0 for c in cells)
            print(
                f"run {repeat + 1}: {seconds[-1]:.2f} s, of which {in_cells:.2f} s in the cells "
                f"({done.html.stat().st_size:,} bytes of HTML)"
            )
        print(f"median {statistics.median(seconds):.2f} s, min {min(seconds):.2f} s over {args.repeats} runs")


if __name__ == "__main__":
    main()
