"""Market data: the snapshot schema and files, the visibility rule (CandleStore, MarketDataReader),
the real-time market database, the data guard and the market-data checks. The bundled candles live in
``binance_futures_1m/``."""

from pathlib import Path

BUNDLED_CANDLES = Path(__file__).parent / "binance_futures_1m"  # 8 symbols of real 1-minute candles
