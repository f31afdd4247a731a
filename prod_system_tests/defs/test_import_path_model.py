"""A model given by its import path ('package.module:function') is found by the Dagster layer: its log
dirs are under its folder name (dots), its Dagster names use its slug (underscores). The observer
schedule, the reconciliation assets and the investor plots looked for its runs under the slug, so
they never found them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, build_schedule_context
from dagster_aws.s3 import S3Resource

from prod_system.analysis.observer import REPORT_HTML
from prod_system.definitions import build_definitions
from prod_system.defs.resources import (
    LogDirResource,
    MarketDataResource,
    PublishingResource,
    SystemResource,
    TableStoreIOManager,
)
from prod_system.runs.historical import historical_pnl
from prod_system.runs.simulate import simulate
from prod_system_tests.kit.data import sim_config
from prod_system_tests.kit.models import IMPORT_PATH
from prod_system_tests.kit.s3 import create_bucket, s3_credentials

FOLDER = "prod_system_tests.kit.models.build_dag"
SLUG = "prod_system_tests_kit_models_build_dag"
BUCKET = "prod-system-import-path-model"
SESSION = {"start": "2023-07-21T00:00:00Z", "end": "2023-07-21T12:00:00Z"}


@pytest.fixture(scope="module")
def bucket(s3_endpoint):
    with s3_credentials():
        yield create_bucket(s3_endpoint, BUCKET)


@pytest.fixture(scope="module")
def root(tmp_path_factory, snapshot) -> Path:
    """A paper-trading session (observer notebook on: the observer job publishes its HTML) and a historical
    simulation of the model, run by the core."""
    root = tmp_path_factory.mktemp("runs")
    paper = sim_config(
        snapshot, root, model=IMPORT_PATH, run_mode="paper_trading", observer={"notebook": True}, **SESSION
    )
    simulate(paper)
    historical_pnl(sim_config(snapshot, root, model=IMPORT_PATH, trigger="scheduled", **SESSION))
    assert [path.name for path in root.iterdir()] == [FOLDER]
    return root


def definitions(root: Path, snapshot: Path, endpoint: str):
    resources = {
        "s3": S3Resource(endpoint_url=endpoint, region_name="us-east-1"),
        "publishing": PublishingResource(bucket=BUCKET, investor_run_mode="paper_trading"),
        "log_dir": LogDirResource(root=str(root)),
        "market_data": MarketDataResource(source=f"parquet:{snapshot}"),
        "system": SystemResource(profile_memory=False),
        "io_manager": TableStoreIOManager(base_dir=str(root.parent / f"{root.name}_store")),
    }
    return build_definitions([IMPORT_PATH], resources=resources, investor_model=IMPORT_PATH)


def test_the_observer_schedules_find_the_sessions_of_an_import_path_model(root, snapshot, s3_endpoint, bucket):
    defs = definitions(root, snapshot, s3_endpoint)
    schedules = {s.name: s for s in defs.get_repository_def().schedule_defs}
    resources = {
        "log_dir": LogDirResource(root=str(root)),
        "publishing": PublishingResource(bucket=BUCKET, investor_run_mode="paper_trading"),
    }
    when = datetime(2026, 1, 2, 3, 5, tzinfo=UTC)
    for name in (f"{SLUG}_paper_trading_observer_job_schedule", "investor_last_5minutes_job_schedule"):
        with build_schedule_context(resources=resources, scheduled_execution_time=when) as context:
            tick = schedules[name].evaluate_tick(context)
        assert len(tick.run_requests) == 1, (name, tick.skip_message)

    result = defs.resolve_job_def(f"{SLUG}_paper_trading_observer_job").execute_in_process(
        instance=DagsterInstance.ephemeral()
    )
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.asset_key == AssetKey([SLUG, "paper_trading", "reconciliation"]) and check.passed
    report = bucket.get_object(Bucket=BUCKET, Key=f"system_reconciliation/{IMPORT_PATH}.last_5minutes.html")
    assert report["ContentType"] == "text/html; charset=utf-8"


def test_the_investor_plots_find_the_runs_of_an_import_path_model(root, snapshot, s3_endpoint, bucket):
    defs = definitions(root, snapshot, s3_endpoint)
    instance = DagsterInstance.ephemeral()
    for job in ("investor_last_24hours_job", "investor_last_5minutes_job"):
        assert defs.resolve_job_def(job).execute_in_process(instance=instance).success, job
    # the long-run plots read the historical simulation the core wrote (not materialized here)
    plots = [AssetKey(["pnl_for_investors", f"cumulative_pnl_{window}"]) for window in ("since_2019", "since_2022")]
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance, asset_selection=plots)
    assert result.success
    for window in ("since_2019", "since_2022", "last_24hours", "last_5minutes"):
        body = bucket.get_object(Bucket=BUCKET, Key=f"pnl_for_investors/cumulative_pnl.{window}.png")["Body"].read()
        assert body.startswith(b"\x89PNG")


def test_the_simulation_of_an_import_path_model_is_reconciled(root, snapshot, s3_endpoint):
    defs = definitions(root, snapshot, s3_endpoint)
    result = defs.resolve_job_def(f"{SLUG}_simulation_job").execute_in_process(
        instance=DagsterInstance.ephemeral(),
        partition_key="2023-07-21",
        tags={"prod_system/window_start": "2023-07-21"},
    )
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.asset_key == AssetKey([SLUG, "simulation", "reconciliation"]) and check.passed
    assert list(root.glob(f"{FOLDER}/simulation/manual/*/pnl_realtime_observer_notebook/*/{REPORT_HTML}"))
