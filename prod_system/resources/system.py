"""The system resource: the run parameters that are not fixed by the asset (model, mode, window).

Assets combine it with their model, run mode and partition window into a validated
``SystemConfig``; the market data is read through a cached ``CandleStore`` (the one visibility rule).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field

from prod_system.core.config import DEFAULT_UNIVERSE, SystemConfig, build_config
from prod_system.core.market_data import CandleStore, load_source
from prod_system.core.timeutil import parse_duration

BUNDLED_CANDLES = Path(__file__).resolve().parents[1] / "data" / "binance_futures_1m"


def default_root() -> str:
    return os.environ.get("PROD_SYSTEM_ROOT", "system_runs")


class SystemResource(ConfigurableResource):
    """Run parameters shared by every asset of a model: market data, universe, sizing, log root."""

    market_data_source: str = Field(
        default=f"csv:{BUNDLED_CANDLES}", description="'parquet:FILE' snapshot or 'csv:DIR' of candles"
    )
    knowledge_delay: str = Field(default="10s", description="candle close -> knowledge time (historical files)")
    universe: list[str] = Field(default_factory=lambda: list(DEFAULT_UNIVERSE))
    bar: str = Field(default="5m", description="bar length")
    log_root: str = Field(default_factory=default_root, description="root of the system log dirs")
    portfolio: dict[str, Any] = Field(default_factory=dict, description="portfolio section of the system config")
    model_params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="model name -> parameters")
    profile_memory: bool = True

    def config_for(
        self, model: str, run_mode: str, start: pd.Timestamp, end: pd.Timestamp, trigger: str = "manual"
    ) -> SystemConfig:
        return build_config(
            {
                "model": model,
                "model_params": self.model_params.get(model, {}),
                "universe": self.universe,
                "bar": self.bar,
                "run_mode": run_mode,
                "trigger": trigger,
                "start": start,
                "end": end,
                "market_data": {"source": self.market_data_source, "knowledge_delay": self.knowledge_delay},
                "portfolio": self.portfolio,
                "log_root": self.log_root,
                "profile_memory": self.profile_memory,
            }
        )

    def candle_store(self, config: SystemConfig) -> CandleStore:
        return _cached_store(
            config.market_data.source,
            tuple(config.universe),
            config.market_data.knowledge_delay,
            _source_stamp(config.market_data.source),
        )


def _source_stamp(source: str) -> float:
    """Modification time of the source, so that a changed file is read again."""
    location = source.partition(":")[2] if source.startswith(("csv:", "parquet:")) else source
    path = Path(location)
    if path.is_dir():
        return max((p.stat().st_mtime for p in path.iterdir()), default=0.0)
    return path.stat().st_mtime if path.exists() else 0.0


@lru_cache(maxsize=4)
def _cached_store(source: str, universe: tuple[str, ...], delay: str, stamp: float) -> CandleStore:
    snapshot = load_source(source, list(universe), parse_duration(delay))
    return CandleStore(snapshot, list(universe))
