"""Runs: the stages and the bar step shared by every run mode, the core simulation, the live session,
the historical simulation and the ingestion of candles."""
