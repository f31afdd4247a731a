"""How figures and plots read in the Dagster UI's metadata: amounts in USDT to the cent (a float's 16
digits say nothing more and are hard to read), and plots as small previews inlined in Markdown."""

from __future__ import annotations

import base64

from dagster import MetadataValue

from prod_system.analysis import plots


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
