"""A live session reads the market database through the same visibility rule as a replay."""

from __future__ import annotations

import numpy as np
import pandas as pd

from prod_system.data.market_db import MarketDatabase
from prod_system.runs.live import DatabaseCandles
from prod_system_tests.kit.data import UNIVERSE

T0 = pd.Timestamp("2023-07-21T00:00:00Z")


def test_an_asset_whose_candles_stopped_reads_as_missing_not_as_a_crash(tmp_path, candles):
    """A window of the database without any candle of one asset (its feed stopped, or it was delisted)
    gives NaN prices for it, as for a minute not yet known; it used to raise 'market data has no
    candles for [...]' and stop the session."""
    database = MarketDatabase(f"sqlite:///{tmp_path / 'market.db'}")
    window = candles[(candles["bar_start"] >= T0) & (candles["bar_start"] < T0 + pd.Timedelta(minutes=5))]
    rows = window[window["asset"] != "SOL"][["asset", "bar_start", "open", "high", "low", "close", "volume"]]
    database.upsert(rows.reset_index(drop=True), T0 + pd.Timedelta(minutes=6))
    seen = DatabaseCandles(database, UNIVERSE).visible(T0 + pd.Timedelta(minutes=6), T0, T0 + pd.Timedelta(minutes=5))
    close = seen.field("close")
    assert close.shape == (5, len(UNIVERSE))
    assert np.isnan(close[:, UNIVERSE.index("SOL")]).all()
    assert np.isfinite(np.delete(close, UNIVERSE.index("SOL"), axis=1)).all()
    database.close()
