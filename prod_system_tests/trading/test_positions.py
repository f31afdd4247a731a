"""Sizing: cross-sectional weights, per-asset cap, lot rounding, min notional, missing data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prod_system.config import PortfolioConfig, build_config
from prod_system.trading.orders import client_order_id, make_orders
from prod_system.trading.positions import compute_targets, round_to_lot, run_sizing

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


def test_sizing_by_hand():
    """The sizing research and production share (``run_sizing``), against numbers derived by hand.

    Their targets agree by construction (the same function on the same inputs: test_research checks
    that plumbing); this is the independent check of what that function computes. Rules
    (positions.py, docs/system.md): score = mu / sigma^2; notional = target_gmv * score / sum |score|,
    clipped to +-max_notional_per_asset; shares truncated towards zero to the lot; 0 if |shares| x
    price is under the min notional; no prediction -> no target (NaN): not traded, holdings kept.
    """
    config = build_config(
        {
            "model": "C1b",
            "start": "2023-07-21T00:00:00Z",
            "end": "2023-07-21T00:05:00Z",
            "market_data": {"source": "parquet:unused.parquet"},
            "universe": ["BTC", "ETH", "SOL", "DOGE", "XRP"],
            "portfolio": {"target_gmv": 1_000, "max_notional_per_asset": 350},
        }
    )
    inputs = pd.DataFrame(
        [  # asset, mu, sigma, price
            ("BTC", 0.001, 0.01, 29_876.5),  # score  0.001  / 0.0001 =  10
            ("ETH", -0.0064, 0.02, 1_893.7),  # score -0.0064 / 0.0004 = -16
            ("SOL", 0.00138, 0.01, 24.37),  # score  0.00138 / 0.0001 = 13.8
            ("DOGE", 0.0005, 0.05, 0.0712),  # score  0.0005 / 0.0025 =  0.2
            ("XRP", np.nan, 0.01, 0.71),  # no prediction: left out of the sum
        ],
        columns=["asset", "prediction", "volatility", "price"],
    ).assign(bar_end=BAR)
    out = run_sizing(config, inputs, pd.DatetimeIndex([BAR])).set_index("asset")
    # sum |score| = 10 + 16 + 13.8 + 0.2 = 40 (the signed sum would be 8), so per 1,000 of target GMV:
    #   BTC   1000 *  10  / 40 =  250
    #   ETH   1000 * -16  / 40 = -400 -> capped at -350
    #   SOL   1000 * 13.8 / 40 =  345 (under the 350 cap)
    #   DOGE  1000 * 0.2  / 40 =    5
    np.testing.assert_allclose(out["target_notional"].iloc[:4], [250.0, -350.0, 345.0, 5.0], rtol=1e-12)
    # shares, truncated towards zero to the lot:
    #   BTC    250 / 29876.5 =  0.0083678 -> 0.008   (lot 0.001; away from zero: 0.009)
    #   ETH   -350 / 1893.7  = -0.1848234 -> -0.184  (lot 0.001; away from zero and floor: -0.185)
    #   SOL    345 / 24.37   = 14.1567    -> 14      (lot 1; away from zero: 15)
    #   DOGE     5 / 0.0712  = 70.2247    -> 70      (lot 1), worth 70 * 0.0712 = 4.984 < 5 USDT min -> 0
    assert out["target_shares"].iloc[:4].tolist() == [0.008, -0.184, 14.0, 0.0]
    assert np.isnan(out.loc["XRP", "target_shares"]) and np.isnan(out.loc["XRP", "target_notional"])
    # the orders towards them: BTC 0.0081 held -> -0.0001 (2.99 USDT) under the min notional, skipped;
    # DOGE 300 held -> target 0 closes it (-300); XRP 50 held, no target -> no order, 50 kept
    orders = make_orders(
        BAR,
        target_shares=out["target_shares"].to_numpy(),
        holdings=np.array([0.0081, 0.0, 0.0, 300.0, 50.0]),
        prices=out["price"].to_numpy(),
        assets=config.universe,
        config=config.portfolio,
        run_id="abcd1234",
        now=BAR,
    )
    assert [(o["asset"], o["quantity"]) for o in orders] == [("ETH", -0.184), ("SOL", 14.0), ("DOGE", -300.0)]
