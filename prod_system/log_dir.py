"""The system log dir: everything a run did, in files a person or a notebook can read.

    {root}/{model}/{run_mode}/{trigger}/{start}.{end}/system_log_dir/
        system_config.yaml  log.txt  run.json
        dag/node_outputs/  dag/profiling/
        target_positions/  orders/  fills/
        portfolio/{holdings_shares,holdings_notional,executed_trades_shares,executed_trades_notional,pnl,fees,funding,
                   statistics}/
        pnl_report.md  pnl_report.png

Each table is a folder of Parquet files (``pandas.read_parquet(folder)``), long form, with a UTC
``bar_end`` column. Files are named by the first bar they hold and written atomically, so a rerun of
the same window replaces them instead of mixing with them. ``SCHEMAS`` is the one definition of every
table's columns and types: each part is written with it, an empty one too (a bar without orders), so
that the parts of a table always read back together with the same types (times as UTC timestamps).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from prod_system.common.files import write_atomically
from prod_system.common.timeutil import compact
from prod_system.config import SystemConfig
from prod_system.errors import LogDirExistsError

_TIME = pa.timestamp("ns", tz="UTC")
_FLOAT, _INT, _TEXT = pa.float64(), pa.int64(), pa.string()


def _schema(*columns: str, **types: pa.DataType) -> pa.Schema:
    """Columns in order: ``*_at`` and ``*bar_end`` are UTC times, the rest floats unless typed."""
    return pa.schema(
        [(c, types.get(c, _TIME if c.endswith("_at") or c.endswith("bar_end") else _FLOAT)) for c in columns]
    )


def _long(value: str) -> pa.Schema:
    return _schema("bar_end", "asset", value, asset=_TEXT)


# Every table of a log dir (and of a historical simulation's folder): its columns, in order, and types.
SCHEMAS: dict[str, pa.Schema] = {
    "dag/node_outputs": _schema("bar_end", "node", "asset", "value", node=_TEXT, asset=_TEXT),
    "dag/profiling": _schema("bar_end", "node", "seconds", "peak_memory_bytes", "decided_at", node=_TEXT),
    "predictions": _schema("bar_end", "asset", "prediction", "volatility", "price", asset=_TEXT),
    "target_positions": _schema(
        "bar_end", "asset", "prediction", "volatility", "price", "target_notional", "target_shares", asset=_TEXT
    ),
    "data_quality": _schema("bar_end", "asset", "issue", "detail", asset=_TEXT, issue=_TEXT, detail=_TEXT),
    "orders": _schema(
        "bar_end",
        "asset",
        "client_order_id",
        "side",
        "quantity",
        "decision_price",
        "notional_estimate",
        "submitted_at",
        asset=_TEXT,
        client_order_id=_TEXT,
        side=_TEXT,
    ),
    "fills": _schema(
        "bar_end",
        "asset",
        "client_order_id",
        "order_bar_end",
        "shares",
        "price",
        "notional",
        "fee",
        "filled_at",
        asset=_TEXT,
        client_order_id=_TEXT,
    ),
    "portfolio/holdings_shares": _long("shares"),
    "portfolio/holdings_notional": _long("notional"),
    "portfolio/executed_trades_shares": _long("shares"),
    "portfolio/executed_trades_notional": _long("notional"),
    "portfolio/pnl": _long("pnl"),
    # a historical simulation's: the prices research traded (the bar's mean close, with slippage) and marked at
    "bar_prices": _schema("bar_end", "asset", "mark", "trade_price", asset=_TEXT),
    "portfolio/fees": _long("fees"),
    "portfolio/funding": _long("funding"),
    "portfolio/statistics": _schema(
        "bar_end",
        "pnl",
        "trading_pnl",
        "gross_volume",
        "net_volume",
        "gmv",
        "nmv",
        "cash",
        "net_wealth",
        "leverage",
        "fees",
        "funding",
        "funding_assumed",
        "n_fills",
        n_fills=_INT,
        funding_assumed=_INT,
    ),
    "latency": _schema(
        "bar_end",
        "data_complete_at",
        "predictions_at",
        "orders_submitted_at",
        "fills_recorded_at",
        "orders",
        "missing_assets",
        orders=_INT,
        missing_assets=_TEXT,
    ),
    "skipped_bars": _schema("bar_end", "reason", reason=_TEXT),
    # prod: the exchange's own statement, pulled by the broker (income history rows, and the account's balances)
    "broker/income": _schema(
        "bar_end",
        "asset",
        "income_type",
        "income",
        "tran_id",
        "trade_id",
        "income_at",
        asset=_TEXT,
        income_type=_TEXT,
        tran_id=_TEXT,
        trade_id=_TEXT,
    ),
    "broker/account": _schema(
        "bar_end", "wallet_balance", "margin_balance", "unrealized_pnl", "fetched_at", "maint_margin", "margin_ratio"
    ),
    "broker/executions": _schema(
        "bar_end",
        "asset",
        "client_order_id",
        "parent_order_id",
        "wave",
        "side",
        "requested",
        "sent",
        "status",
        "exchange_order_id",
        "filled",
        "average_price",
        "attempts",
        "sent_at",
        "acknowledged_at",
        "reason",
        **dict.fromkeys(("asset", "client_order_id", "parent_order_id", "side", "status", "exchange_order_id"), _TEXT),
        wave=_INT,
        attempts=_INT,
        reason=_TEXT,
    ),
}


def columns(table: str) -> list[str]:
    """The columns of a log-dir table, in order."""
    return SCHEMAS[table].names


def to_arrow(table: str, frame: pd.DataFrame) -> pa.Table:
    """``frame`` as the table's Arrow schema: the same types with rows or without (an empty part of
    ``orders`` still has UTC timestamps, not columns of nulls). Times are converted to UTC."""
    schema = SCHEMAS.get(table)
    if schema is None:
        raise ValueError(f"table {table}: no schema in prod_system.log_dir.SCHEMAS")
    if frame.empty and not len(frame.columns):  # nothing at all (pd.DataFrame([])): the empty table
        frame = pd.DataFrame([], columns=schema.names)
    if set(frame.columns) != set(schema.names):
        raise ValueError(f"table {table}: columns {sorted(frame.columns)}, expected {schema.names}")
    frame = frame[schema.names].copy()
    for field in schema:
        if pa.types.is_timestamp(field.type):
            frame[field.name] = pd.to_datetime(frame[field.name], utc=True)
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


def part_name(first_bar: pd.Timestamp) -> str:
    """The file of a table's part written for the bars from ``first_bar`` (their names sort as their bars)."""
    return f"part-{compact(first_bar)}.parquet"


