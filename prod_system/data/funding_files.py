"""Funding rates kept in files of the ccxt/freqtrade form: a JSON list of ``[timestamp_ms, rate, ...]``
rows per asset, named ``{ASSET}_USDT-{interval}-funding_rate.json`` (e.g. XRP_USDT-8h-funding_rate.json),
the settlement time in ms (a few ms after the hour) and the rate per settlement; further columns
(freqtrade writes zeros) are ignored. A 'csv:DIR' source keeps them in ``DIR/funding/``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from prod_system.data.funding import empty_funding, known_after, normalize_funding
from prod_system.errors import MarketDataError

FUNDING_FOLDER = "funding"  # inside a csv:DIR source
JSON_NAME_FORMAT = "ASSET_USDT-INTERVAL-funding_rate.json (e.g. XRP_USDT-8h-funding_rate.json)"
_JSON_NAME = re.compile(r"^(?P<asset>[A-Z0-9]+)_USDT(?:-[0-9]+[mhd])?-funding_rate\.json$")


def asset_of_json(path: Path) -> str:
    """The asset a funding JSON file is of, from its name."""
    match = _JSON_NAME.match(path.name)
    if not match:
        raise MarketDataError(f"{path}: the file name does not say its asset: {JSON_NAME_FORMAT}")
    return match["asset"]


def read_funding_json(path: str | Path, delay: pd.Timedelta, asset: str | None = None) -> pd.DataFrame:
    """The settlements of one JSON file, each known at its time + ``delay`` (files are history); a
    file or row that is not of the form is a ``MarketDataError`` naming the file and the row."""
    path = Path(path)
    asset = asset or asset_of_json(path)
    try:
        rows = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise MarketDataError(f"{path}: not a funding JSON file ({error})") from None
    if not isinstance(rows, list):
        raise MarketDataError(f"{path}: a funding JSON file is a list of [timestamp_ms, rate, ...] rows")
    times, rates = [], []
    for number, row in enumerate(rows):
        ok = isinstance(row, list) and len(row) >= 2
        ok = ok and isinstance(row[0], int | float) and not isinstance(row[0], bool) and math.isfinite(row[0])
        ok = ok and isinstance(row[1], int | float) and not isinstance(row[1], bool)
        if not ok or row[0] != int(row[0]) or row[0] < 0:
            raise MarketDataError(f"{path}: row {number} {str(row)[:80]} is not [timestamp_ms, rate, ...]")
        times.append(int(row[0]))
        rates.append(float(row[1]))
    if not times:
        return empty_funding()
    settled = pd.to_datetime(times, unit="ms", utc=True)
    frame = pd.DataFrame(
        {"asset": asset, "funding_time": settled, "rate": rates, "knowledge_ts": known_after(settled, delay)}
    )
    return normalize_funding(frame, str(path))


def read_funding_dir(
    directory: str | Path,
    universe: list[str] | None,
    delay: pd.Timedelta,
    window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> pd.DataFrame:
    """The funding JSON files of a folder (of ``universe``'s assets; all if None or empty); with
    ``window`` (start, end) the settlements in [start, end]. No folder or no file: an empty table."""
    directory = Path(directory)
    if not directory.is_dir():
        return empty_funding()
    wanted = set(universe or [])
    frames = []
    for path in sorted(directory.glob("*funding_rate.json")):
        asset = asset_of_json(path)
        if not wanted or asset in wanted:
            frames.append(read_funding_json(path, delay, asset))
    if not frames:
        return empty_funding()
    funding = pd.concat(frames, ignore_index=True)
    if window is not None:
        funding = funding[(funding["funding_time"] >= window[0]) & (funding["funding_time"] <= window[1])]
    return normalize_funding(funding, str(directory))
