"""What a live bar's figures (``runs.bar_figures``: bar and session PnL, net wealth, GMV, fees, funding,
positions) cost at the end of a day of 1-minute bars: a log dir of 1,440 bars as a live session writes
it (one part per bar of ``portfolio/statistics`` and ``portfolio/holdings_notional``, from a real
``Portfolio`` over random fills on 8 assets), then the figures of its last bar

- warm: the previous bar's figures were computed (the running totals cover every bar but this one),
  as in a session whose every bar is reported;
- cold: no running totals (the first report of a session reported nowhere before, or after an upgrade):
  every statistics part is read once;
- skipped: a bar without a statistics row, the totals warm;
- full read: ``LogDir.read_table("portfolio/statistics")``, what the session's sums would cost without
  the running totals, for comparison.

    python benchmarks/live_bar_figures.py [--bars 1440] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from prod_system.log_dir import LogDir
from prod_system.runs.bar_figures import TOTALS_FILE, bar_figures
from prod_system.trading.portfolio import Portfolio, PortfolioState

ASSETS = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "DOT", "MATIC"]
START = pd.Timestamp("2023-07-21T00:00:00Z")


def write_day(logs: LogDir, bars: int) -> pd.DatetimeIndex:
    """``bars`` 1-minute bars of a live session's statistics and holdings, one part per bar."""
    rng = np.random.default_rng(0)
    portfolio = Portfolio(PortfolioState.empty(ASSETS, 1_000_000.0))
    ends = pd.date_range(START + pd.Timedelta(minutes=1), periods=bars, freq="1min", tz="UTC")
    prices = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, size=(bars, len(ASSETS))), axis=0))
    for i, bar_end in enumerate(ends):
        fills = [
            {"asset": a, "shares": s, "notional": s * prices[i, j], "fee": abs(s * prices[i, j]) * 5e-4}
            for j, a in enumerate(ASSETS[:3])
            for s in [float(rng.normal(0, 10))]
        ]
        portfolio.update(bar_end, fills, prices[i])
        tables = portfolio.tables(last_bar_only=True)
        for name in ("portfolio/statistics", "portfolio/holdings_notional"):
            logs.write_table(name, tables[name], bar_end)
    return ends


def timed(repeats: int, run) -> list[float]:
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - began)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1440)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        logs = LogDir(Path(tmp) / "system_log_dir")
        began = time.perf_counter()
        ends = write_day(logs, args.bars)
        print(f"log dir of {args.bars} bars written in {time.perf_counter() - began:.1f} s")
        last, before = ends[-1], ends[-2]
        totals = logs.path / TOTALS_FILE

        def warm():
            bar_figures(logs, before)  # the previous bar's report (not timed)
            began = time.perf_counter()
            bar_figures(logs, last)
            return time.perf_counter() - began

        def cold():
            totals.unlink(missing_ok=True)
            bar_figures(logs, last)

        skipped = last + pd.Timedelta(minutes=1)
        results = {
            "warm (the bar's parts + one statistics part)": [warm() for _ in range(args.repeats)],
            "cold (every statistics part read)": timed(max(1, args.repeats // 10), cold),
            "skipped bar, warm": timed(args.repeats, lambda: bar_figures(logs, skipped)),
            "full read_table of the statistics": timed(
                max(1, args.repeats // 5), lambda: logs.read_table("portfolio/statistics")
            ),
        }
        figures = bar_figures(logs, last)
        print(
            f"last bar: session_pnl={figures.session_pnl:.2f} net_wealth={figures.net_wealth:.2f} "
            f"positions={figures.positions} largest={figures.largest_asset} {figures.largest_notional:.2f}"
        )
        for name, seconds in results.items():
            print(f"{name:48s} median {statistics.median(seconds) * 1e3:8.1f} ms  max {max(seconds) * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
