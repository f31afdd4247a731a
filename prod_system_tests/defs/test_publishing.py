"""Publishing to a real local S3 server (moto's, over HTTP) through dagster-aws, end to end in Dagster."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, build_schedule_context
from dagster_aws.s3 import S3Resource
from PIL import Image

from prod_system.analysis.investor import WINDOWS, historical_runs, investor_window, read_statistics
from prod_system.analysis.observer import latest_report
from prod_system.definitions import build_definitions
from prod_system.defs.resources import LogDirResource, MarketDataResource, PublishingResource, SystemResource
from prod_system.log_dir import LogDir
from prod_system.runs.simulate import simulate
from prod_system_tests.kit.data import sim_config
from prod_system_tests.kit.s3 import create_bucket, s3_credentials

PNG = b"\x89PNG\r\n\x1a\n"
BUCKET = "prod-system-reports-test"
SECRET = f"secret-{uuid.uuid4().hex}"  # must never appear in any output
SESSIONS = [("2023-07-21T00:00:00Z", "2023-07-22T00:00:00Z"), ("2023-07-22T00:00:00Z", "2023-07-22T12:00:00Z")]


@pytest.fixture(scope="module")
def credentials():
    with s3_credentials(SECRET):
        yield


@pytest.fixture(scope="module")
def bucket(s3_endpoint, credentials):
    return create_bucket(s3_endpoint, BUCKET)


@pytest.fixture(scope="module")
def live_root(tmp_path_factory, snapshot) -> Path:
    """Two consecutive paper-trading sessions of C3a (run by the core engine on the replayed clock); the
    latest one's observer notebook on (the observer job publishes its HTML)."""
    root = tmp_path_factory.mktemp("live")
    for start, end in SESSIONS:
        observer = {"notebook": end == SESSIONS[-1][1]}
        simulate(
            sim_config(snapshot, root, model="C3a", run_mode="paper_trading", start=start, end=end, observer=observer)
        )
    return root


def definitions(root: Path, snapshot: Path, endpoint: str, bucket: str = BUCKET):
    resources = {
        "s3": S3Resource(endpoint_url=endpoint, region_name="us-east-1"),
        "publishing": PublishingResource(bucket=bucket, investor_run_mode="paper_trading"),
        "log_dir": LogDirResource(root=str(root)),
        "market_data": MarketDataResource(source=f"parquet:{snapshot}"),
        "system": SystemResource(),
    }
    return build_definitions(["C3a"], resources=resources, investor_model="C3a")


def get(client, key: str) -> tuple[bytes, str]:
    obj = client.get_object(Bucket=BUCKET, Key=key)
    return obj["Body"].read(), obj["ContentType"]


