"""Assets the package does not ship (ADA, LTC, TRX): their exchange rules as a table, and candles for them
made by renaming bundled ones (XRP's prices stand in for ADA's, SOL's for LTC's, DOGE's for TRX's).

The steps and ticks are Binance USDT-M's for these symbols (ADA and TRX trade in steps of 1, LTC ticks
0.01, TRX 0.00001); the bounds, dates and brackets are test values, each symbol's different, so that a
rule served from the wrong row shows."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pandas as pd

from prod_system.data.instruments import Bracket, InstrumentRules, InstrumentTable
from prod_system_tests.kit.data import bundled_klines, write_klines

OTHERS = ["ADA", "LTC", "TRX"]
STAND_INS = {"ADA": "XRP", "LTC": "SOL", "TRX": "DOGE"}  # the bundled asset whose candles each one replays


def _brackets(first_leverage: int, first_cap: int) -> tuple[Bracket, ...]:
    d = Decimal
    return (
        Bracket(1, first_leverage, d(0), d(first_cap), d("0.01"), d(0)),
        Bracket(2, 10, d(first_cap), d(first_cap * 10), d("0.025"), d(first_cap) * d("0.015")),
        Bracket(3, 2, d(first_cap * 10), d(first_cap * 1000), d("0.1"), d(first_cap) * d("0.765")),
    )


def _rules(asset, step, min_qty, tick, min_price, max_qty, market_max_qty, min_notional, onboard, brackets):
    d = Decimal
    return InstrumentRules(
        asset=asset,
        symbol=f"{asset}USDT",
        status="TRADING",
        onboard_date=pd.Timestamp(onboard, tz="UTC"),
        step=d(step),
        min_qty=d(min_qty),
        max_qty=d(max_qty),
        market_max_qty=d(market_max_qty),
        tick=d(tick),
        min_price=d(min_price),
        max_price=d(tick) * 10_000_000,
        min_notional=d(min_notional),
        price_precision=-d(tick).as_tuple().exponent,
        quantity_precision=max(0, -d(step).as_tuple().exponent),
        brackets=brackets,
    )


def other_rules() -> InstrumentTable:
    """The rules of ADA, LTC and TRX, as `prod-system instruments` writes them."""
    rows = [
        _rules("ADA", "1", "1", "0.0001", "0.0174", "10000000", "2000000", "5", "2020-01-31", _brackets(75, 5_000)),
        _rules("LTC", "0.001", "0.01", "0.01", "3.61", "10000", "3000", "20", "2020-01-09", _brackets(50, 10_000)),
        _rules("TRX", "1", "1", "0.00001", "0.00132", "50000000", "5000000", "5", "2020-01-16", _brackets(25, 20_000)),
    ]
    return InstrumentTable({r.asset: r for r in rows}, source="test rules of ADA, LTC and TRX", brackets="fetched")


def other_candles(candles: pd.DataFrame) -> pd.DataFrame:
    """Candles of ADA, LTC and TRX: their stand-ins' (a long candle table), renamed."""
    renamed = {stand_in: asset for asset, stand_in in STAND_INS.items()}
    rows = candles[candles["asset"].isin(renamed)]
    return rows.assign(asset=rows["asset"].map(renamed)).reset_index(drop=True)


def write_bad_instruments(folder: Path) -> None:
    """The bad-input table's files: ``bad-instruments.json`` (ADA's step is not a number) and a csv
    market-data folder ``k-others`` of ADA's candles (2023-07-20 and 21), an asset without bundled rules."""
    text = other_rules().select(["ADA"]).to_json().replace('"step": "1"', '"step": "abc"')
    (folder / "bad-instruments.json").write_text(text)
    xrp = bundled_klines("XRP")
    start, end = pd.Timestamp("2023-07-20T00:00:00Z"), pd.Timestamp("2023-07-22T00:00:00Z")
    window = xrp[(xrp["open_time"] >= start) & (xrp["open_time"] < end)]
    write_klines(folder / "k-others", {"ADA": window})
