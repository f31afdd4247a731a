"""Dagster resources: the system config of a run, the candle store, and the asset store."""

from prod_system.resources.io_manager import TableStoreIOManager
from prod_system.resources.system import SystemResource

__all__ = ["SystemResource", "TableStoreIOManager"]
