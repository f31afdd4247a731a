"""The real-time market database: one row per (exchange, symbol, 1-minute bar), with its knowledge time.

PostgreSQL in production, SQLite as the embedded default, through one code path (SQLAlchemy Core;
psycopg 3 drives PostgreSQL). The URL is ``sqlite:///FILE`` or ``postgresql://user@host:port/db``;
a PostgreSQL password comes from the environment (``PGPASSWORD``, or a ``.pgpass`` file), never
from a config file. Times are integer milliseconds since the epoch, UTC.

    candles            the latest version of each candle: OHLCV, bar start and end,
                       knowledge_ms (when this version was written), first_knowledge_ms, revision
    candle_revisions   every version a revision replaced, with when it was replaced

    funding_rates      one row per (exchange, symbol, settlement): the rate, the mark price (NULL if
                       unknown), knowledge_ms (when this version was written), first_knowledge_ms,
                       revision (a rate the exchange revised replaces the old one, with the new
                       knowledge time; the settlement is not known again before its first version)

A re-ingested candle with the same values changes nothing; one with different values (Binance
revises candles now and then) becomes a new revision, and the old version is kept. Reading "as of
now" returns, per candle, the latest version whose knowledge time is at or before now: THE
visibility rule (``CandleStore.visible``) then applies to the snapshot this produces.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    create_engine,
    func,
    select,
    tuple_,
)
from sqlalchemy.engine import Connection, Engine, Row, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError

from prod_system.data.funding import empty_funding, normalize_funding
from prod_system.data.market_data import FIELDS, SNAPSHOT_COLUMNS, normalize_snapshot
from prod_system.errors import DatabaseUnavailable, MarketDataError

EXCHANGE = "binanceusdm"
metadata = MetaData()


def _candle_columns() -> list[Column]:
    return [
        Column("exchange", String(32), primary_key=True),
        Column("symbol", String(32), primary_key=True),
        Column("bar_start_ms", BigInteger, primary_key=True),
        Column("bar_end_ms", BigInteger, nullable=False),
        *[Column(name, Float, nullable=True) for name in FIELDS],
        Column("knowledge_ms", BigInteger, nullable=False),
        Column("first_knowledge_ms", BigInteger, nullable=False),
    ]


candles_table = Table("candles", metadata, *_candle_columns(), Column("revision", Integer, nullable=False))
revisions_table = Table(
    "candle_revisions",
    metadata,
    *_candle_columns(),
    Column("revision", Integer, primary_key=True),
    Column("replaced_ms", BigInteger, nullable=False),
)
funding_table = Table(
    "funding_rates",
    metadata,
    Column("exchange", String(32), primary_key=True),
    Column("symbol", String(32), primary_key=True),
    Column("funding_ms", BigInteger, primary_key=True),
    Column("rate", Float, nullable=False),
    Column("mark_price", Float, nullable=True),
    Column("knowledge_ms", BigInteger, nullable=False),
    Column("first_knowledge_ms", BigInteger, nullable=False),
    Column("revision", Integer, nullable=False),
)
# "what arrived lately" (ingestion lag, staleness checks); the primary key serves the range reads
Index("candles_by_knowledge", candles_table.c.exchange, candles_table.c.knowledge_ms)


@dataclass
class UpsertResult:
    new: int = 0
    revised: int = 0
    unchanged: int = 0


def _ms(ts: pd.Timestamp | pd.Series) -> int | pd.Series:
    if isinstance(ts, pd.Series):
        return ts.astype("datetime64[ns, UTC]").astype("int64") // 1_000_000
    return pd.Timestamp(ts).value // 1_000_000


def engine_for(url: str) -> Engine:
    """An engine for ``sqlite:///FILE`` or ``postgresql://...`` (driven by psycopg 3)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise MarketDataError(
            f"not a database URL: {url!r} (use sqlite:///FILE or postgresql://user@host/db)"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername != "sqlite" and not parsed.drivername.startswith("postgresql+"):
        raise MarketDataError(f"unsupported database {parsed.drivername!r}: use sqlite:///FILE or postgresql://...")
    if parsed.password:
        raise MarketDataError("put the database password in the environment (PGPASSWORD), not in the URL")
    options = {"pool_pre_ping": True}
    if parsed.drivername == "sqlite":
        options["connect_args"] = {"timeout": 30}
    return create_engine(parsed, **options)


