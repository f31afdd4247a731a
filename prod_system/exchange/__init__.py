"""A local Binance USDT-M futures exchange that the unmodified ccxt ``binanceusdm`` client trades on over HTTP.

It replays a candle snapshot on its own clock (``market``), matches orders and keeps accounts
(``engine``), injects faults on chosen endpoints (``faults``) and speaks Binance's REST API
(``server``), so paper trading and tests run the real client code path against a known market.
"""

from prod_system.errors import FaultRuleError
from prod_system.exchange.engine import BinanceError, Engine, EngineConfig, open_engine
from prod_system.exchange.faults import FaultInjector, FaultRule, parse_rules
from prod_system.exchange.market import MarketReplay, ReplayClock, load_candles
from prod_system.exchange.server import LocalExchange, ServerOptions, serve

__all__ = [
    "BinanceError",
    "Engine",
    "EngineConfig",
    "FaultInjector",
    "FaultRule",
    "FaultRuleError",
    "LocalExchange",
    "MarketReplay",
    "ReplayClock",
    "ServerOptions",
    "load_candles",
    "open_engine",
    "parse_rules",
    "serve",
]
