"""Target positions: cross-sectional sizing of predictions to a target gross market value.

For each bar and asset with a prediction mu, a volatility sigma and a price p:

    score_i    = mu_i / sigma_i^2                       (mean-variance weight)
    notional_i = target_gmv * score_i / sum_j |score_j|   then clipped to +-max_notional_per_asset
    shares_i   = notional_i / p_i, truncated towards zero to the lot size
    shares_i   = 0 if |shares_i * p_i| < min_notional

An asset with no prediction, volatility or price at a bar gets no target (NaN): the system does not
trade it on that bar and keeps its holdings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from prod_system.config import PortfolioConfig, SystemConfig
from prod_system.data.instruments import instrument_of
from prod_system.log_dir import columns

TARGET_COLUMNS = columns("target_positions")


def lot_sizes(config: PortfolioConfig, assets: list[str]) -> np.ndarray:
    return np.array([instrument_of(config, a).lot_size for a in assets])


def min_notionals(config: PortfolioConfig, assets: list[str]) -> np.ndarray:
    return np.array([instrument_of(config, a).min_notional for a in assets])


def round_to_lot(shares: np.ndarray, lots: np.ndarray) -> np.ndarray:
    """Truncate towards zero to a whole number of lots (never above a limit), as exact decimals.

    ``shares`` has one column per asset (or is one row), ``lots`` one lot size per asset.
    """
    shares = np.atleast_2d(np.asarray(shares, dtype="float64"))
    steps = np.trunc(np.round(shares / lots, 9))
    out = np.empty_like(steps)
    for column, lot in enumerate(lots):
        decimals = max(0, int(-np.floor(np.log10(lot))) + 1)
        out[:, column] = np.round(steps[:, column] * lot, decimals)
    return out + 0.0  # no negative zeros


def compute_targets(
    predictions: pd.DataFrame, volatility: pd.DataFrame, prices: pd.DataFrame, config: PortfolioConfig
) -> pd.DataFrame:
    """Size every bar of the wide frames (rows: bar_end, columns: assets); long-form result."""
    assets = list(predictions.columns)
    volatility = volatility.reindex_like(predictions)
    prices = prices.reindex_like(predictions)
    mu, sigma, price = (frame.to_numpy(dtype="float64") for frame in (predictions, volatility, prices))
    usable = np.isfinite(mu) & np.isfinite(sigma) & (sigma > 0) & np.isfinite(price) & (price > 0)
    score = np.where(usable, mu / np.where(usable, sigma, 1.0) ** 2, 0.0)
    total = np.abs(score).sum(axis=1, keepdims=True)
    weights = np.divide(score, total, out=np.zeros_like(score), where=total > 0)
    notional = np.clip(config.target_gmv * weights, -config.max_notional_per_asset, config.max_notional_per_asset)
    lots = lot_sizes(config, assets)
    raw_shares = np.divide(notional, price, out=np.zeros_like(notional), where=usable)
    shares = round_to_lot(raw_shares, lots)
    too_small = np.abs(shares * price) < min_notionals(config, assets)
    shares = np.where(too_small, 0.0, shares)
    notional = np.where(usable, notional, np.nan)
    shares = np.where(usable, shares, np.nan)
    out = pd.DataFrame(
        {
            "bar_end": predictions.index.repeat(len(assets)),
            "asset": np.tile(np.asarray(assets, dtype=object), len(predictions.index)),
            "prediction": mu.ravel(),
            "volatility": sigma.ravel(),
            "price": price.ravel(),
            "target_notional": notional.ravel(),
            "target_shares": shares.ravel(),
        }
    )
    return out[TARGET_COLUMNS]


def run_sizing(config: SystemConfig, predictions: pd.DataFrame, bars: pd.DatetimeIndex) -> pd.DataFrame:
    """Target positions of every bar from the predictions table."""
    wide = {
        column: predictions.pivot(index="bar_end", columns="asset", values=column).reindex(
            index=bars, columns=config.universe
        )
        for column in ("prediction", "volatility", "price")
    }
    return compute_targets(wide["prediction"], wide["volatility"], wide["price"], config.portfolio)
