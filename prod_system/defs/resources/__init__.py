"""Dagster resources: the clock, the market data, the broker, the log dir, the run parameters, and
the range-aware IO manager for the tables the assets pass to each other."""

from prod_system.defs.resources.broker import BrokerResource
from prod_system.defs.resources.clock import ClockResource
from prod_system.defs.resources.io_manager import TableStoreIOManager
from prod_system.defs.resources.market_data import MarketDataResource
from prod_system.defs.resources.publishing import PublishingResource, default_s3
from prod_system.defs.resources.system import LogDirResource, SystemResource

__all__ = [
    "BrokerResource",
    "ClockResource",
    "LogDirResource",
    "MarketDataResource",
    "PublishingResource",
    "SystemResource",
    "TableStoreIOManager",
    "default_s3",
]
