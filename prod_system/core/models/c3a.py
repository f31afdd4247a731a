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

from prod_system.core.dag import SOURCE, Dag, Node
from prod_system.core.models import features


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
        Node("close", partial(features.resample_close, bar=bar), (SOURCE,), "last 1-minute close of each bar"),
        Node("returns", features.log_returns, ("close",), "log return of each bar"),
        Node("volatility", partial(features.rolling_volatility, window=vol_window), ("returns",), "rms return"),
        Node("zscore", partial(features.zscore, clip=5.0), ("returns", "volatility"), "volatility-adjusted return"),
        Node(
            "zscore_forecast",
            partial(features.rolling_ridge_forecast, lags=lags, window=fit_window, ridge=ridge, min_samples=fit_window),
            ("zscore",),
            "ridge forecast of the next bar's z",
        ),
        Node("prediction", _prediction, ("zscore_forecast", "volatility"), "expected next-bar log return"),
    ]
    return Dag(name="C3a", bar=bar, nodes=nodes, lookback_bars=vol_window + lags + fit_window + 8)
