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
