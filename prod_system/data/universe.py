"""Universes chosen from the market data: the list a run trades, from a rule ('all', 'top:N/WINDOW').

A run trades an explicit list of assets, its identity (``SystemConfig.universe``, the run id, the log
dir's ``system_config.yaml``). A rule (``config.UniverseRule``) is resolved here into that list once,
as of the run's start, and recorded beside it (``universe_rule``):

- ``all``: every asset of the snapshot file (the assets column alone is read) or of the csv folder
  that is trading at the start, as its instruments table says (``data.instruments``: the config's
  file, else the snapshot's table, else the bundled rules): not onboarded yet at the start, or a
  status other than TRADING in a table not dated after the start, leaves an asset out. A table
  fetched after the start says nothing of the start (an asset delisted since was trading then: leaving
  it out would be survivorship bias); the data guard stops trading an asset whose candles stop.
  An asset no table knows stays (the run's start names the command that fetches its rules). A market
  database holds whatever was ingested, so it has no 'all'.
- ``top:N/WINDOW``: the N assets of largest quote volume (volume x typical price (high+low+close)/3)
  summed over the candles that opened in the WINDOW before the start and were known at the start
  (``knowledge_ts <= start``): no candle of the run's own window, nor one revised later, can move
  an asset in or out. Ties go by name; an asset without any candle in the window is not ranked.
  A live session ranks when it begins, on what it knows then, but still only the candles closed by
  its start. With ``universe_each_day`` a simulation ranks again at each session day's start
  (``daily_top``): it trades the union, and an asset outside its bar's day's list predicts 0.

Without a universe (no list, no rule), a simulation over a file trades the file's assets ('all'); one
over the database, the bundled list.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prod_system.common.timeutil import format_duration
from prod_system.config import ARCHIVE_SOURCE, SystemConfig, UniverseRule, build_config, is_database, parse_universe
from prod_system.data.binance_archive import archive_assets
from prod_system.data.instruments import known_instruments
from prod_system.data.market_data import snapshot_parts
from prod_system.data.market_db import MarketDatabase
from prod_system.data.sources import load_source
from prod_system.errors import ConfigError, MarketDataError

CSV_SUFFIX = "_USDT.csv.gz"
TRADING = "TRADING"  # the status of a tradable contract in Binance's exchangeInfo


def quote_volumes(
    candles: pd.DataFrame, start: pd.Timestamp, window: pd.Timedelta, known_at: pd.Timestamp | None = None
) -> pd.Series:
    """Per asset, the quote volume of its candles in [start - window, start) known at ``known_at``
    (``start``; a live session ranks when it begins, just after its start: see ``resolve_config``);
    assets without such a candle are absent. Sorted: largest first, ties by name."""
    known_at = start if known_at is None else max(known_at, start)
    inside = (candles["bar_start"] >= start - window) & (candles["bar_end"] <= start)
    known = candles[inside & (candles["knowledge_ts"] <= known_at)]
    typical = (known["high"] + known["low"] + known["close"]) / 3
    volume = (known["volume"] * typical).groupby(known["asset"].astype(str)).sum(min_count=1).dropna()
    frame = volume.rename("quote_volume").rename_axis("asset").reset_index()
    frame = frame.sort_values(["quote_volume", "asset"], ascending=[False, True], kind="stable")
    return frame.set_index("asset")["quote_volume"]


def top_assets(
    candles: pd.DataFrame, start: pd.Timestamp, rule: UniverseRule, known_at: pd.Timestamp | None = None
) -> list[str]:
    """The ``rule.count`` assets of largest quote volume over ``rule.window`` before ``start``."""
    volumes = quote_volumes(candles, start, rule.window, known_at)
    if volumes.empty:
        raise ConfigError(
            f"invalid system config: field 'universe': {rule}: no candle known at {start:%Y-%m-%d %H:%M} UTC "
            f"opened in the {format_duration(rule.window)} before it, to rank the assets by"
        )
    return list(volumes.index[: rule.count])


def file_assets(source: str) -> list[str]:
    """The assets of a snapshot (its assets column only; a partitioned one's months), a csv folder or an
    archive folder (its files' names), by name."""
    if is_database(source):
        raise ConfigError(
            f"invalid system config: field 'universe': 'all' needs a snapshot file or a csv folder; the market "
            f"database {source.split('@')[-1]} holds whatever was ingested: give a list or top:N"
        )
    kind, _, location = source.partition(":")
    if kind == "csv":
        folder = Path(location)
        if not folder.is_dir():
            raise MarketDataError(f"market data folder {folder} does not exist")
        return sorted(path.name.removesuffix(CSV_SUFFIX) for path in folder.glob(f"*{CSV_SUFFIX}"))
    if kind == ARCHIVE_SOURCE:
        return sorted(archive_assets(location))
    path = Path(location if kind == "parquet" else source)
    if not path.exists():
        raise MarketDataError(f"market data snapshot {path} not found")
    files = list(snapshot_parts(path).values()) if path.is_dir() else [path]  # a snapshot partitioned by month
    assets: set[str] = set()
    try:
        for file in files:
            assets |= {str(asset) for asset in pc.unique(pq.read_table(file, columns=["asset"])["asset"]).to_pylist()}
    except Exception as error:  # pyarrow raises many kinds for a bad file
        raise MarketDataError(f"cannot read market data snapshot {path}: {error}") from None
    return sorted(assets)


def trading_assets(assets: list[str], source: str, instruments: str | None, start: pd.Timestamp) -> list[str]:
    """Those of ``assets`` trading at ``start`` as the instruments table says (see the module's 'all')."""
    table, _ = known_instruments(assets, source, instruments)
    dated_after = table.fetched_at is not None and table.fetched_at > start
    trading = []
    for asset in assets:
        rules = table.get(asset)
        if rules is not None and rules.onboard_date is not None and rules.onboard_date > start:
            continue
        if rules is not None and not dated_after and rules.status != TRADING:
            continue
        trading.append(asset)
    return trading


def _window_candles(
    source: str,
    start: pd.Timestamp,
    window: pd.Timedelta,
    delay: pd.Timedelta,
    candidates: list[str],
    known_at: pd.Timestamp,
) -> pd.DataFrame:
    """The candles ``top_assets`` ranks: of the file's assets, or of ``candidates`` in a database (as
    known at ``known_at``: a candle revised after it counts as it was then)."""
    since = start - window
    if is_database(source):
        file = source.split(":///", 1)[-1] if source.startswith("sqlite:") else None
        if file and file != ":memory:" and not Path(file).exists():  # reading never creates a database
            raise MarketDataError(f"market database {file} does not exist")
        database = MarketDatabase(source)
        try:
            return database.snapshot(candidates, since, start, now=known_at)
        finally:
            database.close()
    return load_source(source, file_assets(source), delay, (since, start))  # a long history: only the window


def resolve(
    rule: UniverseRule,
    source: str,
    start: pd.Timestamp,
    delay: pd.Timedelta,
    candidates: list[str],
    instruments: str | None = None,
    known_at: pd.Timestamp | None = None,
) -> list[str]:
    """The assets ``rule`` picks as of ``start``: 'all' every asset of the file trading then, 'top:N' the
    ranking of the file's assets (a database's: of ``candidates``, the assets it records)."""
    known_at = start if known_at is None else max(known_at, start)
    if rule.count is None:
        assets = file_assets(source)
        trading = trading_assets(assets, source, instruments, start)
        if not trading:
            raise ConfigError(
                f"invalid system config: field 'universe': all: none of the {len(assets)} assets of {source} is "
                f"trading at {start:%Y-%m-%d %H:%M} UTC, as its instruments table says"
            )
        return trading
    candles = _window_candles(source, start, rule.window, delay, candidates, known_at)
    return top_assets(candles, start, rule, known_at)


def resolve_config(config: SystemConfig, spec: str | None = None, known_at: pd.Timestamp | None = None) -> SystemConfig:
    """``config`` with its universe resolved: from ``spec`` (the --universe option: a list, 'all' or
    'top:N'), else from its ``universe_rule``, else, when it lists no universe, the file's assets
    ('all'; a database: the bundled list). The list goes to ``universe``, the rule to ``universe_rule``.

    ``known_at``: when the ranking is made, if after the start: a live session begins a few seconds
    into its first bar, and the candles an ingestion has just backfilled are known only since then
    (still only those that closed by the start count; the present has no look-ahead). A simulation,
    and the daily session that every bar run of the day resolves again, rank as of the start."""
    field = "universe" if spec is not None else "universe_rule"
    try:
        parsed = parse_universe(spec) if spec is not None else None
    except ValueError as error:
        raise ConfigError(f"invalid system config: field 'universe': {error}") from None
    if isinstance(parsed, list):
        _no_daily(config)
        return _listed(_with_universe(config, parsed, None))
    rule = parsed or (parse_universe(config.universe_rule) if config.universe_rule else None)
    if rule is None or rule.count is None:
        _no_daily(config)
    if config.universe_each_day and config.run_mode != "simulation":
        raise ConfigError(
            "invalid system config: field 'universe_each_day': a live session ranks its top:N at its own start "
            "(the daily session job: each day); universe_each_day ranks again within a simulation"
        )
    if rule is None:
        if is_database(config.market_data.source):
            return config
        if "universe" in config.model_fields_set:
            return _listed(config)
        rule = UniverseRule()
    by_day = None
    try:
        data = config.market_data
        if config.universe_each_day:
            by_day = daily_top(rule, data.source, config.start, config.end, data.delay, config.universe)
            assets = list(dict.fromkeys(asset for day in by_day.values() for asset in day))
        else:
            assets = resolve(rule, data.source, config.start, data.delay, config.universe, data.instruments, known_at)
    except ConfigError as error:
        raise ConfigError(str(error).replace("field 'universe'", f"field '{field}'")) from None
    return _with_universe(config, assets, str(rule), by_day)


def _no_daily(config: SystemConfig) -> None:
    if config.universe_each_day:
        raise ConfigError(
            "invalid system config: field 'universe_each_day': it ranks a top:N universe again each day: give "
            "--universe top:N (or universe_rule: top:N)"
        )


def session_days(start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    """The days whose lists a run's bars use: a bar is decided on the day its end falls in (a bar ending
    at 00:00 is decided on the new day, after the day's ranking)."""
    return pd.date_range(start.floor("1D"), end.floor("1D"), freq="1D")


def daily_top(
    rule: UniverseRule,
    source: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    delay: pd.Timedelta,
    candidates: list[str],
) -> dict[str, list[str]]:
    """Each session day's top:N (YYYY-MM-DD -> assets), ranked at the day's start (the run's start on
    its first day) on the candles known then: a day's list never sees that day."""
    days = session_days(start, end)
    if is_database(source):
        return {f"{day.date()}": resolve(rule, source, max(day, start), delay, candidates) for day in days}
    candles = load_source(source, file_assets(source), delay, (days[0] - rule.window, end))
    return {f"{day.date()}": top_assets(candles, max(day, start), rule) for day in days}


def day_of_bar(bar_end: pd.Series) -> pd.Series:
    """The session day (YYYY-MM-DD) whose list a bar uses (see ``session_days``)."""
    return bar_end.dt.floor("1D").dt.strftime("%Y-%m-%d")


def outside_the_days_universe(config: SystemConfig, predictions: pd.DataFrame) -> pd.Series:
    """Per row of a predictions table (bar_end, asset), whether the asset is outside its bar's day's
    list (``universe_by_day``): its prediction becomes 0, a zero target that closes its position."""
    if not config.universe_by_day:
        return pd.Series(False, index=predictions.index)
    members = {(day, asset) for day, assets in config.universe_by_day.items() for asset in assets}
    keys = zip(day_of_bar(pd.to_datetime(predictions["bar_end"], utc=True)), predictions["asset"], strict=True)
    return pd.Series([key not in members for key in keys], index=predictions.index)


def _listed(config: SystemConfig) -> SystemConfig:
    """A listed universe, checked against the file's assets (a typo is named before anything runs)."""
    source = config.market_data.source
    if is_database(source):
        return config
    available = file_assets(source)
    unknown = [asset for asset in config.universe if asset not in available]
    if unknown:
        files = f"no {', '.join(a + CSV_SUFFIX for a in unknown)}; " if source.startswith("csv:") else ""
        raise ConfigError(
            f"invalid system config: field 'universe': {','.join(unknown)} not in the market data {source} "
            f"({files}its assets: {_abridged(available)})"
        )
    return config


def _abridged(assets: list[str], shown: int = 12) -> str:
    more = f" and {len(assets) - shown} more" if len(assets) > shown else ""
    return ",".join(assets[:shown]) + more


def _with_universe(
    config: SystemConfig, assets: list[str], rule: str | None, by_day: dict[str, list[str]] | None = None
) -> SystemConfig:
    data = config.model_dump()
    data.update(universe=assets, universe_rule=rule, universe_by_day=by_day)
    return build_config(data)
