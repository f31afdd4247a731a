"""The figures an operator watches for one live bar, from its session's log dir: the bar's PnL, the
session's PnL so far (the cumulative sum of ``portfolio/statistics``' pnl since the session's first
bar), net wealth, GMV, leverage, fees and funding (the bar's and the session's), the number of
positions and the largest one (``portfolio/holdings_notional``).

A live bar must stay fast, and a day of 1-minute bars is 1,440 parts per table (one per bar): reading
them all at every bar costs a second or more by the end of the day. So a bar reads its own parts (its
statistics row, its holdings) and the session's running totals from ``session_totals.json``, a cache
of the statistics' sums up to the last bar summed, and adds the statistics parts written since (one,
usually). The cache is derived, never the record: missing, unreadable, or behind a part written
before the bar it covers (a bar recorded late), it is rebuilt from the table; the figures are the
same with it or without it.

A skipped bar (no statistics row of its own) reports what the session knows: its PnL and fees so far,
and the net wealth of its last traded bar (``as_of``); before any traded bar, what the session started
with (the first traded bar's wealth before its PnL, reported late; else its state's cash and
holdings, carried over from the previous session; else the initial cash).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from prod_system.config import load_config
from prod_system.errors import ProdSystemError
from prod_system.log_dir import LogDir, conform, part_name
from prod_system.runs.live import STATE_FILE

STATISTICS = "portfolio/statistics"
HOLDINGS = "portfolio/holdings_notional"
TOTALS_FILE = "session_totals.json"


@dataclass
class BarFigures:
    """One bar's figures; None where the log dir does not say (a skipped bar has no GMV of its own;
    an old session's statistics have no fees or funding)."""

    bar_end: pd.Timestamp
    traded: bool  # the bar has its statistics row
    session_pnl: float
    net_wealth: float | None
    as_of: pd.Timestamp | None  # the bar whose marks net_wealth is of (None: the session's state)
    traded_bars: int  # bars with a statistics row in the session up to this one
    bar_pnl: float | None = None
    gmv: float | None = None
    leverage: float | None = None
    bar_fees: float | None = None
    session_fees: float | None = None
    bar_funding: float | None = None
    session_funding: float | None = None
    positions: int | None = None
    largest_asset: str | None = None  # the largest holding by absolute notional, its USDT value signed
    largest_notional: float | None = None


@dataclass
class _Totals:
    """Sums of the statistics parts up to ``through`` (the last part's name); ``parts`` of them."""

    through: str = ""
    parts: int = 0
    rows: int = 0
    pnl: float = 0.0
    fees: float | None = None
    funding: float | None = None
    last_bar: str | None = None  # the last row's bar_end (ISO)
    net_wealth: float | None = None  # its net wealth

    def add(self, rows: pd.DataFrame) -> None:
        """Add statistics rows (in bar order)."""
        if rows.empty:
            return
        self.rows += len(rows)
        self.pnl += float(rows["pnl"].sum())
        for name in ("fees", "funding"):
            known = rows[name].dropna()
            if len(known):
                setattr(self, name, (getattr(self, name) or 0.0) + float(known.sum()))
        self.last_bar = pd.Timestamp(rows["bar_end"].iloc[-1]).isoformat()
        self.net_wealth = float(rows["net_wealth"].iloc[-1])


def bar_figures(log_dir: str | Path | LogDir, bar_end: pd.Timestamp) -> BarFigures:
    """The figures of the bar ending at ``bar_end`` in a live session's log dir (one part per bar, as a
    live session writes them); updates the session's running totals (``TOTALS_FILE``) as it goes."""
    logs = log_dir if isinstance(log_dir, LogDir) else LogDir(log_dir)
    bar_end = pd.Timestamp(bar_end).tz_convert("UTC")
    own = part_name(bar_end)  # the part a live session writes for the bar
    every_part = _parts(logs.path / STATISTICS)
    parts = [name for name in every_part if name <= own]
    totals, read = _totals(logs, parts)
    row = None
    if parts and parts[-1] == own:
        if read is None or not (read["bar_end"] == bar_end).any():  # summed by an earlier call
            read = logs.read_part(STATISTICS, logs.path / STATISTICS / own)
        rows = read[read["bar_end"] == bar_end]
        row = rows.iloc[-1] if len(rows) else None
    if totals.last_bar is not None:
        net_wealth, as_of = totals.net_wealth, pd.Timestamp(totals.last_bar)
    else:
        net_wealth, as_of = _start_wealth(logs, every_part), None
    figures = BarFigures(
        bar_end=bar_end,
        traded=row is not None,
        session_pnl=totals.pnl,
        net_wealth=net_wealth,
        as_of=as_of,
        traded_bars=totals.rows,
        session_fees=totals.fees if totals.rows else 0.0,  # none paid yet
        session_funding=totals.funding if totals.rows else 0.0,
    )
    if row is not None:
        figures.bar_pnl = float(row["pnl"])
        figures.gmv = float(row["gmv"])
        figures.leverage = _number(row["leverage"])
        figures.bar_fees = _number(row["fees"])
        figures.bar_funding = _number(row["funding"])
        _add_positions(figures, logs, own, bar_end)
    return figures


