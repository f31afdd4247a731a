"""The plots people look at: titled, labelled axes with units, UTC times, legends.

Each function returns PNG bytes, so the same picture can go to a file, an HTML report, an S3
object or a Dagster metadata preview.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# matplotlib is imported by the first plot, not when Dagster loads the definitions (~0.4 s)


@functools.cache
def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _formatter(template: str | Callable[[float], str]):
    """A tick formatter writing each value with ``template`` (e.g. ``"{:,.0f}"``, or a function)."""
    from matplotlib.ticker import FuncFormatter

    write = template if callable(template) else template.format
    return FuncFormatter(lambda value, _: write(value))


def dollars(value: float) -> str:
    """Whole dollars, the sign before the symbol: ``-$1,000``, ``$483``."""
    return f"{'-' if round(value) < 0 else ''}${abs(value):,.0f}"


def _utc(times: pd.Series | pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Naive UTC times for matplotlib (which would otherwise draw in local time)."""
    return pd.DatetimeIndex(times).tz_convert("UTC").tz_localize(None)


def _time_axis(axis) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axis.set_xlabel("time (UTC)")


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(fig)
    return buffer.getvalue()


def _two_panels():
    """A figure of two panels sharing the time axis: a cumulative PnL above, a detail below."""
    return pyplot().subplots(2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]})


def _cumulative_pnl_frame(axis, title: str) -> None:
    """The frame of a cumulative-PnL panel once its lines are drawn: zero line, USDT axis, title, legend, grid."""
    axis.axhline(0, color="grey", linewidth=0.8)
    axis.set_ylabel("cumulative PnL (USDT)")
    axis.yaxis.set_major_formatter(_formatter("{:,.0f}"))
    axis.set_title(title)
    axis.legend(loc="upper left")
    axis.grid(alpha=0.3)


def cumulative_pnl_prod_vs_research(per_bar: pd.DataFrame, title: str) -> bytes:
    """Cumulative PnL of production and research, and their per-bar difference."""
    times = _utc(per_bar["bar_end"])
    fig, (top, bottom) = _two_panels()
    top.plot(times, per_bar["cumulative_pnl_prod"], color="tab:blue", linewidth=1.6, label="production")
    top.plot(times, per_bar["cumulative_pnl_research"], color="tab:orange", linestyle="--", label="research")
    _cumulative_pnl_frame(top, title)
    # one filled step line, not a rectangle per bar (288 a day, hundreds of thousands over years)
    gap = (per_bar["pnl_prod"] - per_bar["pnl_research"]).to_numpy(dtype="float64")
    bottom.fill_between(times, gap, 0, step="mid", color="tab:red", linewidth=0.8)
    bottom.axhline(0, color="grey", linewidth=0.8)
    bottom.set_ylabel("per-bar PnL\nprod - research (USDT)")
    bottom.grid(alpha=0.3)
    _time_axis(bottom)
    fig.tight_layout()
    return to_png(fig)


def portfolio(bar_end: pd.Series, cumulative_pnl: pd.Series, gmv: pd.Series, title: str) -> bytes:
    """A portfolio over time: its cumulative PnL, and its gross market value below."""
    times = _utc(bar_end)
    fig, (top, bottom) = _two_panels()
    top.plot(times, cumulative_pnl, color="tab:blue", label="cumulative PnL")
    _cumulative_pnl_frame(top, title)
    bottom.plot(times, gmv, color="tab:orange", label="gross market value")
    bottom.set_ylabel("GMV (USDT)")
    bottom.yaxis.set_major_formatter(_formatter("{:,.0f}"))
    bottom.legend(loc="upper left")
    bottom.grid(alpha=0.3)
    _time_axis(bottom)
    fig.tight_layout()
    return to_png(fig)


MAX_NAMED_ASSETS = 8  # lines drawn by name in a per-asset plot; the rest as one band


def furthest_apart(gaps: pd.DataFrame, count: int = MAX_NAMED_ASSETS) -> list[str]:
    """The ``count`` columns with the largest absolute gap at any time: a legend of hundreds of assets
    says nothing (and drawing them costs seconds), so these are drawn by name, the rest as a band."""
    return list(gaps.abs().max().sort_values(ascending=False, kind="stable").index[:count])


