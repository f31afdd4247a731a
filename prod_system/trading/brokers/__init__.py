"""Brokers: one interface (``base.Broker``), the mocked broker, and Binance USDT-M through ccxt."""