def _parts(folder: Path) -> list[str]:
    """The part names of a table, in bar order (their names sort as their first bars)."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if e.name.startswith("part-") and e.name.endswith(".parquet"))
    except FileNotFoundError:
        return []


def _totals(logs: LogDir, parts: list[str]) -> tuple[_Totals, pd.DataFrame | None]:
    """The statistics' sums over ``parts``: the cached sums, plus the parts after them (and their rows,
    None if none); the cache rebuilt when it covers other parts than these (a part written late, or a
    bar after ``parts``)."""
    totals = _read_totals(logs.path / TOTALS_FILE)
    if totals is not None:
        covered = sum(1 for name in parts if name <= totals.through)
        if covered != totals.parts or (totals.through and (not parts or totals.through > parts[-1])):
            totals = None
    totals = totals or _Totals()
    fresh = [name for name in parts if name > totals.through]
    rows = None
    if fresh:
        folder = logs.path / STATISTICS
        tables = [conform(STATISTICS, pq.read_table(folder / name)) for name in fresh]
        rows = pa.concat_tables(tables, promote_options="permissive").to_pandas()
        totals.add(rows)
        totals.through, totals.parts = fresh[-1], totals.parts + len(fresh)
        logs.write_json(TOTALS_FILE, totals.__dict__)
    return totals, rows


def _read_totals(path: Path) -> _Totals | None:
    try:
        return _Totals(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):  # none yet, or unreadable: rebuilt
        return None


def _start_wealth(logs: LogDir, parts: list[str]) -> float | None:
    """The session's net wealth before its first traded bar: the first statistics row's net wealth less
    its PnL once a bar is traded; before, the state's (cash plus the holdings' last value, carried over
    from the previous session), else the config's initial cash."""
    if parts:
        first = logs.read_part(STATISTICS, logs.path / STATISTICS / parts[0])
        if len(first):
            return float(first["net_wealth"].iloc[0] - first["pnl"].iloc[0])
    try:
        state = json.loads((logs.path / STATE_FILE).read_text())
        return float(state["cash"]) + float(sum(state["notional"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # no state yet: a fresh session
        return _initial_cash(logs.path / "system_config.yaml")


_CASH: dict[tuple[str, int], float] = {}  # (config file, its mtime): its initial cash


def _initial_cash(config_file: Path) -> float | None:
    """The config's initial cash, read once per config file (a session skipping its first bars asks at
    each)."""
    try:
        key = (str(config_file), config_file.stat().st_mtime_ns)
        if key not in _CASH:
            _CASH[key] = float(load_config(config_file).portfolio.initial_cash)
        return _CASH[key]
    except (OSError, ProdSystemError):
        return None


def _add_positions(figures: BarFigures, logs: LogDir, own: str, bar_end: pd.Timestamp) -> None:
    """The number of positions held after the bar and the largest one, from the bar's holdings."""
    path = logs.path / HOLDINGS / own
    if not path.exists():
        return
    holdings = logs.read_part(HOLDINGS, path)
    notional = holdings.loc[holdings["bar_end"] == bar_end].set_index("asset")["notional"].fillna(0.0)
    held = notional[notional != 0]
    figures.positions = len(held)
    if len(held):
        largest = held.abs().idxmax()
        figures.largest_asset, figures.largest_notional = str(largest), float(held[largest])


def _number(value) -> float | None:
    """A float, None for a null or NaN (leverage on no wealth, fees in an old session's statistics)."""
    if value is None or pd.isna(value):
        return None
    value = float(value)
    return value if math.isfinite(value) else None
