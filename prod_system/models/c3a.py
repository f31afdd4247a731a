"""C3a: linear model on lagged volatility-adjusted returns.

    close_t, r_t, sigma_t, z_t   as in C1b (z clipped at +-5)
    beta_t       = argmin sum_{s in (t-W, t], assets} (z_s - beta . (z_{s-1}, ..., z_{s-K}))^2 + lambda |beta|^2
    zhat_{t+1}   = beta_t . (z_t, ..., z_{t-K+1})
    prediction_t = zhat_{t+1} * sigma_t

A ridge regression refitted every bar on the last W bars of all assets (pooled), so it only ever
uses returns known at t. The prediction is the expected log return of the next bar.
"""

from __future__ import annotations

from functools import partial

import pandas as pd

from prod_system.models import features
from prod_system.models.dag import Dag, Node


def _prediction(forecast: pd.DataFrame, volatility: pd.DataFrame) -> pd.DataFrame:
    return forecast * volatility


def build_dag(
    bar: pd.Timedelta,
    vol_window: int = 48,
    lags: int = 4,
    fit_window: int = 144,
    ridge: float = 10.0,
) -> Dag:
    nodes = [
        *features.volatility_adjusted_return_nodes(bar, vol_window, clip=5.0),
        Node(
            "zscore_forecast",
            partial(features.rolling_ridge_forecast, lags=lags, window=fit_window, ridge=ridge, min_samples=fit_window),
            ("zscore",),
            "ridge forecast of the next bar's z",
        ),
        Node("prediction", _prediction, ("zscore_forecast", "volatility"), "expected next-bar log return"),
    ]
    return Dag(name="C3a", bar=bar, nodes=nodes, lookback_bars=vol_window + lags + fit_window + 8)
