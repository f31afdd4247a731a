"""What trading costs, in one place for the mocked broker, the portfolio and the research portfolio.

- Fees: ``|notional| x rate`` per fill, the taker rate for a fill that takes liquidity (every fill
  of the mocked broker: it models market orders), as Binance charges them.
- Slippage (the mocked broker's, off by default): the fill price moves against the order by
  ``half_spread_bps + impact_bps_per_million x |notional| / 1e6`` basis points of the price.
- Funding: at a settlement, a position pays ``position x mark x rate`` (received when negative):
  ``-shares x mark x rate`` is what it adds to the account.
"""

from __future__ import annotations

import numpy as np

from prod_system.config import CostsConfig

BPS = 1e-4
Values = np.ndarray | float


def slipped_prices(prices: Values, quantities: Values, costs: CostsConfig) -> Values:
    """Fill prices after slippage: higher for a buy, lower for a sell (unchanged when slippage is off).
    Arrays or single floats alike, as are the other functions here."""
    slippage = costs.slippage
    if not (slippage.half_spread_bps or slippage.impact_bps_per_million):
        return prices
    bps = slippage.half_spread_bps + slippage.impact_bps_per_million * np.abs(quantities * prices) / 1e6
    return prices * (1 + np.sign(quantities) * bps * BPS)


def taker_fees(notional: Values, costs: CostsConfig) -> Values:
    """The fee of each fill of a market order (USDT, >= 0 unless the rate is a rebate)."""
    return np.abs(notional) * costs.fees.taker


def funding_payments(shares: np.ndarray, marks: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """What each settlement adds to the account: a long pays a positive rate, a short receives it."""
    return -shares * marks * rates
