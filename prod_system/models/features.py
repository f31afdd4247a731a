"""Node functions shared by the models. Each works on a whole window so that streaming (a short
window ending at the current bar) and batch (the whole history) evaluation agree: a value at bar t
depends only on a fixed number of bars up to t."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from prod_system.data.market_data import Candles, interval_name
from prod_system.errors import MarketDataError
from prod_system.models.dag import SOURCE, Node


def volatility_adjusted_return_nodes(bar: pd.Timedelta, vol_window: int, clip: float) -> list[Node]:
    """close -> returns -> volatility -> zscore: the common front of the reference models."""
    return [
        Node("close", partial(resample_close, bar=bar), (SOURCE,), "last candle close of each bar"),
        Node("returns", log_returns, ("close",), "log return of each bar"),
        Node("volatility", partial(rolling_volatility, window=vol_window), ("returns",), "rms return"),
        Node("zscore", partial(zscore, clip=clip), ("returns", "volatility"), "volatility-adjusted return"),
    ]


def resample_close(candles: Candles, bar: pd.Timedelta) -> pd.DataFrame:
    """Close of each bar: the last known candle close inside (bar_end - bar, bar_end] (candles of the
    market data's interval, which must divide the bar)."""
    interval = candles.interval
    if bar.value % interval.value:
        raise MarketDataError(
            f"bar {interval_name(bar)} is not a multiple of the market data's {interval_name(interval)} candles"
        )
    per_bar = bar // interval
    close = candles.field("close")
    assets = candles.assets
    if candles.count == 0:
        return pd.DataFrame(columns=assets, index=pd.DatetimeIndex([], tz="UTC"), dtype="float64")
    first_start = candles.first_bar_end - interval
    skip = (-(first_start.value % bar.value) % bar.value) // interval.value  # drop a leading partial bar
    close = close[skip:]
    first_start = first_start + interval * skip
    bars = -(-len(close) // per_bar)
    padded = np.full((bars * per_bar, len(assets)), np.nan)
    padded[: len(close)] = close
    shaped = padded.reshape(bars, per_bar, len(assets))
    last = np.where(~np.isnan(shaped), np.arange(per_bar)[None, :, None], -1).max(axis=1)
    out = np.take_along_axis(shaped, np.clip(last, 0, None)[:, None, :], axis=1)[:, 0, :]
    out[last < 0] = np.nan
    index = pd.date_range(first_start + bar, periods=bars, freq=bar)
    return pd.DataFrame(out, index=index, columns=assets)


def _like(values: np.ndarray, frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(values, index=frame.index, columns=frame.columns)


def rolling_mean(values: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    """Mean of the finite values among the last ``window`` rows; NaN before a full window.

    Summed over an explicit sliding window (not a running sum), so a row's value is the same
    whatever the array starts with: streaming and batch evaluation agree exactly. The non-finite
    values are zeroed once, before windowing (not in every window: three times the work).
    """
    out = np.full(values.shape, np.nan)
    if len(values) >= window:
        finite = np.isfinite(values)
        clean = np.where(finite, values, 0.0)
        total = np.lib.stride_tricks.sliding_window_view(clean, window, axis=0).sum(axis=-1)
        count = np.lib.stride_tricks.sliding_window_view(finite, window, axis=0).sum(axis=-1)
        out[window - 1 :] = np.where(count >= min_periods, total / np.maximum(count, 1), np.nan)
    return out


def log_returns(close: pd.DataFrame) -> pd.DataFrame:
    """r_t = ln(close_t / close_{t-1})."""
    values = close.to_numpy(dtype="float64")
    out = np.full(values.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[1:] = np.log(values[1:] / values[:-1])
    return _like(out, close)


def rolling_volatility(returns: pd.DataFrame, window: int, min_fraction: float = 0.8) -> pd.DataFrame:
    """sigma_t = sqrt(mean of r^2 over the last ``window`` bars); NaN with too few returns."""
    squared = returns.to_numpy(dtype="float64") ** 2
    return _like(np.sqrt(rolling_mean(squared, window, max(2, int(window * min_fraction)))), returns)


def zscore(returns: pd.DataFrame, volatility: pd.DataFrame, clip: float) -> pd.DataFrame:
    """z_t = r_t / sigma_{t-1}, clipped: the return in units of the volatility known before it."""
    sigma = volatility.to_numpy(dtype="float64")
    previous = np.full(sigma.shape, np.nan)
    previous[1:] = sigma[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = returns.to_numpy(dtype="float64") / previous
    return _like(np.clip(z, -clip, clip), returns)


def rolling_ridge_forecast(z: pd.DataFrame, lags: int, window: int, ridge: float, min_samples: int) -> pd.DataFrame:
    """Forecast z_{t+1} from (z_t, ..., z_{t-lags+1}) with a ridge regression pooled over assets.

    The coefficients at bar t are fitted on the samples (z_s ; z_{s-1..s-lags}) for s in
    (t - window, t], i.e. only on returns already known at t. Window sums are taken with a sliding
    window so that the result at t does not depend on where the input starts.
    """
    values = z.to_numpy(dtype="float64")
    steps, assets = values.shape
    out = np.full((steps, assets), np.nan)
    if steps < window + lags:
        return pd.DataFrame(out, index=z.index, columns=z.columns)
    lagged = np.full((steps, assets, lags), np.nan)
    for lag in range(1, lags + 1):
        lagged[lag:, :, lag - 1] = values[:-lag]
    valid = np.isfinite(values) & np.isfinite(lagged).all(axis=2)
    x = np.where(valid[..., None], lagged, 0.0)
    y = np.where(valid, values, 0.0)
    xt = x.transpose(0, 2, 1)  # batched products (one BLAS call per bar): 5x einsum's speed
    xtx = xt @ x
    xty = (xt @ y[..., None])[..., 0]
    count = valid.sum(axis=1).astype("float64")
    win_xtx = np.lib.stride_tricks.sliding_window_view(xtx, window, axis=0).sum(axis=-1)
    win_xty = np.lib.stride_tricks.sliding_window_view(xty, window, axis=0).sum(axis=-1)
    win_count = np.lib.stride_tricks.sliding_window_view(count, window).sum(axis=-1)
    beta = np.linalg.solve(win_xtx + ridge * np.eye(lags), win_xty[..., None])[..., 0]
    # features for the forecast at t: (z_t, ..., z_{t-lags+1})
    current = np.full((steps, assets, lags), np.nan)
    for lag in range(lags):
        current[lag:, :, lag] = values[: steps - lag] if lag else values
    fitted_at = np.arange(window - 1, steps)
    forecast = (current[fitted_at] @ beta[..., None])[..., 0]
    forecast[win_count < min_samples] = np.nan
    out[fitted_at] = forecast
    return pd.DataFrame(out, index=z.index, columns=z.columns)
