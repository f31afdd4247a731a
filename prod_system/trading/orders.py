"""Orders: the difference between target and current holdings, with deterministic client ids."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from prod_system.config import PortfolioConfig
from prod_system.data.instruments import instrument_of
from prod_system.log_dir import columns

ORDER_COLUMNS = columns("orders")


def client_order_id(run_id: str, bar_end: pd.Timestamp | str, asset: str) -> str:
    """'ps-{run}-{yymmddHHMM}-{asset}': unique per (run, bar, asset), the same after a restart.

    Binance accepts at most 36 characters of [.A-Z:/a-z0-9_-]; a long asset name is hashed.
    """
    name = asset if len(asset) <= 12 else hashlib.sha256(asset.encode()).hexdigest()[:12]
    stamp = bar_end if isinstance(bar_end, str) else bar_end.strftime("%y%m%d%H%M")
    return f"ps-{run_id}-{stamp}-{name}"


def make_orders(
    bar_end: pd.Timestamp,
    target_shares: np.ndarray,
    holdings: np.ndarray,
    prices: np.ndarray,
    assets: list[str],
    config: PortfolioConfig,
    run_id: str,
    now: pd.Timestamp,
) -> list[dict]:
    """One order per asset whose target differs from its holdings (arrays in ``assets`` order).

    A NaN target means 'no decision' (missing data): no order. An order worth less than the
    instrument's min notional is skipped, unless it closes the position entirely (reduce-only
    orders are exempt on Binance).
    """
    rows = []
    stamp = bar_end.strftime("%y%m%d%H%M")
    for asset, target, current, price in zip(assets, target_shares, holdings, prices, strict=True):
        if not np.isfinite(target):
            continue
        quantity = round(float(target) - float(current), 10)
        if quantity == 0:
            continue
        notional = quantity * float(price)
        if not abs(notional) >= instrument_of(config, asset).min_notional and target != 0:
            continue
        rows.append(
            {
                "bar_end": bar_end,
                "asset": asset,
                "client_order_id": client_order_id(run_id, stamp, asset),
                "side": "buy" if quantity > 0 else "sell",
                "quantity": quantity,
                "decision_price": float(price),
                "notional_estimate": notional,
                "submitted_at": now,
            }
        )
    return rows
