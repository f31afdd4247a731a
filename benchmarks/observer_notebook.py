"""The observer notebook of one simulated day: executed (papermill, kernel start included) and converted to
HTML (nbconvert), against the reconciliation it displays.

One day of C1b over the bundled candles is simulated once (notebook off); then, medians of repeats:
- the reconciliation alone (``observe`` with the notebook off: research, comparison, plots, tables);
- the notebook on that report folder (``notebooks.execute``: kernel start, every cell, HTML);
- the same with the code cells shown (``show_input``);
and the sizes of the executed .ipynb and of its HTML. Target: the notebook under 10 s.

    python benchmarks/observer_notebook.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from prod_system.analysis import notebooks
from prod_system.analysis.observer import NOTEBOOK, notebook_parameters, observe
from prod_system.config import build_config, load_config
from prod_system.data.market_data import select_window, write_snapshot
from prod_system.data.sources import load_source
from prod_system.log_dir import LogDir
from prod_system.runs.simulate import simulate

BUNDLED = Path(__file__).resolve().parents[1] / "prod_system" / "data" / "binance_futures_1m"
UNIVERSE = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "DOT", "MATIC"]


def timed(repeats: int, work) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - began)
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        candles = load_source(f"csv:{BUNDLED}", UNIVERSE, pd.Timedelta(seconds=10))
        window = select_window(candles, pd.Timestamp("2023-07-20", tz="UTC"), pd.Timestamp("2023-07-23", tz="UTC"))
        snapshot = write_snapshot(window, folder / "snapshot.parquet")
        config = build_config(
            {
                "model": "C1b",
                "start": "2023-07-21T00:00:00Z",
                "end": "2023-07-22T00:00:00Z",
                "market_data": {"source": f"parquet:{snapshot}"},
                "log_root": str(folder / "runs"),
                "observer": {"notebook": False},
            }
        )
        logs = LogDir(simulate(config).log_dir)
        reconciled, report = timed(options.repeats, lambda: observe(logs.path, notebook=False))
        parameters = notebook_parameters(
            load_config(logs.path / "system_config.yaml"), logs, None, None, report.directory
        )
        runs = {}
        for shown in (False, True):
            out = folder / f"notebook_{'code' if shown else 'report'}"
            runs[shown] = timed(
                options.repeats, lambda out=out, shown=shown: notebooks.execute(NOTEBOOK, out, parameters, shown)
            )
        print(f"one simulated day of C1b (288 bars, 8 assets), {options.repeats} runs each, median (min..max):")
        print(f"  reconciliation alone (observe, notebook off): {_figures(reconciled)}")
        for shown, (times, executed) in runs.items():
            label = "notebook with code shown" if shown else "notebook executed + HTML (report)"
            print(f"  {label}: {_figures(times)}")
            sizes = executed.notebook.stat().st_size / 1e3, executed.html.stat().st_size / 1e3
            print(f"    .ipynb {sizes[0]:,.0f} KB, HTML {sizes[1]:,.0f} KB")
        median = statistics.median(runs[False][0])
        print(f"  target < 10 s for the notebook: {'met' if median < 10 else 'NOT met'} ({median:.2f} s)")


def _figures(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} s ({min(times):.2f}..{max(times):.2f})"


if __name__ == "__main__":
    main()
