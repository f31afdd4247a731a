"""Time helpers: every timestamp in the system is a tz-aware UTC ``pandas.Timestamp``."""

from __future__ import annotations

import re
from datetime import datetime

import pandas as pd

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|min|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | int | float | pd.Timedelta) -> pd.Timedelta:
    """Parse '5m', '1h', '30s', '1d' (or seconds as a number) into a Timedelta."""
    if isinstance(value, pd.Timedelta):
        return value
    if isinstance(value, (int, float)):
        return pd.Timedelta(seconds=float(value))
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"invalid duration {value!r}: expected e.g. '30s', '1m', '5m', '1h', '1d'")
    return pd.Timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def format_duration(delta: pd.Timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def to_utc(value: str | datetime | pd.Timestamp) -> pd.Timestamp:
    """Parse a timestamp; naive values are refused so that no local time sneaks in."""
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone: write it in UTC, e.g. 2023-07-21T00:00:00Z")
    return ts.tz_convert("UTC")


def compact(ts: pd.Timestamp) -> str:
    """The log-dir spelling of a timestamp: YYYYMMDD_HHMMSS (UTC)."""
    return ts.tz_convert("UTC").strftime("%Y%m%d_%H%M%S")


def bar_ends(start: pd.Timestamp, end: pd.Timestamp, bar: pd.Timedelta) -> pd.DatetimeIndex:
    """Bar end times of the window (start, end]: the bars a session trades."""
    return pd.date_range(start + bar, end, freq=bar)


def is_aligned(ts: pd.Timestamp, bar: pd.Timedelta) -> bool:
    return ts.value % bar.value == 0
