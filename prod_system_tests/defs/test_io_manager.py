"""The simulation assets' IO manager keeps one copy of each table: the tables of the system log dir are
read back from there, the store holds only what the log dir does not (predictions, open orders)."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from prod_system.cli.launch import resources_for
from prod_system.defs.resources import TableStoreIOManager
from prod_system.defs.resources import io_manager as io_manager_module
from prod_system.defs.simulation import build_simulation_assets
from prod_system.log_dir import TABLES, LogDir
from prod_system.naming import WINDOW_START_TAG
from prod_system.runs.simulate import simulate
from prod_system_tests.kit.data import sim_config

DAY_1, DAY_2 = "2023-07-21", "2023-07-22"


def _materialize_day(tmp_path, snapshot, instance, day: str, tags: dict | None = None, raise_on_error: bool = True):
    start = pd.Timestamp(day, tz="UTC")
    config = sim_config(
        snapshot, tmp_path / "runs", start=start.isoformat(), end=(start + pd.Timedelta(days=1)).isoformat()
    )
    io_manager = TableStoreIOManager(base_dir=str(tmp_path / "store"))
    resources = {**resources_for(config), "io_manager": io_manager}
    io_manager_module._handed_over.clear()  # as in a run of its own process: nothing handed over in memory
    result = materialize(
        build_simulation_assets("C1b"),
        instance=instance,
        resources=resources,
        partition_key=day,
        tags=tags or {},
        raise_on_error=raise_on_error,
    )
    return config, result


def test_the_store_keeps_no_second_copy_and_the_next_day_reads_the_log_dir(tmp_path, snapshot):
    instance = DagsterInstance.ephemeral()
    first, _ = _materialize_day(tmp_path, snapshot, instance, DAY_1, {WINDOW_START_TAG: DAY_1})
    stored = {
        path.relative_to(tmp_path / "store").as_posix()
        for path in (tmp_path / "store").rglob("*")
        if path.is_file() and "__" in path.parent.name
    }
    assert stored == {
        f"C1b/simulation/{name}/{DAY_1}__{DAY_1}/{file}"
        for name, file in [
            ("dag_node_outputs", "log_dir.json"),
            ("predictions", "value.parquet"),  # not a table of the log dir
            ("target_positions", "log_dir.json"),
            ("orders", "log_dir.json"),
            ("fills", "log_dir.json"),
            ("portfolio", "log_dir.json"),
            ("portfolio", "open_orders.parquet"),  # the state carried to the next day
        ]
    }
    for name in TABLES:
        assert LogDir(first.log_dir()).read_table(name) is not None

    second, _ = _materialize_day(tmp_path, snapshot, instance, DAY_2)
    portfolio = instance.get_latest_materialization_event(AssetKey(["C1b", "simulation", "portfolio"]))
    assert portfolio.asset_materialization.metadata["started_from"].value == "previous day"
    both_days = simulate(
        sim_config(snapshot, tmp_path / "core", start=f"{DAY_1}T00:00:00Z", end="2023-07-23T00:00:00Z")
    )
    core = LogDir(both_days.log_dir).read_table("portfolio/statistics")
    chained = LogDir(second.log_dir()).read_table("portfolio/statistics")
    core = core[core["bar_end"] > second.start].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        chained[["bar_end", "pnl", "gmv", "net_wealth"]], core[["bar_end", "pnl", "gmv", "net_wealth"]]
    )


def test_a_log_dir_replaced_by_an_unfinished_run_fails_the_next_day_in_one_line(tmp_path, snapshot):
    instance = DagsterInstance.ephemeral()
    first, _ = _materialize_day(tmp_path, snapshot, instance, DAY_1, {WINDOW_START_TAG: DAY_1})
    shutil.rmtree(first.log_dir() / "portfolio")  # as a later run of the day that stopped before trading
    _, result = _materialize_day(tmp_path, snapshot, instance, DAY_2, raise_on_error=False)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    error, messages = failure.step_failure_data.error, []
    while error is not None:  # Dagster wraps the IO manager's error: its message is the cause's
        messages.append(error.message)
        error = error.cause
    expected = f"partition {DAY_1}: its table portfolio/holdings_shares is no longer in"
    assert any(expected in m and f"materialize {DAY_1} again" in m for m in messages), messages


@pytest.fixture(autouse=True)
def _no_handover_left():
    yield
    io_manager_module._handed_over.clear()
