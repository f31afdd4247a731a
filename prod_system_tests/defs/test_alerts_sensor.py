"""The run-failure sensor: a failed run of a job of the code location, in a real Dagster instance, sends
one message (job, run id, partition, the error's first line) to a real HTTP endpoint; the same failure
again is rate-limited; the sensor is on by default and watches every job of the code location."""

from __future__ import annotations

from dagster import DagsterInstance, DefaultSensorStatus, build_run_status_sensor_context

from prod_system.cli.launch import resources_for
from prod_system.definitions import build_definitions
from prod_system.defs.alerts import SENSOR_NAME, alert_on_run_failure
from prod_system.defs.resources import LogDirResource, TableStoreIOManager
from prod_system_tests.kit.alerts import URLS_ENV, AlertEndpoint
from prod_system_tests.kit.data import sim_config


def test_a_failed_run_alerts_once_with_its_job_run_partition_and_error(tmp_path, snapshot, monkeypatch):
    config = sim_config(snapshot, tmp_path / "runs", start="2023-07-22T00:00:00Z", end="2023-07-23T00:00:00Z")
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
        monkeypatch.setenv(URLS_ENV, endpoint.url("sensor-token-123"))
        for _ in range(2):  # the daemon's next tick, or the same failure in the next run: one message
            context = build_run_status_sensor_context(
                sensor_name=SENSOR_NAME,
                dagster_instance=instance,
                dagster_run=result.dagster_run,
                dagster_event=result.get_run_failure_event(),
                resources={"log_dir": LogDirResource(root=config.log_root)},
            ).for_run_failure()
            alert_on_run_failure(context)
        messages = endpoint.wait_for(2, timeout=1)
    assert [m["title"] for m in messages] == ["prod_system run failed: C1b_simulation_job"]
    text = messages[0]["message"]
    assert text.startswith(f"run {result.run_id} of C1b_simulation_job (partition 2023-07-22) failed: ")
    assert "the portfolio of the previous day 2023-07-21 is not materialized" in text and "\n" not in text