def _answering(method):
    """Turn a lost connection into ``DatabaseUnavailable``, one line, without credentials. The pool
    pings before reuse, so the next call reconnects once the server answers again."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (OperationalError, DBAPIError) as error:
            lines = str(getattr(error, "orig", None) or error).strip().splitlines()
            reason = lines[0] if lines else type(error).__name__
            raise DatabaseUnavailable(f"market database {self.where} unreachable: {reason}") from None

    return call


class MarketDatabase:
    """Candles in and out of the real-time market database; the schema is created if missing."""

    def __init__(self, url: str, exchange: str = EXCHANGE):
        self.url = url
        self.exchange = exchange
        self.engine = engine_for(url)
        self.where = self.engine.url.render_as_string(hide_password=True)
        try:
            metadata.create_all(self.engine)  # idempotent: CREATE TABLE / INDEX IF NOT EXISTS
        except OperationalError as error:
            raise MarketDataError(f"cannot open the market database {url}: {error.orig}") from None

    def close(self) -> None:
        self.engine.dispose()

    # -- writing ---------------------------------------------------------------------------------

    @_answering
    def upsert(self, rows: pd.DataFrame, knowledge_ts: pd.Timestamp) -> UpsertResult:
        """Record closed candles (columns asset, bar_start, open, high, low, close, volume) known at
        ``knowledge_ts``: new ones are inserted, changed ones become a new revision, the rest is left."""
        result = UpsertResult()
        if rows.empty:
            return result
        known = _ms(knowledge_ts)
        frame = rows.assign(bar_start_ms=_ms(rows["bar_start"]))
        if (frame["bar_start_ms"] + 60_000 > known).any():
            raise MarketDataError("refusing to record a candle before it has closed")
        keys = list(zip(frame["asset"], frame["bar_start_ms"].astype(int), strict=True))
        with self.engine.begin() as connection:
            existing = self._recorded(connection, keys)
            inserts, inserted = [], set()
            for record in frame.itertuples(index=False):
                key = (record.asset, int(record.bar_start_ms))
                values = {name: _float(getattr(record, name)) for name in FIELDS}
                old = existing.get(key)
                if key in inserted:  # the same candle twice in one batch: the first one counts
                    result.unchanged += 1
                elif old is None:
                    inserts.append(
                        {
                            "exchange": self.exchange,
                            "symbol": key[0],
                            "bar_start_ms": key[1],
                            "bar_end_ms": key[1] + 60_000,
                            **values,
                            "knowledge_ms": known,
                            "first_knowledge_ms": known,
                            "revision": 0,
                        }
                    )
                    inserted.add(key)
                    result.new += 1
                elif any(getattr(old, name) != values[name] for name in FIELDS):
                    self._revise(connection, old, values, known)
                    result.revised += 1
                else:
                    result.unchanged += 1
            if inserts:
                connection.execute(candles_table.insert(), inserts)
        return result

    def _recorded(self, connection: Connection, keys: list[tuple[str, int]]) -> dict[tuple[str, int], Row]:
        """The recorded candles of these (symbol, bar_start_ms) keys, read in chunks of a size every
        database accepts in one IN clause."""
        table = candles_table
        return {
            (row.symbol, row.bar_start_ms): row
            for chunk in _chunks(keys, 500)
            for row in connection.execute(
                select(table).where(
                    table.c.exchange == self.exchange, tuple_(table.c.symbol, table.c.bar_start_ms).in_(chunk)
                )
            )
        }

    def _revise(self, connection: Connection, old: Row, values: dict, known: int) -> None:
        """A changed candle: its recorded version moves to the revisions table (which says when it was
        replaced), the new values take its place with the next revision number."""
        table = candles_table
        connection.execute(revisions_table.insert().values(**old._asdict(), replaced_ms=known))
        connection.execute(
            table.update()
            .where(
                table.c.exchange == self.exchange,
                table.c.symbol == old.symbol,
                table.c.bar_start_ms == old.bar_start_ms,
            )
            .values(**values, knowledge_ms=known, revision=old.revision + 1)
        )

    @_answering
    def upsert_funding(self, rows: pd.DataFrame) -> UpsertResult:
        """Record settled funding rates (``data.funding``'s table, with the knowledge time each was
        written at): a new settlement is inserted, a re-fetched one with the same rate and mark price
        changes nothing, one the exchange revised replaces the recorded one with its new knowledge time."""
        result = UpsertResult()
        frame = normalize_funding(rows, f"funding rates for {self.where}")
        if frame.empty:
            return result
        frame = frame.assign(funding_ms=_ms(frame["funding_time"]), knowledge_ms=_ms(frame["knowledge_ts"]))
        table = funding_table
        keys = list(zip(frame["asset"], frame["funding_ms"].astype(int), strict=True))
        with self.engine.begin() as connection:
            existing = {
                (row.symbol, row.funding_ms): row
                for chunk in _chunks(keys, 500)
                for row in connection.execute(
                    select(table).where(
                        table.c.exchange == self.exchange, tuple_(table.c.symbol, table.c.funding_ms).in_(chunk)
                    )
                )
            }
            inserts = []
            for record in frame.itertuples(index=False):
                key = (record.asset, int(record.funding_ms))
                values = {"rate": float(record.rate), "mark_price": _float(record.mark_price)}
                old = existing.get(key)
                if old is None:
                    known = int(record.knowledge_ms)
                    inserts.append(
                        {
                            "exchange": self.exchange,
                            "symbol": key[0],
                            "funding_ms": key[1],
                            **values,
                            "knowledge_ms": known,
                            "first_knowledge_ms": known,
                            "revision": 0,
                        }
                    )
                    result.new += 1
                elif old.rate != values["rate"] or (
                    values["mark_price"] is not None and old.mark_price != values["mark_price"]
                ):  # a mark price the new fetch lacks is not a revision: the recorded one stays
                    mark = values["mark_price"] if values["mark_price"] is not None else old.mark_price
                    connection.execute(
                        table.update()
                        .where(
                            table.c.exchange == self.exchange, table.c.symbol == key[0], table.c.funding_ms == key[1]
                        )
                        .values(
                            rate=values["rate"],
                            mark_price=mark,
                            knowledge_ms=max(int(record.knowledge_ms), old.knowledge_ms),
                            revision=old.revision + 1,
                        )
                    )
                    result.revised += 1
                else:
                    result.unchanged += 1
            if inserts:
                connection.execute(table.insert(), inserts)
        return result

    @_answering
    def last_funding_times(self, assets: list[str]) -> dict[str, pd.Timestamp | None]:
        """The latest recorded settlement of each asset (None if it has none)."""
        return self._latest(funding_table.c.funding_ms, assets)

    def _latest(self, column: Column, assets: list[str]) -> dict[str, pd.Timestamp | None]:
        """Per asset, the largest time (ms) of ``column`` in its table (None if the asset has no row)."""
        table = column.table
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(table.c.symbol, func.max(column))
                .where(table.c.exchange == self.exchange, table.c.symbol.in_(assets))
                .group_by(table.c.symbol)
            ).all()
        found = {symbol: pd.Timestamp(ms, unit="ms", tz="UTC") for symbol, ms in rows}
        return {asset: found.get(asset) for asset in assets}

    # -- reading ---------------------------------------------------------------------------------

    @_answering
    def funding(
        self, assets: list[str] | None, start: pd.Timestamp, end: pd.Timestamp, now: pd.Timestamp | None = None
    ) -> pd.DataFrame:
        """The funding rates settled in [start, end] of ``assets`` (all if None or empty), in
        ``data.funding``'s table; with ``now``, only the settlements known by then."""
        table = funding_table
        where = [table.c.exchange == self.exchange, table.c.funding_ms >= _ms(start), table.c.funding_ms <= _ms(end)]
        if assets:
            where.append(table.c.symbol.in_(assets))
        if now is not None:
            where.append(table.c.knowledge_ms <= _ms(now))
        columns = ["symbol", "funding_ms", "rate", "mark_price", "knowledge_ms"]
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(select(*[table.c[name] for name in columns]).where(and_(*where))).all()
        except DBAPIError:
            raise  # a lost connection: DatabaseUnavailable (``_answering``), so that a live bar is skipped
        except SQLAlchemyError as error:
            raise MarketDataError(f"cannot read the market database {self.url}: {error}") from None
        if not rows:
            return empty_funding()
        frame = pd.DataFrame(rows, columns=columns)
        return normalize_funding(
            pd.DataFrame(
                {
                    "asset": frame["symbol"].astype(str),
                    "funding_time": pd.to_datetime(frame["funding_ms"], unit="ms", utc=True),
                    "rate": frame["rate"].astype("float64"),
                    "mark_price": pd.to_numeric(frame["mark_price"]).astype("float64"),
                    "knowledge_ts": pd.to_datetime(frame["knowledge_ms"], unit="ms", utc=True),
                }
            ),
            f"market database {self.where}",
        )

    @_answering
    def snapshot(
        self,
        assets: list[str],
        start: pd.Timestamp,
        end: pd.Timestamp,
        now: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """Candles with bar_start in [start, end), in the snapshot schema; with ``now``, each candle as
        it was known then (the latest version written at or before now), and none written after."""
        lo, hi = _ms(start), _ms(end)
        columns = ["symbol", "bar_start_ms", "bar_end_ms", *FIELDS, "knowledge_ms"]

        def query(table: Table):
            where = [
                table.c.exchange == self.exchange,
                table.c.symbol.in_(assets),
                table.c.bar_start_ms >= lo,
                table.c.bar_start_ms < hi,
            ]
            if now is not None:
                where.append(table.c.knowledge_ms <= _ms(now))
            return select(*[table.c[name] for name in columns]).where(and_(*where))

        try:
            with self.engine.connect() as connection:
                current = pd.DataFrame(connection.execute(query(candles_table)).all(), columns=columns)
                older = (
                    pd.DataFrame(connection.execute(query(revisions_table)).all(), columns=columns)
                    if now is not None
                    else current.iloc[:0]
                )
        except SQLAlchemyError as error:
            raise MarketDataError(f"cannot read the market database {self.url}: {error}") from None
        rows = pd.concat([current, older], ignore_index=True) if len(older) else current
        rows = rows.sort_values("knowledge_ms").drop_duplicates(["symbol", "bar_start_ms"], keep="last")
        frame = pd.DataFrame(
            {
                "asset": rows["symbol"].astype(str),
                "bar_start": pd.to_datetime(rows["bar_start_ms"], unit="ms", utc=True),
                "bar_end": pd.to_datetime(rows["bar_end_ms"], unit="ms", utc=True),
                "knowledge_ts": pd.to_datetime(rows["knowledge_ms"], unit="ms", utc=True),
                **{name: rows[name].astype("float64") for name in FIELDS},
            }
        )
        if frame.empty:
            return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in SNAPSHOT_COLUMNS})
        return normalize_snapshot(frame)

    @_answering
    def last_bar_ends(self, assets: list[str]) -> dict[str, pd.Timestamp | None]:
        """The end of the latest recorded candle of each asset (None if it has none)."""
        return self._latest(candles_table.c.bar_end_ms, assets)

    @_answering
    def missing(self, assets: list[str], bar_end: pd.Timestamp, now: pd.Timestamp | None = None) -> list[str]:
        """The assets whose candle closing at ``bar_end`` is not (or not yet, as of ``now``) recorded."""
        table = candles_table
        where = [
            table.c.exchange == self.exchange,
            table.c.symbol.in_(assets),
            table.c.bar_end_ms == _ms(bar_end),
        ]
        if now is not None:
            where.append(table.c.first_knowledge_ms <= _ms(now))
        with self.engine.connect() as connection:
            present = {row[0] for row in connection.execute(select(table.c.symbol).where(and_(*where)))}
        return [asset for asset in assets if asset not in present]


def _chunks(items: list, size: int):
    for begin in range(0, len(items), size):
        yield items[begin : begin + size]


def _float(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _dtype(column: str) -> str:
    return {"asset": "object", "bar_start": "datetime64[ns, UTC]", "bar_end": "datetime64[ns, UTC]"}.get(
        column, "datetime64[ns, UTC]" if column == "knowledge_ts" else "float64"
    )
