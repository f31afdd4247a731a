"""Sizing: cross-sectional weights, per-asset cap, lot rounding, min notional, missing data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prod_system.core.config import PortfolioConfig
from prod_system.core.orders import client_order_id, make_orders
from prod_system.core.positions import compute_targets, round_to_lot

BAR = pd.Timestamp("2023-07-21T00:05:00Z")


def frame(**columns):
    return pd.DataFrame({k: [v] for k, v in columns.items()}, index=pd.DatetimeIndex([BAR]))


def test_weights_cap_and_lots():
    config = PortfolioConfig(target_gmv=100_000, max_notional_per_asset=30_000)
    mu = frame(BTC=0.001, ETH=-0.001, SOL=0.0005)
    sigma = frame(BTC=0.01, ETH=0.01, SOL=0.01)
    price = frame(BTC=30_000.0, ETH=1_900.0, SOL=25.0)
    out = compute_targets(mu, sigma, price, config).set_index("asset")
    # scores 10, -10, 5 -> weights 0.4, -0.4, 0.2 -> 40k, -40k, 20k -> capped at 30k
    assert out.loc["BTC", "target_notional"] == pytest.approx(30_000)
    assert out.loc["ETH", "target_notional"] == pytest.approx(-30_000)
    assert out.loc["SOL", "target_notional"] == pytest.approx(20_000)
    assert out.loc["BTC", "target_shares"] == 1.0  # 30000 / 30000, lot 0.001
    assert out.loc["ETH", "target_shares"] == -15.789  # truncated towards zero, lot 0.001
    assert out.loc["SOL", "target_shares"] == 800.0  # lot 1
    assert (out["target_shares"].abs() * out["price"] <= 30_000 + 1e-9).all()


def test_min_notional_and_missing_data():
    config = PortfolioConfig(target_gmv=100, max_notional_per_asset=100)
    mu = frame(BTC=0.001, ETH=0.00001, SOL=np.nan)
    sigma = frame(BTC=0.01, ETH=0.01, SOL=0.01)
    price = frame(BTC=30_000.0, ETH=1_900.0, SOL=25.0)
    out = compute_targets(mu, sigma, price, config).set_index("asset")
    assert out.loc["BTC", "target_shares"] == 0.003  # 99 USDT of BTC
    assert out.loc["ETH", "target_shares"] == 0.0  # about 1 USDT: under the 5 USDT min notional
    assert np.isnan(out.loc["SOL", "target_shares"])  # no prediction: no target, holdings kept


def test_round_to_lot_is_exact_and_never_above():
    values = round_to_lot(
        np.array([[0.0123456, -3.99, 1234.5678, 0.30000000000000004]]), np.array([0.001, 1.0, 0.1, 0.1])
    )
    assert values.tolist() == [[0.012, -3.0, 1234.5, 0.3]]


def test_orders_skip_dust_but_close_positions():
    config = PortfolioConfig()
    assets = ["BTC", "DOGE", "ETH", "SOL"]
    orders = make_orders(
        BAR,
        target_shares=np.array([0.5, 1001.0, 0.0, np.nan]),
        holdings=np.array([0.5, 1000.0, 0.001, 3.0]),
        prices=np.array([30_000.0, 0.07, 1_900.0, 25.0]),
        assets=assets,
        config=config,
        run_id="abcd1234",
        now=BAR + pd.Timedelta(seconds=10),
    )
    # BTC: at target; DOGE: +1 (0.07 USDT) is dust; ETH: closing 0.001 (1.9 USDT) is allowed; SOL: no target
    assert [(o["asset"], o["quantity"], o["side"]) for o in orders] == [("ETH", -0.001, "sell")]
    assert orders[0]["client_order_id"] == client_order_id("abcd1234", BAR, "ETH") == "ps-abcd1234-2307210005-ETH"
