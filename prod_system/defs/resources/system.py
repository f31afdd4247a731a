"""The system resource: the run parameters that are not fixed by the asset (model, mode, window).

Assets combine it with the other resources and their model, run mode and partition window into one
validated ``SystemConfig``, the same object the pure core runs on and saves in the log dir.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field

from prod_system.config import DEFAULT_UNIVERSE, AlertsConfig, SystemConfig, build_config, is_database
from prod_system.data.universe import file_assets, resolve_config
from prod_system.defs.resources.broker import BrokerResource
from prod_system.defs.resources.market_data import MarketDataResource
from prod_system.log_dir import LogDir


def default_root() -> str:
    return os.environ.get("PROD_SYSTEM_ROOT", "system_runs")


class LogDirResource(ConfigurableResource):
    """Where system log dirs go: {root}/{model}/{run_mode}/{trigger}/{start}.{end}/system_log_dir."""

    root: str = Field(default_factory=default_root, description="root of the system log dirs")

    def for_config(self, config: SystemConfig) -> LogDir:
        return LogDir.for_config(config)


class SystemResource(ConfigurableResource):
    """Run parameters shared by every asset of a model: universe, bar, sizing, model parameters."""

    universe: list[str] | None = Field(
        default=None,
        description="the assets; empty: a simulation's snapshot's assets, a live session's the bundled 8. "
        "With a universe_rule and the market database, the assets it ranks (the ones ingested)",
    )
    universe_rule: str | None = Field(
        default=None,
        description="'all' or 'top:N[/WINDOW]': the universe chosen from the market data as of the run's start "
        "(a live session: each day's start, from the database's candles before it)",
    )
    universe_each_day: bool = Field(
        default=False, description="a simulation's top:N ranked again at each session day's start (universe_each_day)"
    )
    universe_by_day: dict[str, list[str]] | None = Field(
        default=None, description="each day's list of a universe ranked daily, as the CLI resolved it"
    )
    bar: str = Field(default="5m", description="bar length")
    portfolio: dict[str, Any] = Field(default_factory=dict, description="portfolio section of the system config")
    model_params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="model name -> parameters")
    profile_memory: bool = True
    observer: dict[str, Any] = Field(
        default_factory=dict,
        description="observer section of the system config: the reconciliation's notebook (notebook, show_input) "
        "and alert thresholds; empty: the defaults (the notebook executed)",
    )
    alerts: dict[str, Any] = Field(
        default_factory=dict,
        description="alerts section of the system config (urls_env, repeat_after_minutes): the runs' alerts and "
        "the run-failure sensor's; empty: the defaults",
    )

    def alerts_config(self) -> AlertsConfig:
        """The deployment's alerts settings (validated: a bad field is named)."""
        return AlertsConfig(**self.alerts)

    def listed(self, source: str) -> list[str]:
        """The assets this resource names for ``source`` before any rule: the listed universe, else the
        file's assets, else (the database) the bundled list: what live ingestion records."""
        if self.universe is not None:
            return list(self.universe)
        return list(DEFAULT_UNIVERSE) if is_database(source) else file_assets(source)

    def config_for(
        self,
        model: str,
        run_mode: str,
        start: pd.Timestamp,
        end: pd.Timestamp,
        trigger: str,
        market_data: MarketDataResource,
        broker: BrokerResource,
        log_dir: LogDirResource,
    ) -> SystemConfig:
        return self.build(
            model,
            run_mode,
            trigger,
            start,
            end,
            market_data={
                "source": market_data.source,
                "knowledge_delay": market_data.knowledge_delay,
                "instruments": market_data.instruments,
            },
            broker={"kind": broker.kind},
            log_root=log_dir.root,
        )

    def build(
        self,
        model: str,
        run_mode: str,
        trigger: str,
        start: pd.Timestamp,
        end: pd.Timestamp,
        *,
        market_data: dict,
        broker: dict,
        log_root: str,
        bar: str | None = None,
        **sections: dict,
    ) -> SystemConfig:
        """A run's system config: the parameters this resource shares (universe, model parameters,
        sizing, profiling) and the run's own (window, sources, broker, log root, other sections).

        Its universe is resolved as of ``start`` (``data.universe.resolve_config``); a universe listed
        beside a rule over a file is that rule's resolution, as the CLI passes it: kept, so that every
        step of a run, and its re-execution, trades the same list."""
        listed = {} if self.universe is None else {"universe": self.universe}
        config = build_config(
            {
                "model": model,
                "model_params": self.model_params.get(model, {}),
                **listed,
                "universe_rule": self.universe_rule,
                "universe_each_day": self.universe_each_day,
                "universe_by_day": self.universe_by_day,
                "bar": bar or self.bar,
                "run_mode": run_mode,
                "trigger": trigger,
                "start": start,
                "end": end,
                "market_data": market_data,
                "portfolio": self.portfolio,
                "broker": broker,
                "log_root": log_root,
                "profile_memory": self.profile_memory,
                "observer": self.observer,
                "alerts": self.alerts,
                **sections,
            }
        )
        if self.universe is not None and not is_database(config.market_data.source):
            return config
        return resolve_config(config)
