"""What costs do to the built-in models: the bundled week simulated for C1b and C3a, net of fees and
funding, reconciled with research.

Per model, one pure-core simulation of 2023-07-20 to 2023-07-27 (7 days of 5-minute bars on the
bundled candles, which have no funding data: funding at the config's assumed rate) with the
default costs (Binance USDT-M's standard tier), then the figures: gross PnL (before costs), fees,
funding, net PnL, Sharpe and max drawdown (net), and the reconciliation with research (per-bar
correlation, cumulative gap against 0.1% of the volume traded, the verdict's judged gap and bound).

    python benchmarks/costs_week.py [--models C1b,C3a] [--start 2023-07-20] [--days 7]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from prod_system.analysis.reconciliation import reconcile
from prod_system.config import build_config
from prod_system.data import BUNDLED_CANDLES
from prod_system.data.market_data import write_snapshot
from prod_system.data.sources import load_source
from prod_system.log_dir import LogDir
from prod_system.models.dag import load_model
from prod_system.runs.simulate import simulate
from prod_system.runs.stages import load_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="C1b,C3a")
    parser.add_argument("--start", default="2023-07-20")
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="costs_week_"))
    assets = sorted(path.name.split("_")[0] for path in Path(BUNDLED_CANDLES).glob("*_USDT.csv.gz"))
    candles = load_source(f"csv:{BUNDLED_CANDLES}", assets, pd.Timedelta(seconds=10))
    snapshot = write_snapshot(candles, work / "bundled.parquet")
    start = pd.Timestamp(args.start, tz="UTC")
    end = start + pd.Timedelta(days=args.days)
    rows = []
    for model in args.models.split(","):
        config = build_config(
            {
                "model": model,
                "start": start.isoformat(),
                "end": end.isoformat(),
                "universe": assets,
                "market_data": {"source": f"parquet:{snapshot}"},
                "log_root": str(work / "runs"),
                "profile_memory": False,
            }
        )
        summary = simulate(config)
        figures = summary.performance
        store = load_store(config, load_model(config.model, config.bar_delta, config.model_params))
        result = reconcile(config, LogDir(summary.log_dir), store).summary
        gap = result.cumulative_pnl_prod - result.cumulative_pnl_research
        rows.append(
            {
                "model": model,
                "gross pnl": summary.gross_pnl,
                "fees": -summary.fees,
                "funding": summary.funding,
                "net pnl": summary.pnl,
                "sharpe (net)": figures["sharpe"],
                "max drawdown": -figures["max_drawdown"],
                "volume": summary.gross_volume,
                "correlation": f"{result.pnl_correlation:.6f}",
                "gap": gap,
                "0.1% of volume": 0.001 * result.gross_volume_prod,
                "judged": result.judged,
                "bound": result.bound,
                "reconciled": result.reconciled,
                "funding from": result.costs["funding_source"],
            }
        )
        print(result.verdict(), flush=True)
    table = pd.DataFrame(rows).set_index("model").T
    with pd.option_context("display.float_format", "{:,.2f}".format, "display.width", 200):
        print(f"\n{args.days} days from {start:%Y-%m-%d}, 8 assets, 5-minute bars, default costs:\n")
        print(table.to_string())


if __name__ == "__main__":
    main()