def holdings_difference(side_by_side: pd.DataFrame, title: str) -> bytes:
    """Per asset: production holdings minus research holdings, in USDT, over time."""
    diff = side_by_side.assign(gap=side_by_side["holdings_prod"] - side_by_side["holdings_research"]).pivot(
        index="bar_end", columns="asset", values="gap"
    )
    fig, axis = pyplot().subplots(figsize=(10, 4.5))
    times = _utc(diff.index)
    named = furthest_apart(diff)
    rest = diff.columns.difference(named)
    if len(rest):
        low, high = diff[rest].min(axis=1).fillna(0.0), diff[rest].max(axis=1).fillna(0.0)
        axis.fill_between(times, low, high, color="grey", alpha=0.3, label=f"{len(rest)} other assets (range)")
    for asset in named:
        axis.plot(times, diff[asset], linewidth=1.2, label=asset)
    axis.axhline(0, color="grey", linewidth=0.8)
    axis.set_ylabel("holdings prod - research (USDT)")
    axis.yaxis.set_major_formatter(_formatter("{:,.0f}"))
    axis.set_title(title)
    axis.legend(loc="upper left", ncol=min(len(named) + bool(len(rest)), 5), fontsize="small")
    axis.grid(alpha=0.3)
    _time_axis(axis)
    fig.tight_layout()
    return to_png(fig)


def timing(bar_timing: pd.DataFrame, nodes: list[str], title: str) -> bytes:
    """DAG time per bar, stacked by node, and the orders' delay after the bar's close."""
    times = _utc(bar_timing["bar_end"])
    fig, (top, bottom) = pyplot().subplots(2, 1, figsize=(10, 6), sharex=True)
    top.stackplot(times, *[bar_timing[node].fillna(0.0) * 1e3 for node in nodes], labels=nodes, alpha=0.85)
    top.set_ylabel("DAG time per bar (ms)")
    top.set_title(title)
    top.legend(loc="upper left", ncol=min(len(nodes), 6), fontsize="small")
    top.grid(alpha=0.3)
    bottom.plot(
        times, bar_timing["order_delay_seconds"], color="tab:purple", marker=".", linewidth=0.8, label="last order"
    )
    bottom.set_ylim(bottom=0)
    bottom.set_ylabel("order delay after\nbar close (s)")
    bottom.legend(loc="upper left", fontsize="small")
    bottom.grid(alpha=0.3)
    _time_axis(bottom)
    fig.tight_layout()
    return to_png(fig)


def investor_cumulative_pnl(cumulative: pd.Series, title: str, source: str) -> bytes:
    """Cumulative PnL in $ for investors: one line, the window and its source stated."""
    times = _utc(cumulative.index)
    fig, axis = pyplot().subplots(figsize=(10, 5))
    axis.plot(times, cumulative.to_numpy(), color="tab:blue", linewidth=1.6, label="cumulative PnL")
    axis.fill_between(times, cumulative.to_numpy(), 0, color="tab:blue", alpha=0.12)
    axis.axhline(0, color="grey", linewidth=0.8)
    axis.set_ylabel("cumulative PnL ($)")
    axis.yaxis.set_major_formatter(_formatter(dollars))
    axis.set_title(title)
    last = float(cumulative.iloc[-1]) if len(cumulative) else 0.0
    axis.legend([f"cumulative PnL (last: {dollars(last)})"], loc="upper left")
    axis.grid(alpha=0.3)
    _time_axis(axis)
    fig.text(0.99, 0.01, source, ha="right", va="bottom", fontsize="small", color="grey")
    fig.tight_layout(rect=(0, 0.035, 1, 1))  # leave the bottom line to the source
    return to_png(fig)


def thumbnail(png: bytes, width: int = 480) -> bytes:
    """A smaller copy of a PNG (for previews stored with every materialization)."""
    from PIL import Image  # matplotlib's own dependency

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.thumbnail((width, width * image.height // image.width))
    buffer = io.BytesIO()
    # 64 colours are plenty for a line plot: ~8 KB instead of ~40 KB in every stored event
    image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