def conform(table: str, part: pa.Table) -> pa.Table:
    """A stored part as the table's schema, whatever it was written with (a part of nulls written
    before the schemas existed, other time units); columns the schema does not know are kept."""
    schema = SCHEMAS.get(table)
    if schema is None:
        return part
    arrays, fields = [], []
    for field in schema:
        if field.name in part.column_names:
            arrays.append(part.column(field.name).cast(field.type))
        else:
            arrays.append(pa.nulls(part.num_rows, field.type))
        fields.append(field)
    for name in part.column_names:
        if name not in schema.names:
            arrays.append(part.column(name))
            fields.append(part.schema.field(name))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


TABLES = (
    "dag/node_outputs",
    "dag/profiling",
    "target_positions",
    "data_quality",
    "orders",
    "fills",
    "portfolio/holdings_shares",
    "portfolio/holdings_notional",
    "portfolio/executed_trades_shares",
    "portfolio/executed_trades_notional",
    "portfolio/pnl",
    "portfolio/statistics",
)


class LogDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def for_config(cls, config: SystemConfig) -> LogDir:
        return cls(config.log_dir())

    def holds_run(self) -> bool:
        """A finished run (``run.json`` is written last) or a live session (its state) is here. A run
        interrupted or killed before its end leaves neither: the next run of the window replaces it."""
        return any((self.path / name).exists() for name in ("run.json", "state.json", "inflight.json"))

    def check_free(self, overwrite: bool = False) -> None:
        """Refuse to mix with an earlier run of the same window unless told to replace it."""
        if not overwrite and self.holds_run():
            raise LogDirExistsError(f"{self.path} already holds a run of this window; pass --overwrite to replace it")

    def prepare(self, config: SystemConfig, overwrite: bool = False) -> None:
        """Create the dir for a new run (replacing an earlier run of the window only if ``overwrite``)."""
        self.check_free(overwrite)
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_text("system_config.yaml", config.to_yaml())

    def write_text(self, name: str, text: str) -> Path:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, lambda tmp: tmp.write_text(text))
        return target

    def write_json(self, name: str, data: dict) -> Path:
        return self.write_text(name, json.dumps(data, indent=2, default=str) + "\n")

    def write_table(self, name: str, frame: pd.DataFrame, first_bar: pd.Timestamp) -> Path:
        """One part of table ``name`` (its schema in ``SCHEMAS``), named by its first bar."""
        table = to_arrow(name, frame)
        folder = self.path / name
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / part_name(first_bar)
        write_atomically(target, lambda tmp: pq.write_table(table, tmp), folder / f".{target.name}.tmp")
        return target

    def read_part(self, name: str, path: Path) -> pd.DataFrame:
        """One part of table ``name``, with the table's types."""
        return conform(name, pq.read_table(path)).to_pandas()

    def read_table(self, name: str) -> pd.DataFrame:
        """Every part of table ``name``, in bar order, with the table's types (also parts written
        empty by an older version, as columns of nulls)."""
        folder = self.path / name
        files = sorted(folder.glob("part-*.parquet"))
        if not files:
            raise FileNotFoundError(f"no table {name} in {self.path}")
        parts = [conform(name, pq.read_table(f)) for f in files]
        return pa.concat_tables(parts, promote_options="permissive").to_pandas()

    @contextmanager
    def capture_log(self, logger: logging.Logger) -> Iterator[None]:
        """Send ``logger``'s records to log.txt for the duration of the block.

        Every record goes to log.txt; only warnings and errors go on to the parent loggers (the
        console, Dagster's log): a line per bar is for the file, not for the operator's screen.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.path / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        forward = _ForwardWarnings(logger.parent)
        previous = logger.level, logger.propagate
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(handler)
        logger.addHandler(forward)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.removeHandler(forward)
            logger.level, logger.propagate = previous
            handler.close()


class _ForwardWarnings(logging.Handler):
    """Pass warnings and errors on to a parent logger's handlers."""

    def __init__(self, parent: logging.Logger | None):
        super().__init__(level=logging.WARNING)
        self.parent = parent

    def emit(self, record: logging.LogRecord) -> None:
        if self.parent is not None:
            self.parent.handle(record)
