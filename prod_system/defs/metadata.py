"""How figures and plots read in the Dagster UI's metadata: amounts in USDT to the cent (a float's 16
digits say nothing more and are hard to read), and plots as small previews inlined in Markdown."""

from __future__ import annotations

import base64

from dagster import MetadataValue

from prod_system.analysis import plots
from prod_system.runs.bar_figures import BarFigures


def usd(value: float) -> float:
    """An amount in USDT, rounded to the cent."""
    return round(float(value), 2)


def preview(png: bytes, alt: str) -> MetadataValue:
    """A plot shown in the Dagster UI's metadata (a small copy: it is stored with every event)."""
    data = base64.b64encode(plots.thumbnail(png)).decode()
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def performance_metadata(figures: dict) -> dict:
    """The headline performance figures (``analysis.performance``, as its ``to_dict``) for the Dagster UI:
    floats that plot across materializations, "n/a" where a figure is undefined (no risk, no loss)."""

    def ratio(name: str) -> MetadataValue:
        value = figures.get(name)
        return MetadataValue.text("n/a") if value is None else MetadataValue.float(round(float(value), 4))

    return {
        "sharpe": ratio("sharpe"),
        "sortino": ratio("sortino"),
        "calmar": ratio("calmar"),
        "hit_rate": ratio("hit_rate"),
        "max_drawdown": MetadataValue.float(usd(figures["max_drawdown"])),
        "max_drawdown_pct_of_mean_gmv": ratio("max_drawdown_pct_of_mean_gmv"),
        "net_pnl": MetadataValue.float(usd(figures["net_pnl"])),
        "gross_pnl": MetadataValue.float(usd(figures["gross_pnl"])),
        "fees": MetadataValue.float(usd(figures["fees"])),
        "funding": MetadataValue.float(usd(figures["funding"])),
        "funding_source": MetadataValue.text(figures["funding_source"]),
    }


def bar_figures_metadata(figures: BarFigures) -> dict:
    """A live bar's figures (``runs.bar_figures``) for the Dagster UI, under the same keys at every bar
    so that the asset's Plots draw them across its materializations: amounts in USDT to the cent,
    leverage to 4 digits, counts as ints; the largest position's asset as text ("none" when flat). A
    skipped bar has the session's figures only, with the bar its net wealth is of."""
    metadata = {
        "session_pnl": MetadataValue.float(usd(figures.session_pnl)),
        "traded_bars": MetadataValue.int(figures.traded_bars),
    }
    if figures.net_wealth is not None:
        metadata["net_wealth"] = MetadataValue.float(usd(figures.net_wealth))
    for name in ("session_fees", "session_funding"):
        value = getattr(figures, name)
        if value is not None:
            metadata[name] = MetadataValue.float(usd(value))
    if not figures.traded:
        as_of = figures.as_of.isoformat() if figures.as_of is not None else "the session's start"
        metadata["net_wealth_as_of"] = MetadataValue.text(as_of)
        return metadata
    metadata["bar_pnl"] = MetadataValue.float(usd(figures.bar_pnl))
    metadata["gmv"] = MetadataValue.float(usd(figures.gmv))
    leverage = figures.leverage
    metadata["leverage"] = MetadataValue.text("n/a") if leverage is None else MetadataValue.float(round(leverage, 4))
    for name in ("bar_fees", "bar_funding"):
        value = getattr(figures, name)
        if value is not None:
            metadata[name] = MetadataValue.float(usd(value))
    if figures.positions is not None:
        metadata["positions"] = MetadataValue.int(figures.positions)
        metadata["largest_position_asset"] = MetadataValue.text(figures.largest_asset or "none")
        metadata["largest_position_usdt"] = MetadataValue.float(usd(figures.largest_notional or 0.0))
    return metadata
