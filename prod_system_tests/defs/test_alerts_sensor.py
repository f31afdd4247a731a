"""The run-failure sensor: a failed run of a job of the code location, in a real Dagster instance, sends
one message (job, run id, partition, the error's first line) to a real HTTP endpoint; the same failure
again is rate-limited; the sensor is on by default, watches every job of the code location and follows
the deployment's alerts settings (a renamed URL variable); a live bar's run (Dagster's implicit asset job)
is named by its model and mode, each its own cause."""

from __future__ import annotations

from dagster import AssetKey, DagsterInstance, DefaultSensorStatus, Definitions, asset, build_run_status_sensor_context

from prod_system.cli.launch import resources_for
from prod_system.definitions import build_definitions
from prod_system.defs.alerts import SENSOR_NAME, alert_on_run_failure
from prod_system.defs.resources import LogDirResource, SystemResource, TableStoreIOManager
from prod_system.defs.resources.live import LiveResource
from prod_system.naming import live_bar_path
from prod_system_tests.kit.alerts import URLS_ENV, AlertEndpoint
from prod_system_tests.kit.data import sim_config


def test_a_failed_run_alerts_once_with_its_job_run_partition_and_error(tmp_path, snapshot, monkeypatch):
    config = sim_config(
        snapshot,
        tmp_path / "runs",
        start="2023-07-22T00:00:00Z",
        end="2023-07-23T00:00:00Z",
        alerts={"urls_env": "OPS_HOOKS"},  # the deployment's (the sessions' too), not the default variable
    )
    resources = {**resources_for(config), "io_manager": TableStoreIOManager(base_dir=str(tmp_path / "store"))}
    defs = build_definitions(["C1b"], resources=resources)
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    instance = DagsterInstance.ephemeral()
    # a day whose previous day is not materialized fails at once, before it writes anything
    job = defs.resolve_job_def("C1b_simulation_job")
    result = job.execute_in_process(instance=instance, partition_key="2023-07-22", raise_on_error=False)
    assert not result.success
    with AlertEndpoint() as endpoint:
        monkeypatch.setenv("OPS_HOOKS", endpoint.url("sensor-token-123"))
        monkeypatch.delenv(URLS_ENV, raising=False)
        for _ in range(2):  # the daemon's next tick, or the same failure in the next run: one message
            context = build_run_status_sensor_context(
                sensor_name=SENSOR_NAME,
                dagster_instance=instance,
                dagster_run=result.dagster_run,
                dagster_event=result.get_run_failure_event(),
                resources={"log_dir": resources["log_dir"], "system": resources["system"], "live": LiveResource()},
            ).for_run_failure()
            alert_on_run_failure(context)
        messages = endpoint.wait_for(2, timeout=1)
    assert [m["title"] for m in messages] == ["prod_system run failed: C1b_simulation_job"]
    text = messages[0]["message"]
    assert text.startswith(f"run {result.run_id} of C1b_simulation_job (partition 2023-07-22) failed: ")
    assert "the portfolio of the previous day 2023-07-21 is not materialized" in text and "\n" not in text


def test_a_live_bar_run_alerts_with_its_model_and_mode_each_its_own_cause(tmp_path, monkeypatch):
    """Two live bars failing under Dagster's implicit asset job (as the bar sensor launches them): two
    messages, "C1b paper_trading" and "C2 prod", not one "__ASSET_JOB" silencing the other."""

    def failing(model: str, mode: str):
        @asset(key=list(live_bar_path(model, mode)))
        def bar() -> None:
            raise RuntimeError("no candle by 10:05 for ETH")

        return bar

    defs = Definitions(assets=[failing("C1b", "paper_trading"), failing("C2", "prod")])
    job, instance = defs.resolve_implicit_global_asset_job_def(), DagsterInstance.ephemeral()
    resources = {"log_dir": LogDirResource(root=str(tmp_path)), "system": SystemResource(), "live": LiveResource()}
    with AlertEndpoint() as endpoint:
        monkeypatch.setenv(URLS_ENV, endpoint.url())
        for model, mode in (("C1b", "paper_trading"), ("C2", "prod")):
            key = AssetKey(list(live_bar_path(model, mode)))
            result = job.execute_in_process(instance=instance, asset_selection=[key], raise_on_error=False)
            assert result.dagster_run.job_name.startswith("__") and not result.success
            context = build_run_status_sensor_context(
                sensor_name=SENSOR_NAME,
                dagster_instance=instance,
                dagster_run=result.dagster_run,
                dagster_event=result.get_run_failure_event(),
                resources=resources,
            ).for_run_failure()
            alert_on_run_failure(context)
        messages = endpoint.wait_for(2)
    assert [m["title"] for m in messages] == [
        "prod_system run failed: C1b paper_trading",
        "prod_system run failed: C2 prod",
    ]
    assert messages[1]["message"].startswith(f"run {result.run_id} of C2 prod failed: ")