def test_observer_and_investor_plots_are_published(live_root, snapshot, s3_endpoint, bucket):
    defs = definitions(live_root, snapshot, s3_endpoint)
    instance = DagsterInstance.ephemeral()
    results = {
        name: defs.resolve_job_def(name).execute_in_process(instance=instance)
        for name in (
            "C3a_paper_trading_observer_job",
            "investor_history_job",
            "investor_last_24hours_job",
            "investor_last_5minutes_job",
        )
    }
    assert all(result.success for result in results.values())

    # the reconciliation report of the latest session, byte for byte, as HTML
    report = latest_report(live_root, "C3a", "paper_trading")
    assert report is not None and "20230722_000000.20230722_120000" in str(report)
    body, content_type = get(bucket, "system_reconciliation/C3a.last_5minutes.html")
    assert body == report.read_bytes() and content_type == "text/html; charset=utf-8"
    assert report.name == "pnl_realtime_observer.html" and (report.parent / "pnl_realtime_observer.ipynb").is_file()
    assert b">Production vs research<" in body and b">The account now<" in body  # the notebook's sections
    summary = json.loads((report.parent / "summary.json").read_text())
    assert summary["reconciled"] and summary["bars"] == 144
    (reconciliation,) = [
        m
        for m in results["C3a_paper_trading_observer_job"].get_asset_materialization_events()
        if m.asset_key == AssetKey(["C3a", "paper_trading", "reconciliation"])
    ]
    drawdown = reconciliation.materialization.metadata["max_drawdown"].value
    assert drawdown == round(summary["performance"]["max_drawdown"], 2) > 0
    (check,) = results["C3a_paper_trading_observer_job"].get_asset_check_evaluations()
    assert check.passed and check.asset_key == AssetKey(["C3a", "paper_trading", "reconciliation"])

    # the four investor plots: PNGs of the expected size, with the figures in the metadata
    sessions = [
        LogDir(p).read_table("portfolio/statistics")
        for p in sorted(live_root.glob("C3a/paper_trading/*/*/system_log_dir"))
    ]
    expected = {
        "since_2019": read_statistics(historical_runs(live_root, "C3a")[-1])["pnl"].sum(),
        "since_2022": read_statistics(historical_runs(live_root, "C3a")[-1])["pnl"].sum(),
        "last_5minutes": sessions[1]["pnl"].sum(),
        "last_24hours": pd.concat(sessions).query("bar_end > '2023-07-21T12:00:00Z'")["pnl"].sum(),
    }
    assert expected["last_24hours"] != pytest.approx(expected["last_5minutes"])
    for window, pnl in expected.items():
        body, content_type = get(bucket, f"pnl_for_investors/cumulative_pnl.{window}.png")
        assert content_type == "image/png" and body.startswith(PNG)
        assert Image.open(io.BytesIO(body)).size == (1000, 500)
        job = "investor_history_job" if window.startswith("since") else f"investor_{window}_job"
        (materialization,) = [
            m
            for m in results[job].get_asset_materialization_events()
            if m.asset_key == AssetKey(["pnl_for_investors", f"cumulative_pnl_{window}"])
        ]
        metadata = materialization.materialization.metadata
        assert metadata["cumulative_pnl_usd"].value == round(pnl, 2)  # USDT to the cent in the UI
        assert metadata["bytes"].value == len(body)
        assert metadata["plot"].value.startswith("![")  # a preview in the UI
        # the window's performance figures, next to the plot and in the metadata
        text, content_type = get(bucket, f"pnl_for_investors/performance.{window}.md")
        assert content_type == "text/markdown; charset=utf-8"
        assert f"| net PnL | {pnl:,.2f} USDT" in text.decode() and "| Sharpe (annualised) |" in text.decode()
        assert metadata["net_pnl"].value == round(pnl, 2)

    # the investors' notebook, executed after the plots beside the historical simulation, its HTML published
    (html,) = historical_runs(live_root, "C3a")[-1].glob(
        "historical_pnl_for_investors/*/historical_pnl_for_investors.html"
    )
    assert (html.parent / "historical_pnl_for_investors.ipynb").is_file()
    body, content_type = get(bucket, "pnl_for_investors/historical_pnl_for_investors.html")
    assert body == html.read_bytes() and content_type == "text/html; charset=utf-8"
    page = body.decode()
    for window in WINDOWS:  # each window's own title, with its plot and figures (no window is without data here)
        title = investor_window(live_root, "C3a", window, "paper_trading").title
        assert f">{title}<" in page and f'alt="{title}: cumulative PnL in USDT' in page
    assert page.count("<img ") == 4 and page.count("Sharpe (annualised)") == 4
    assert "not available yet" not in page and "Traceback" not in page and "window_section(" not in page
    assert str(live_root) not in page  # no path for investors: the folder is in the operator's metadata
    assert f"{sessions[1]['pnl'].sum():,.2f} USDT" in page  # the current session's net PnL, as in its figures
    (notebook,) = [
        m
        for m in results["investor_history_job"].get_asset_materialization_events()
        if m.asset_key == AssetKey(["pnl_for_investors", "notebook"])
    ]
    assert notebook.materialization.metadata["bytes"].value == len(body)
    assert notebook.materialization.metadata["directory"].value == str(html.parent.resolve())

    # the secret key is nowhere: not in the events, not in any file written
    for result in results.values():
        for event in instance.all_logs(result.run_id):
            assert SECRET not in str(event)
    for path in live_root.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_missing_bucket_is_a_clear_failure(live_root, snapshot, s3_endpoint, credentials):
    defs = definitions(live_root, snapshot, s3_endpoint, bucket="no-such-bucket")
    result = defs.resolve_job_def("investor_last_5minutes_job").execute_in_process(raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0]
    assert "S3 bucket 'no-such-bucket' does not exist at http://127.0.0.1" in failure.step_failure_data.error.message


def test_schedules_skip_until_a_session_exists(live_root, snapshot, s3_endpoint, tmp_path):
    defs = definitions(live_root, snapshot, s3_endpoint)
    schedules = {s.name: s for s in defs.get_repository_def().schedule_defs}
    assert schedules["C3a_paper_trading_observer_job_schedule"].cron_schedule == "*/5 * * * *"
    assert schedules["investor_history_job_schedule"].cron_schedule == "15 0 * * *"
    assert schedules["investor_last_5minutes_job_schedule"].cron_schedule == "*/5 * * * *"
    tick = schedules["C3a_paper_trading_observer_job_schedule"]
    publishing = PublishingResource(bucket=BUCKET, investor_run_mode="paper_trading")
    when = datetime(2026, 1, 2, 3, 5, tzinfo=UTC)
    with build_schedule_context(
        resources={"log_dir": LogDirResource(root=str(tmp_path)), "publishing": publishing},
        scheduled_execution_time=when,
    ) as empty:
        data = tick.evaluate_tick(empty)
        assert not data.run_requests and "no paper_trading session of C3a" in data.skip_message
    with build_schedule_context(
        resources={"log_dir": LogDirResource(root=str(live_root)), "publishing": publishing},
        scheduled_execution_time=when,
    ) as live:
        assert len(tick.evaluate_tick(live).run_requests) == 1


def test_investor_amounts_put_the_sign_before_the_dollar():
    from prod_system.analysis.plots import dollars

    assert [dollars(v) for v in (-1000, -1234.6, 483.2, -0.2, 0)] == ["-$1,000", "-$1,235", "$483", "$0", "$0"]
