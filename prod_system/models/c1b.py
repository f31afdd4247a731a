"""C1b: volatility-normalised short-horizon mean reversion.

    close_t      last 1-minute close of the bar
    r_t          = ln(close_t / close_{t-1})
    sigma_t      = sqrt(mean(r^2) over the last ``vol_window`` bars)
    z_t          = clip(r_t / sigma_{t-1}, -4, 4)
    prediction_t = -kappa * mean(z over the last ``horizon`` bars) * sigma_t

The prediction is the expected log return of the next bar: recent moves, measured in units of
their own volatility, are expected to partly revert.
"""

from __future__ import annotations

from functools import partial

import pandas as pd

from prod_system.models import features
from prod_system.models.dag import Dag, Node


def _prediction(z: pd.DataFrame, volatility: pd.DataFrame, horizon: int, kappa: float) -> pd.DataFrame:
    mean_z = features.rolling_mean(z.to_numpy(dtype="float64"), horizon, horizon)
    return pd.DataFrame(-kappa * mean_z * volatility.to_numpy(dtype="float64"), index=z.index, columns=z.columns)


def build_dag(bar: pd.Timedelta, vol_window: int = 48, horizon: int = 3, kappa: float = 0.1) -> Dag:
    nodes = [
        *features.volatility_adjusted_return_nodes(bar, vol_window, clip=4.0),
        Node(
            "prediction",
            partial(_prediction, horizon=horizon, kappa=kappa),
            ("zscore", "volatility"),
            "expected next-bar log return",
        ),
    ]
    return Dag(name="C1b", bar=bar, nodes=nodes, lookback_bars=vol_window + horizon + 8)
