"""The market-data resource: a run's window of a snapshot partitioned by month, and no more."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prod_system.data.market_data import read_snapshot, write_snapshot_months
from prod_system.defs.resources import MarketDataResource
from prod_system.errors import MarketDataError
from prod_system.log_dir import LogDir
from prod_system_tests.kit.cli import cli
from prod_system_tests.kit.data import UNIVERSE

DAY = ["--start", "2023-07-21T00:00:00Z", "--end", "2023-07-22T00:00:00Z"]


@pytest.fixture
def months_with_junk(tmp_path, snapshot):
    """The test snapshot as a folder of months, with a month the runs do not span holding candles known
    before they close (its assets are listed; its candles, loaded, are refused)."""
    candles = read_snapshot(snapshot)
    months = write_snapshot_months([candles], tmp_path / "months.parquet")
    junk = candles.head(100).copy()
    for column in ("bar_start", "bar_end"):
        junk[column] = junk[column] + pd.Timedelta(days=60)
    junk["knowledge_ts"] = junk["bar_start"]
    (months / "month=2023-09").mkdir()
    pq.write_table(pa.Table.from_pandas(junk, preserve_index=False), months / "month=2023-09" / "part.parquet")
    return months


def test_the_resource_reads_the_months_of_a_window_only(months_with_junk):
    resource = MarketDataResource(source=f"parquet:{months_with_junk}")
    window = (pd.Timestamp("2023-07-20T20:00:00Z"), pd.Timestamp("2023-07-22T00:00:00Z"))
    store = resource.candle_store(UNIVERSE, window)
    assert store.first_bar_end == window[0] + pd.Timedelta(minutes=1) and store.last_bar_end == window[1]
    with pytest.raises(MarketDataError, match="known before they close"):
        resource.candle_store(UNIVERSE)  # the whole snapshot: the broken month too


def test_a_dagster_simulation_reads_its_window_of_a_partitioned_snapshot(tmp_path, months_with_junk, simulated_day):
    universe = ["--universe", ",".join(UNIVERSE)]
    done = cli(
        "simulate", "--model", "C1b", "--market-data", str(months_with_junk), *DAY, *universe, "--root", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    _, core_log_dir = simulated_day  # the same day, in the core, over the one-file snapshot
    (log_dir,) = tmp_path.glob("C1b/simulation/*/*/system_log_dir")
    dagster, core = (LogDir(path).read_table("portfolio/statistics") for path in (log_dir, core_log_dir))
    assert len(dagster) == 288
    assert dagster["pnl"].sum() == pytest.approx(core["pnl"].sum(), rel=1e-9)
