"""The market-data resource: where candles come from, and the store every reader goes through."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field

from prod_system.common.timeutil import parse_duration
from prod_system.data import BUNDLED_CANDLES
from prod_system.data.market_data import CandleStore
from prod_system.data.sources import load_funding, load_source
from prod_system.runs.stages import load_window


class MarketDataResource(ConfigurableResource):
    """A market-data source: a snapshot ('parquet:FILE') or a folder of candle files ('csv:DIR')."""

    source: str = Field(default=f"csv:{BUNDLED_CANDLES}", description="'parquet:FILE' or 'csv:DIR'")
    knowledge_delay: str = Field(default="10s", description="candle close -> knowledge time, for files without one")
    instruments: str | None = Field(
        default=None, description="the exchange's rules file (None: the snapshot's embedded table, else the bundled)"
    )

    def candle_store(self, universe: list[str], window: tuple[pd.Timestamp, pd.Timestamp] | None = None) -> CandleStore:
        """The candles of ``universe`` (only ``window``'s, a run's ``data_window``, from a source that
        reads by window), loaded once per process (and again if the source changes)."""
        stamp = _source_stamp(self.source)
        return _cached_store(self.source, tuple(universe), self.knowledge_delay, stamp, window)


def _source_stamp(source: str) -> float:
    """Modification time of the source, so that a changed file is read again (any file of a folder: a
    month of a partitioned snapshot, a zip deep in an archive folder)."""
    location = source.partition(":")[2] if source.startswith(("csv:", "parquet:", "binance-archive:")) else source
    path = Path(location)
    if path.is_dir():
        return max((p.stat().st_mtime for p in path.rglob("*")), default=0.0)
    return path.stat().st_mtime if path.exists() else 0.0


@lru_cache(maxsize=4)
def _cached_store(
    source: str, universe: tuple[str, ...], delay: str, stamp: float, window: tuple[pd.Timestamp, pd.Timestamp] | None
) -> CandleStore:
    if window is None:
        snapshot = load_source(source, list(universe), parse_duration(delay))
    else:
        snapshot = load_window(source, list(universe), parse_duration(delay), window)
    funding = load_funding(source, list(universe), parse_duration(delay), window)
    return CandleStore(snapshot, list(universe), funding=funding)
