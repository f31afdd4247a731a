"""What a reader finds in the observer's report (the executed notebook's HTML)."""

from __future__ import annotations

import re

NOTEBOOK_SECTIONS = [  # the observer notebook's section headings, in order
    "Notebook config (parameters)",
    "System config of the run",
    "The account now",
    "DAG outputs and execution time",
    "Production portfolio",
    "Research equivalent",
    "Production vs research",
    "Costs and performance",
    "Portfolio vs exchange statement",
]


def sections(page: str) -> list[str]:
    """The section headings (h2) of a notebook's HTML, in order."""
    return re.findall(r"<h2[^>]*>(.*?)<", page)
