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


UTC_EXAMPLE = "2023-07-21T00:00:00Z"
# ISO 8601: a date, optionally a time (T or a space), optionally a zone (Z or an offset)
_ISO_TIMESTAMP = re.compile(
    r"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?\s*([Zz]|UTC|[+-]\d{2}(:?\d{2})?)?)?$"
)


def to_utc(value: str | datetime | pd.Timestamp) -> pd.Timestamp:
    """Parse a UTC timestamp. Refused, so that no local time sneaks in: anything but ISO 8601, a
    time without a zone, and a zone other than UTC (the message gives the instant's UTC spelling)."""
    not_understood = f"timestamp {value!r} is not understood: write it in ISO 8601 UTC, e.g. {UTC_EXAMPLE}"
    if isinstance(value, str) and not _ISO_TIMESTAMP.match(value.strip()):
        raise ValueError(not_understood)
    try:
        ts = pd.Timestamp(value.strip() if isinstance(value, str) else value)
    except ValueError:  # the right shape but no such time: 2023-13-45, 25:00
        if isinstance(value, str):
            raise ValueError(not_understood) from None
        raise
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone: write it in UTC, e.g. {UTC_EXAMPLE}")
    if ts.utcoffset():
        zone, utc = ts.strftime("%z"), ts.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
        raise ValueError(f"timestamp {value!r} is in UTC{zone[:3]}:{zone[3:]}: times must be UTC (this is {utc})")
    return ts.tz_convert("UTC")


def compact(ts: pd.Timestamp) -> str:
    """The log-dir spelling of a timestamp: YYYYMMDD_HHMMSS (UTC)."""
    return ts.tz_convert("UTC").strftime("%Y%m%d_%H%M%S")


def bar_ends(start: pd.Timestamp, end: pd.Timestamp, bar: pd.Timedelta) -> pd.DatetimeIndex:
    """Bar end times of the window (start, end]: the bars a session trades."""
    return pd.date_range(start + bar, end, freq=bar)


def is_aligned(ts: pd.Timestamp, bar: pd.Timedelta) -> bool:
    return ts.value % bar.value == 0
