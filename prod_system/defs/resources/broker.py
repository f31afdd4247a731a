"""The broker resource: what receives a run's orders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field

from prod_system.config import CostsConfig
from prod_system.data.market_data import MarketDataReader
from prod_system.runs.stages import mocked_broker
from prod_system.trading.brokers.base import Broker


class BrokerResource(ConfigurableResource):
    """'mocked': 100% fills at the TWAP of the bar after the decision (simulation, paper trading)."""

    kind: Literal["mocked"] = Field(default="mocked", description="'mocked' (ccxt for prod comes next)")

    def connect(self, costs: CostsConfig) -> Callable[[MarketDataReader, pd.Timedelta], Broker]:
        """The broker factory of a run, charging its config's costs."""
        return mocked_broker(costs)
