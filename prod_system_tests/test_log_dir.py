"""The log dir's tables keep their types whatever a part holds: a bar without orders writes an empty
part of ``orders`` that reads back together with the others, times as UTC timestamps (issue 12)."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from prod_system.log_dir import LogDir
from prod_system.trading.orders import ORDER_COLUMNS

BAR = pd.Timestamp("2023-07-21T06:01:00Z")
MINUTE = pd.Timedelta(minutes=1)


def an_order(bar_end: pd.Timestamp) -> dict:
    return {
        "bar_end": bar_end,
        "asset": "BTC",
        "client_order_id": f"ps-00000000-{bar_end:%y%m%d%H%M}-BTC",
        "side": "buy",
        "quantity": 0.5,
        "decision_price": 29_800.0,
        "notional_estimate": 14_900.0,
        "submitted_at": bar_end + pd.Timedelta(seconds=2),
    }


def assert_typed_orders(orders: pd.DataFrame) -> None:
    for column in ("bar_end", "submitted_at"):
        assert isinstance(orders[column].dtype, pd.DatetimeTZDtype), (column, orders[column].dtype)
        assert str(orders[column].dt.tz) == "UTC"
    assert orders["quantity"].dtype == "float64"
    delay = (orders["submitted_at"] - orders["bar_end"]).dt.total_seconds()  # what the reconciliation does
    assert list(delay) == [2.0, 2.0]


def test_an_empty_part_reads_back_with_the_others_typed(tmp_path):
    """A live session's bars: no order on the first (empty part), orders on the next ones."""
    logs = LogDir(tmp_path)
    logs.write_table("orders", pd.DataFrame([], columns=ORDER_COLUMNS), BAR)
    logs.write_table("orders", pd.DataFrame([an_order(BAR + MINUTE)], columns=ORDER_COLUMNS), BAR + MINUTE)
    logs.write_table("orders", pd.DataFrame([an_order(BAR + 2 * MINUTE)], columns=ORDER_COLUMNS), BAR + 2 * MINUTE)
    assert_typed_orders(logs.read_table("orders"))
    assert_typed_orders(pd.read_parquet(tmp_path / "orders"))  # the documented way to read a table


def test_parts_written_empty_by_an_older_version_read_back_typed(tmp_path):
    """A log dir written before the schemas: its empty parts are columns of nulls."""
    logs = LogDir(tmp_path)
    (tmp_path / "orders").mkdir()
    pd.DataFrame([], columns=ORDER_COLUMNS).to_parquet(tmp_path / "orders" / "part-20230721_060100.parquet")
    logs.write_table("orders", pd.DataFrame([an_order(BAR + MINUTE)], columns=ORDER_COLUMNS), BAR + MINUTE)
    logs.write_table("orders", pd.DataFrame([an_order(BAR + 2 * MINUTE)], columns=ORDER_COLUMNS), BAR + 2 * MINUTE)
    assert_typed_orders(logs.read_table("orders"))


def test_every_table_is_written_with_its_schema_when_empty(tmp_path):
    """Every table of the log dir, written with no row, has its schema's types: times UTC."""
    from prod_system.log_dir import SCHEMAS, TABLES

    assert set(TABLES) <= set(SCHEMAS)
    logs = LogDir(tmp_path)
    for name, schema in SCHEMAS.items():
        path = logs.write_table(name, pd.DataFrame([], columns=schema.names), BAR)
        assert pq.read_schema(path).remove_metadata() == schema, name
        frame = logs.read_table(name)
        times = [c for c in frame.columns if c.endswith("_at") or c.endswith("bar_end")]
        assert times and all(str(frame[c].dtype) == "datetime64[ns, UTC]" for c in times), (name, frame.dtypes)


def test_a_table_with_other_columns_is_refused(tmp_path):
    frame = pd.DataFrame([an_order(BAR)]).rename(columns={"submitted_at": "sent_at"})
    with pytest.raises(ValueError, match="table orders: columns"):
        LogDir(tmp_path).write_table("orders", frame, BAR)
    assert not (tmp_path / "orders").exists() or not list((tmp_path / "orders").iterdir())
