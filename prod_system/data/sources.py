"""Where candles (and their funding rates) come from: a source spec ('csv:DIR', 'binance-archive:DIR',
'parquet:FILE', a .parquet path, or the real-time market database) turned into the long snapshot table.
It sits above both the snapshot files (``market_data``) and the database (``market_db``), which is what
breaks their old import cycle."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from prod_system.config import ARCHIVE_SOURCE, is_database
from prod_system.data.binance_archive import read_archive, read_archive_funding
from prod_system.data.funding import LOOK_BEHIND, empty_funding
from prod_system.data.funding_files import FUNDING_FOLDER, read_funding_dir
from prod_system.data.market_data import (
    normalize_snapshot,
    read_csv_dir,
    read_snapshot,
    read_snapshot_funding,
    with_knowledge_time,
)
from prod_system.data.market_db import MarketDatabase
from prod_system.errors import MarketDataError


def load_source(
    source: str,
    universe: list[str],
    delay: pd.Timedelta,
    window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> pd.DataFrame:
    """Load candles from a source spec: 'csv:DIR', 'binance-archive:DIR' (Binance's public data
    archive; every asset of the folder for an empty ``universe``), 'parquet:FILE', a .parquet path (a
    file, or a snapshot partitioned by month), or the real-time market database ('sqlite:///FILE',
    'postgresql://...'; as recorded, with their own knowledge times).

    ``window`` (start, end): the candles opening in it are all that the caller needs. The database, the
    archive and a partitioned snapshot read only those (a long history never loads whole); a CSV folder
    or a one-file snapshot returns all it holds."""
    if is_database(source):
        database = _open_database(source)
        try:
            start, end = window or _ALL_TIME
            return database.snapshot(universe, start, end)
        finally:
            database.close()
    kind, _, location = source.partition(":")
    if kind == "csv":  # repeated rows kept, as a snapshot's: the data guard screens and reports them
        candles = with_knowledge_time(read_csv_dir(location, universe), delay)
        return normalize_snapshot(candles, duplicates="keep", where=f"csv:{location}")
    if kind == ARCHIVE_SOURCE:
        candles = with_knowledge_time(read_archive(location, universe, window), delay)
        return normalize_snapshot(candles, duplicates="keep")  # conflicting copies: the data guard's to judge
    if kind == "parquet":
        return read_snapshot(location, window)
    if source.endswith(".parquet"):
        return read_snapshot(source, window)
    raise MarketDataError(
        f"unknown market data source {source!r}: use 'csv:DIR', "
        f"'{ARCHIVE_SOURCE}:DIR', 'parquet:FILE' or a .parquet file"
    )


def reads_by_window(source: str) -> bool:
    """Whether ``load_source`` reads only the window's candles of ``source`` (the database, the archive,
    a partitioned snapshot), so that a long dump can go one month at a time."""
    kind, _, location = source.partition(":")
    if is_database(source) or kind == ARCHIVE_SOURCE:
        return True
    return Path(location if kind == "parquet" else source).is_dir()


_ALL_TIME = (pd.Timestamp("1970-01-01", tz="UTC"), pd.Timestamp("2262-01-01", tz="UTC"))


def _open_database(source: str) -> MarketDatabase:
    if source.startswith("sqlite:"):  # reading never creates a database (a live session does)
        file = source.split(":///", 1)[-1]
        if file and file != ":memory:" and not Path(file).exists():
            raise MarketDataError(f"market database {file} does not exist")
    return MarketDatabase(source)


def load_funding(
    source: str,
    universe: list[str],
    delay: pd.Timedelta,
    window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> pd.DataFrame:
    """The funding rates (``data.funding``'s table) of ``universe`` (every asset of the source if empty)
    that go with ``load_source``'s candles of the same source: a snapshot's funding file, the
    database's funding_rates table (as recorded), the fundingRate zips of a 'binance-archive:DIR', the
    JSON files of a 'csv:DIR''s ``funding/`` folder (files known at their settlement + ``delay``).

    ``window`` (start, end): the settlements in [start - LOOK_BEHIND, end] (the look-behind tells
    ``funding_schedule`` that an asset has data when the window holds no settlement of it). A source
    with none gives an empty table: the runs then use the config's assumed rate."""
    span = _ALL_TIME if window is None else (window[0] - LOOK_BEHIND, window[1])
    if is_database(source):
        database = _open_database(source)
        try:
            return database.funding(universe, *span)
        finally:
            database.close()
    kind, _, location = source.partition(":")
    if kind == "csv":
        funding = read_funding_dir(Path(location) / FUNDING_FOLDER, universe, delay, span)
    elif kind == ARCHIVE_SOURCE:
        funding = read_archive_funding(location, universe, delay, span)
    elif kind == "parquet" or source.endswith(".parquet"):
        path = location if kind == "parquet" else source
        if not Path(path).exists():
            raise MarketDataError(f"market data snapshot {path} not found")
        funding = read_snapshot_funding(path, span)
    else:
        raise MarketDataError(
            f"unknown market data source {source!r}: use 'csv:DIR', "
            f"'{ARCHIVE_SOURCE}:DIR', 'parquet:FILE' or a .parquet file"
        )
    if universe and len(funding):
        funding = funding[funding["asset"].isin(universe)].reset_index(drop=True)
    return funding if len(funding) else empty_funding()
