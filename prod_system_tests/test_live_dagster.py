"""The live side in Dagster, on the real clock: ingestion with its asset checks, the bar sensor, one
bar run of the day's scheduled session, against the local exchange replaying real candles live."""

from __future__ import annotations

import time

import pandas as pd
from dagster import DagsterInstance, build_sensor_context, materialize

from prod_system.assets.live import bar_partitions, build_live_assets
from prod_system.core.live import parse_bar_key
from prod_system.core.log_dir import LogDir
from prod_system.core.market_db import MarketDatabase
from prod_system.definitions import build_definitions
from prod_system.exchange import LocalExchange
from prod_system.resources import LogDirResource, SystemResource
from prod_system.resources.live import LiveResource
from prod_system_tests.conftest import UNIVERSE

T = pd.Timestamp("2023-07-21T06:00:00Z")


def test_sensor_drives_one_bar_of_the_scheduled_session(candles, tmp_path):
    # the whole test inside one minute (no bar rolls over), within the bar's data timeout
    while pd.Timestamp.now(tz="UTC").second > 40:
        time.sleep(0.5)
    with LocalExchange(candles[candles["bar_start"] >= T], clock="shifted") as exchange:
        shift = pd.Timedelta(milliseconds=exchange.engine.market.shift_ms)
        database = f"sqlite:///{tmp_path / 'market.db'}"
        history = candles[(candles["bar_start"] >= T - pd.Timedelta(hours=2)) & (candles["bar_start"] < T)]
        history = history.assign(bar_start=history["bar_start"] + shift)
        db = MarketDatabase(database)
        db.upsert(history[["asset", "bar_start", "open", "high", "low", "close", "volume"]], T + shift)
        resources = {
            "live": LiveResource(database=database, exchange_url=exchange.url, bar="1m", data_timeout_seconds=55),
            "system": SystemResource(profile_memory=False),
            "log_dir": LogDirResource(root=str(tmp_path / "runs")),
        }
        defs = build_definitions(["C1b"], resources=resources, investor_model="C1b")
        instance = DagsterInstance.ephemeral()

        ingestion = defs.resolve_job_def("market_data_ingestion_job").execute_in_process(instance=instance)
        assert ingestion.success
        checks = {c.check_name: c for c in ingestion.get_asset_check_evaluations()}
        assert set(checks) == {"no_missing_bars", "not_stale", "no_duplicates", "valid_prices"}
        assert checks["not_stale"].passed and checks["no_duplicates"].passed and checks["valid_prices"].passed

        sensor = defs.resolve_sensor_def("C1b_paper_trading_bar_sensor")
        with build_sensor_context(instance=instance, resources=resources) as context:
            result = sensor(context)
        (request,) = result.run_requests
        bar_end = parse_bar_key(request.partition_key)
        assert bar_end == pd.Timestamp.now(tz="UTC").floor("1min")
        assert db.missing(UNIVERSE, bar_end) == []
        instance.add_dynamic_partitions(bar_partitions("C1b", "paper_trading").name, [request.partition_key])
        live_asset = build_live_assets("C1b", "paper_trading")
        run = materialize([live_asset], partition_key=request.partition_key, instance=instance, resources=resources)
        assert run.success
        (event,) = run.get_asset_materialization_events()
        metadata = event.materialization.metadata
        assert metadata["status"].value == "traded" and metadata["orders"].value > 0
        assert 0 <= metadata["orders_submitted_seconds_after_close"].value < 5

        day = bar_end.floor("1D")
        session = tmp_path / "runs" / "C1b" / "paper_trading" / "scheduled"
        (log_dir,) = list(session.glob(f"{day:%Y%m%d}_000000.*/system_log_dir"))
        logs = LogDir(log_dir)
        assert list(logs.read_table("portfolio/statistics")["bar_end"]) == [bar_end]
        assert (log_dir / "log.txt").exists()
        skipped = logs.read_table("skipped_bars")
        assert len(skipped) == (bar_end - day) / pd.Timedelta(minutes=1) - 1  # the day's earlier bars, one file
        assert len(list((log_dir / "skipped_bars").glob("*.parquet"))) == 1

        with build_sensor_context(instance=instance, resources=resources, cursor=result.cursor) as context:
            again = sensor(context)
        assert not getattr(again, "run_requests", None)  # once per bar
        db.close()
