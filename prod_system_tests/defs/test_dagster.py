"""The Dagster layer, end to end with real materializations on the bundled candles."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from prod_system.analysis import performance
from prod_system.analysis.investor import WINDOWS, read_statistics
from prod_system.cli.launch import resources_for, simulate_with_dagster
from prod_system.definitions import build_definitions
from prod_system.defs.resources import TableStoreIOManager
from prod_system.defs.simulation import (
    PORTFOLIO_TABLES,
    build_simulation_assets,
)
from prod_system.log_dir import TABLES, LogDir
from prod_system.naming import RANGE_START_TAG, WINDOW_START_TAG
from prod_system.runs.simulate import simulate
from prod_system_tests.kit.accounting import assert_accounting
from prod_system_tests.kit.data import sim_config

REPO = Path(__file__).resolve().parents[2]
STAGES = ["market_data", "dag_node_outputs", "predictions", "target_positions", "orders", "fills", "portfolio"]


def key(name: str, model: str = "C1b") -> AssetKey:
    return AssetKey([model, "simulation", name])


def comparable(log_dir, name):
    frame = LogDir(log_dir).read_table(name)
    return frame.drop(
        columns=[
            c for c in ("seconds", "peak_memory_bytes", "decided_at", "submitted_at", "filled_at") if c in frame.columns
        ]
    ).reset_index(drop=True)


def test_asset_graph_has_lineage_per_model():
    graph = build_definitions(["C1b", "C3a"]).resolve_asset_graph()
    for model in ("C1b", "C3a"):
        keys = {k for k in graph.get_all_asset_keys() if k.path[:2] == [model, "simulation"]}
        assert keys == {key(s, model) for s in [*STAGES, "reconciliation"]}
        for upstream, downstream in itertools.pairwise([*STAGES, "reconciliation"]):
            assert key(upstream, model) in graph.get(key(downstream, model)).parent_keys, (upstream, downstream)
        assert key("portfolio", model) in graph.get(key("portfolio", model)).parent_keys  # self-dependency
        assert graph.get(key("portfolio", model)).partitions_def is not None
        for mode in ("paper_trading", "prod"):
            live = AssetKey([model, mode, "reconciliation"])
            assert graph.get(live).group_name == f"{model}_{mode}"
            assert live in graph.get(AssetKey(["system_reconciliation", f"{model}_last_5minutes"])).parent_keys
    historical = AssetKey(["C3a", "historical", "historical_pnl"])
    for window in ("since_2019", "since_2022"):
        assert historical in graph.get(AssetKey(["pnl_for_investors", f"cumulative_pnl_{window}"])).parent_keys
    # the investors' notebook: downstream of the history and the four plots, run daily after them
    plots = [AssetKey(["pnl_for_investors", f"cumulative_pnl_{window}"]) for window in WINDOWS]
    assert graph.get(AssetKey(["pnl_for_investors", "notebook"])).parent_keys == {historical, *plots}


def test_dagster_backfill_equals_pure_core(tmp_path, snapshot, monkeypatch):
    """Two session days through Dagster (one ranged run) give exactly the pure core's tables.

    The instance is the repository's dagster.yaml (with its own event log storage)."""
    config = sim_config(snapshot, tmp_path / "dagster", start="2023-07-21T00:00:00Z", end="2023-07-23T00:00:00Z")
    (tmp_path / "home").mkdir()
    shutil.copy(REPO / "dagster.yaml", tmp_path / "home" / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    instance = DagsterInstance.get()
    assert type(instance.event_log_storage).__name__ == "FastSqliteEventLogStorage"
    summary = simulate_with_dagster(config, instance=instance)
    core = simulate(config.model_copy(update={"log_root": str(tmp_path / "core")}))
    assert summary.bars == core.bars == 576
    assert_accounting(LogDir(summary.log_dir), config.costs.fees.taker, initial_cash=config.portfolio.initial_cash)
    for name in TABLES:
        if name == "dag/profiling":
            continue
        pd.testing.assert_frame_equal(comparable(summary.log_dir, name), comparable(core.log_dir, name), obj=name)
    run = instance.get_run_by_id(summary.dagster_run_id)
    assert run.tags["dagster/asset_partition_range_start"] == "2023-07-21"
    for stage in STAGES:
        materialized = instance.get_materialized_partitions(key(stage))
        assert {"2023-07-21", "2023-07-22"} <= materialized, stage
    event = instance.get_latest_materialization_event(key("portfolio"))
    metadata = event.asset_materialization.metadata
    assert {"day_pnl", "run_pnl", "run_gross_volume", "net_wealth", "log_dir", "pnl_report"} <= set(metadata)
    figures = performance.compute(read_statistics(core.log_dir), config.bar_delta)
    assert metadata["sharpe"].value == round(figures.sharpe, 4) and metadata["net_pnl"].value == round(core.pnl, 2)
    assert json.loads((Path(summary.log_dir) / "run.json").read_text())["dagster_run_id"] == summary.dagster_run_id
    # what was stored is there for another process (the UI) to read
    reader = subprocess.run(
        [
            sys.executable,
            "-c",
            "from dagster import DagsterInstance, AssetKey; i = DagsterInstance.get(); "
            "print(len(i.get_materialized_partitions(AssetKey(['C1b', 'simulation', 'portfolio']))))",
        ],
        env={**os.environ},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert reader.stdout.strip() == "2"


def test_day_by_day_runs_chain_through_the_portfolio(tmp_path, snapshot):
    """Days materialized one by one, the first marked as the window's first day, give the tables of the
    single-run backfill over the range and of the pure core: each day starts from the previous day's end
    state, the window's first day from initial cash, even when the day before it was materialized by an
    earlier simulation (issue 12: a window never inherits the holdings of another)."""
    instance = DagsterInstance.ephemeral()
    assets = build_simulation_assets("C1b")

    def run(root: str, tags: dict[str, str], partition: str | None = None):
        config = sim_config(snapshot, tmp_path / root, start="2023-07-21T00:00:00Z", end="2023-07-23T00:00:00Z")
        resources = {**resources_for(config), "io_manager": TableStoreIOManager(base_dir=str(tmp_path / "store"))}
        result = materialize(assets, instance=instance, resources=resources, partition_key=partition, tags=tags)
        assert result.success
        return instance.get_latest_materialization_event(key("portfolio")).asset_materialization.metadata

    assert run("earlier", {WINDOW_START_TAG: "2023-07-20"}, "2023-07-20")["started_from"].value == "initial cash"
    first = run("days", {WINDOW_START_TAG: "2023-07-21"}, "2023-07-21")
    assert first["started_from"].value == "initial cash"  # not from the end of 2023-07-20
    assert run("days", {}, "2023-07-22")["started_from"].value == "previous day"
    ranged = {RANGE_START_TAG: "2023-07-21", "dagster/asset_partition_range_end": "2023-07-22"}
    assert run("ranged", ranged)["started_from"].value == "initial cash"
    core = simulate(sim_config(snapshot, tmp_path / "core", start="2023-07-21T00:00:00Z", end="2023-07-23T00:00:00Z"))
    days = [
        sim_config(snapshot, tmp_path / "days", start=f"2023-07-{d}T00:00:00Z", end=f"2023-07-{d + 1}T00:00:00Z")
        for d in (21, 22)
    ]
    (single_run,) = (tmp_path / "ranged").glob("C1b/simulation/*/*/system_log_dir")

    def table(log_dir, name: str) -> pd.DataFrame:  # a client order id names its run's window: not compared
        return comparable(log_dir, name).drop(columns=["client_order_id"], errors="ignore")

    for name in [*PORTFOLIO_TABLES, "orders", "fills"]:
        chained = pd.concat([table(day.log_dir(), name) for day in days], ignore_index=True)
        pd.testing.assert_frame_equal(chained, table(single_run, name), obj=name)
        pd.testing.assert_frame_equal(chained, table(core.log_dir, name), obj=name)


def test_a_day_is_refused_without_its_previous_day(tmp_path, snapshot):
    """A day whose previous day is not materialized, and that is not marked as the first day of a
    simulation window, fails with one line naming the missing day, before it writes anything; marked
    (run tag prod_system/window_start), it starts the window from initial cash."""
    instance = DagsterInstance.ephemeral()
    config = sim_config(snapshot, tmp_path / "runs", start="2023-07-22T00:00:00Z", end="2023-07-23T00:00:00Z")
    resources = {**resources_for(config), "io_manager": TableStoreIOManager(base_dir=str(tmp_path / "store"))}
    assets = build_simulation_assets("C1b")

    def failure(tags: dict[str, str], partition: str | None = "2023-07-22") -> str:
        result = materialize(
            assets, instance=instance, resources=resources, partition_key=partition, tags=tags, raise_on_error=False
        )
        assert not result.success
        (event,) = result.get_step_failure_events()
        return event.step_failure_data.user_failure_data.description

    message = failure({})
    assert "the portfolio of the previous day 2023-07-21 is not materialized" in message, message
    assert "prod_system/window_start=2023-07-22" in message and "\n" not in message
    assert not Path(config.log_dir()).exists()  # nothing written
    assert "before the first day 2023-07-23 of its simulation window" in failure({WINDOW_START_TAG: "2023-07-23"})
    assert "expected a session day" in failure({WINDOW_START_TAG: "tomorrow"})
    # a ranged run that goes on with a window started the day before: the tag wins over the range
    ranged = {RANGE_START_TAG: "2023-07-22", "dagster/asset_partition_range_end": "2023-07-22"}
    assert "previous day 2023-07-21 is not materialized" in failure({**ranged, WINDOW_START_TAG: "2023-07-21"}, None)
    marked = {WINDOW_START_TAG: "2023-07-22"}
    result = materialize(assets, instance=instance, resources=resources, partition_key="2023-07-22", tags=marked)
    assert result.success
    metadata = instance.get_latest_materialization_event(key("portfolio")).asset_materialization.metadata
    assert metadata["started_from"].value == "initial cash"


def test_dagster_job_execute_cli(tmp_path, snapshot):
    """`dagster job execute` runs a simulation job over a partition range, as a user would."""
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "PROD_SYSTEM_ROOT": str(tmp_path / "root"),
        "PROD_SYSTEM_MODELS": "C1b",
    }
    (tmp_path / "home").mkdir()
    tags = {"dagster/asset_partition_range_start": "2023-07-21", "dagster/asset_partition_range_end": "2023-07-21"}
    config = tmp_path / "run.yaml"
    config.write_text(f"resources:\n  market_data:\n    config:\n      source: parquet:{snapshot}\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "job",
            "execute",
            "-m",
            "prod_system.definitions",
            "-j",
            "C1b_simulation_job",
            "--tags",
            json.dumps(tags),
            "--config",
            str(config),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr
    log_dir = tmp_path / "root/C1b/simulation/manual/20230721_000000.20230722_000000/system_log_dir"
    stats = LogDir(log_dir).read_table("portfolio/statistics")
    assert len(stats) == 288
    assert f"parquet:{snapshot}" in (log_dir / "system_config.yaml").read_text()


def test_dagster_job_backfill_refuses_a_broken_chain_and_chains_days_in_order(tmp_path, monkeypatch):
    """`dagster job backfill` launches one run per day, all at once, in no guaranteed order: without the
    window's first day marked, every day is refused with one line naming its missing previous day, and
    nothing is written; days launched in order, the first marked (run tag prod_system/window_start),
    give the tables of the single-run backfill over the range."""
    import yaml
    from dagster import DagsterEventType, DagsterRunStatus

    home = tmp_path / "home"
    home.mkdir()
    settings = yaml.safe_load((REPO / "dagster.yaml").read_text())
    # runs launched at once by the CLI, in subprocesses (the queue would wait for the daemon)
    settings["run_coordinator"] = {"module": "dagster.core.run_coordinator", "class": "DefaultRunCoordinator"}
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("PROD_SYSTEM_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("PROD_SYSTEM_MODELS", "C1b")
    instance = DagsterInstance.get()

    def backfill(*args: str) -> dict[str, object]:
        """The runs of one `dagster job backfill`, once finished: partition -> run."""
        known = {run.run_id for run in instance.get_runs()}
        command = [sys.executable, "-m", "dagster", "job", "backfill", "-m", "prod_system.definitions"]
        done = subprocess.run(
            [*command, "-j", "C1b_simulation_job", "--noprompt", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        deadline = time.monotonic() + 300
        while True:
            runs = [run for run in instance.get_runs() if run.run_id not in known]
            if (runs and all(run.is_finished for run in runs)) or time.monotonic() > deadline:
                return {run.tags["dagster/partition"]: run for run in runs}
            time.sleep(1)

    def failure(run) -> str:
        (event,) = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
        return event.dagster_event.step_failure_data.user_failure_data.description

    refused = backfill("--from", "2023-07-21", "--to", "2023-07-22")
    assert {day: run.status for day, run in refused.items()} == {
        "2023-07-21": DagsterRunStatus.FAILURE,
        "2023-07-22": DagsterRunStatus.FAILURE,
    }
    for day, previous in (("2023-07-21", "2023-07-20"), ("2023-07-22", "2023-07-21")):
        message = failure(refused[day])
        assert f"of {day}: the portfolio of the previous day {previous} is not materialized" in message, message
    assert not (tmp_path / "root" / "C1b").exists()  # nothing written

    marked = json.dumps({WINDOW_START_TAG: "2023-07-21"})
    for day in ("2023-07-21", "2023-07-22"):  # in order: each day once the previous one is done
        (run,) = backfill("--partitions", day, "--tags", marked).values()
        assert run.status == DagsterRunStatus.SUCCESS, run.run_id
    instance.dispose()

    monkeypatch.setenv("PROD_SYSTEM_ROOT", str(tmp_path / "ranged"))  # the single-run backfill, as the UI runs it
    ranged = {RANGE_START_TAG: "2023-07-21", "dagster/asset_partition_range_end": "2023-07-22"}
    job = build_definitions(["C1b"]).resolve_job_def("C1b_simulation_job")
    assert job.execute_in_process(instance=DagsterInstance.ephemeral(), tags=ranged).success
    days = sorted((tmp_path / "root").glob("C1b/simulation/manual/*/system_log_dir"))
    (single_run,) = (tmp_path / "ranged").glob("C1b/simulation/manual/*/system_log_dir")
    assert [d.parent.name for d in days] == ["20230721_000000.20230722_000000", "20230722_000000.20230723_000000"]
    for name in [*PORTFOLIO_TABLES, "orders", "fills"]:
        chained = pd.concat([comparable(day, name) for day in days], ignore_index=True)
        chained = chained.drop(columns=["client_order_id"], errors="ignore")
        whole = comparable(single_run, name).drop(columns=["client_order_id"], errors="ignore")
        pd.testing.assert_frame_equal(chained, whole, obj=name)


@pytest.mark.parametrize("start", ["2023-07-21T06:00:00Z"])
def test_dagster_engine_needs_whole_days(tmp_path, snapshot, start):
    from prod_system.errors import ConfigError

    config = sim_config(snapshot, tmp_path, start=start)
    with pytest.raises(ConfigError, match="whole session days"):
        simulate_with_dagster(config, instance=DagsterInstance.ephemeral())


def test_repository_instance_settings_match_the_cli_default():
    import yaml

    from prod_system.cli.launch import INSTANCE_SETTINGS

    assert yaml.safe_load((REPO / "dagster.yaml").read_text()) == INSTANCE_SETTINGS


def test_code_location_loads_without_errors(tmp_path):
    """What `dagster dev -w workspace.yaml` loads: the workspace's code location validates."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_user_model_gets_its_own_asset_group(tmp_path, monkeypatch):
    package = tmp_path / "usermodels"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from prod_system.models.c1b import build_dag as _c1b\n"
        "def build_dag(bar, **params):\n    return _c1b(bar, horizon=6, **params)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = build_definitions(["usermodels:build_dag"]).resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert "usermodels_build_dag/simulation/portfolio" in keys
