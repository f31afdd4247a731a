"""The PnL report of a run: a plot and a short Markdown summary written into the system log dir."""

from __future__ import annotations

import pandas as pd

from prod_system.analysis import performance, plots
from prod_system.log_dir import LogDir


def per_asset_pnl(log_dir: LogDir) -> pd.Series:
    """PnL of each asset over the run (sum of its per-bar PnL), worst first."""
    return log_dir.read_table("portfolio/pnl").groupby("asset")["pnl"].sum().sort_values()


PNL_REPORT_PNG = "pnl_report.png"  # the cumulative PnL and GMV plot of a run, in its log dir


def write_pnl_report(log_dir: LogDir, title: str, figures: performance.Performance) -> tuple[str, str]:
    """Write pnl_report.png and pnl_report.md (with the run's performance ``figures``); return their paths."""
    stats = log_dir.read_table("portfolio/statistics").sort_values("bar_end")
    png = log_dir.path / PNL_REPORT_PNG
    png.write_bytes(plots.portfolio(stats["bar_end"], stats["pnl"].cumsum(), stats["gmv"], title))

    by_asset = per_asset_pnl(log_dir)
    gross = stats["gross_volume"].sum()
    lines = [
        f"# {title}",
        "",
        "| figure | value |",
        "|---|---|",
        f"| bars | {len(stats)} |",
        f"| first bar end (UTC) | {stats['bar_end'].iloc[0]} |",
        f"| last bar end (UTC) | {stats['bar_end'].iloc[-1]} |",
        f"| PnL (USDT) | {stats['pnl'].sum():,.2f} |",
        f"| gross volume traded (USDT) | {gross:,.0f} |",
        f"| mean GMV (USDT) | {stats['gmv'].mean():,.0f} |",
        f"| PnL per bar: mean / std (USDT) | {stats['pnl'].mean():,.2f} / {stats['pnl'].std():,.2f} |",
        f"| final net wealth (USDT) | {stats['net_wealth'].iloc[-1]:,.2f} |",
        f"| max leverage | {stats['leverage'].max():.3f} |",
        "",
        "## Performance",
        "",
        *performance.markdown(figures),
        "",
        "## PnL by asset (USDT)",
        "",
        "| asset | PnL |",
        "|---|---|",
        *[f"| {asset} | {value:,.2f} |" for asset, value in by_asset.items()],
        "",
        "![cumulative PnL](pnl_report.png)",
        "",
    ]
    md = log_dir.write_text("pnl_report.md", "\n".join(lines))
    return str(png), str(md)
