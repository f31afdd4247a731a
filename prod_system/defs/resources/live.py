"""The live resource: the real-time market database and the exchange of the live runs."""

from __future__ import annotations

import os

import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field

from prod_system.common.timeutil import parse_duration
from prod_system.config import RunMode, SystemConfig
from prod_system.defs.resources.system import SystemResource, default_root
from prod_system.runs.live import keeping_holdings


def _default_database() -> str:
    return os.environ.get("PROD_SYSTEM_DATABASE") or f"sqlite:///{os.path.abspath(default_root())}/market.db"


def _env_seconds(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected a number of seconds") from None


class LiveResource(ConfigurableResource):
    """Where live runs read candles and send orders. Credentials: PGPASSWORD for the database, the
    environment variables named by ``api_key_env``/``api_secret_env`` for the exchange."""

    database: str = Field(default_factory=_default_database, description="sqlite:///FILE or postgresql://user@host/db")
    exchange_url: str | None = Field(
        default_factory=lambda: os.environ.get("PROD_SYSTEM_EXCHANGE_URL") or None,
        description="Binance-compatible base URL; None = Binance",
    )
    bar: str = Field(default_factory=lambda: os.environ.get("PROD_SYSTEM_LIVE_BAR", "5m"), description="bar length")
    data_timeout_seconds: float = Field(default=30.0, description="wait for a bar's candles this long after its close")
    prelaunch_seconds: float = Field(
        default_factory=lambda: _env_seconds("PROD_SYSTEM_PRELAUNCH_SECONDS", 30.0),
        ge=0,
        description="the bar sensor requests a bar's run this long before its close, so that the run's start "
        "(a process, Dagster, the code location: seconds) is paid before the close; the run waits for the close "
        "and the candles (data_timeout_seconds). 0: request the run once the bar's candles are in the database",
    )
    api_key_env: str = "BINANCE_API_KEY"
    api_secret_env: str = "BINANCE_API_SECRET"

    @property
    def bar_delta(self) -> pd.Timedelta:
        return parse_duration(self.bar)

    @property
    def prelaunch(self) -> float:
        """``prelaunch_seconds``, checked against the bar (a run requested a bar early or more would
        wait behind the previous bar's)."""
        if self.prelaunch_seconds >= self.bar_delta.total_seconds():
            raise ValueError(f"live.prelaunch_seconds: {self.prelaunch_seconds:g} s must be under the bar ({self.bar})")
        return self.prelaunch_seconds

    def session_config(
        self, system: SystemResource, root: str, model: str, run_mode: str, day: pd.Timestamp
    ) -> SystemConfig:
        """The scheduled session of ``day`` (00:00 to 24:00 UTC): the one every bar run of that day joins.
        A universe rule (top:N) is resolved at the day's start from the database's candles before it:
        each day's session ranks again, and every bar run of the day gets the same list."""
        broker = {"kind": "mocked"}
        if run_mode == RunMode.PROD:
            broker = {
                "kind": "ccxt",
                "exchange_url": self.exchange_url,
                "api_key_env": self.api_key_env,
                "api_secret_env": self.api_secret_env,
            }
        config = system.build(
            model,
            run_mode,
            "scheduled",
            day,
            day + pd.Timedelta(days=1),
            market_data={"source": self.database},
            broker=broker,
            log_root=root,
            bar=self.bar,
            live={"data_timeout_seconds": self.data_timeout_seconds},
        )
        return keeping_holdings(config)  # a top:N chosen again today keeps what yesterday's session holds
