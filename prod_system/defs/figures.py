"""How figures read in the Dagster UI's metadata: amounts in USDT to the cent (a float's 16 digits
say nothing more and are hard to read)."""

from __future__ import annotations


def usd(value: float) -> float:
    """An amount in USDT, rounded to the cent."""
    return round(float(value), 2)
