"""Plot previews in the Dagster UI: a small PNG inlined in Markdown metadata."""

import base64

from dagster import MetadataValue

from prod_system.analysis import plots


def preview(png: bytes, alt: str) -> MetadataValue:
    """A plot shown in the Dagster UI's metadata (a small copy: it is stored with every event)."""
    data = base64.b64encode(plots.thumbnail(png)).decode()
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")
