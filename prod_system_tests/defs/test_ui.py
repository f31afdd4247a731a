"""The Dagster UI in a real browser: `dagster dev` with the repository's workspace.yaml and dagster.yaml on
loopback, headless Chromium driven by Playwright. An operator opens a model's asset graph, checks its
lineage, materializes one partition (one simulated day) and waits for the run to succeed; the asset page
then shows the figures and the plot preview. A live paper session's bars reported there (the session
job, in process), the live bar asset's page plots their figures across the bars. Screenshots go to
PROD_SYSTEM_SCREENSHOTS (or the test's temporary folder)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance

from prod_system.analysis.observer import REPORT_FOLDER, REPORT_HTML
from prod_system.definitions import build_definitions
from prod_system.log_dir import LogDir
from prod_system.naming import WINDOW_START_TAG
from prod_system_tests.kit.dagster_ui import (
    chromium_page,
    dagster_dev,
    launch_partition,
    lineage_edges,
    metadata_plot,
    open_asset_group,
    wait_for_run,
)
from prod_system_tests.kit.live_dagster import run_session_job
from prod_system_tests.kit.reports import NOTEBOOK_SECTIONS

GROUP = "C1b_simulation"


def _group_graph() -> tuple[list[str], int]:
    """The group's node labels and its edges between different assets, from the Definitions."""
    graph = build_definitions(["C1b"]).resolve_asset_graph()
    keys = [key for key in graph.get_all_asset_keys() if graph.get(key).group_name == GROUP]
    edges = {(up, key) for key in keys for up in graph.get(key).parent_keys if up in keys and up != key}
    return [key.path[-1] for key in keys], len(edges)


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("PROD_SYSTEM_SCREENSHOTS", tmp_path / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_operator_materializes_a_partition_from_the_ui(tmp_path, screenshots, candles, monkeypatch):
    names, edges = _group_graph()
    assert len(names) == 8 and edges >= len(names) - 1
    root = tmp_path / "runs"
    with dagster_dev(tmp_path / "home", env={"PROD_SYSTEM_ROOT": str(root)}) as dev:
        assert f"Serving dagster-webserver on {dev.url}" in dev.output()  # loopback by default
        with chromium_page() as page:
            opened = time.monotonic()
            open_asset_group(page, dev.url, GROUP, names)
            assert lineage_edges(page) == edges
            page.screenshot(path=screenshots / "asset_graph.png")

            # the first day of a simulation: the operator marks it as the window's first day (a day
            # otherwise continues from the previous day's portfolio, and refuses without it)
            run_id = launch_partition(page, "2023-07-21", tags={WINDOW_START_TAG: "2023-07-21"})
            status = wait_for_run(page)
            seconds = time.monotonic() - opened
            page.screenshot(path=screenshots / "run.png")
            assert status == "Success", f"run {run_id}: {status}"
            print(f"asset graph -> partition materialized: {seconds:.1f} s; webserver ready {dev.ready_seconds:.1f} s")

            # the portfolio's page: the day's figures and the PnL plot preview
            page.goto(f"{dev.url}/assets/C1b/simulation/portfolio?partition=2023-07-21")
            for label in ("run_pnl", "net_wealth", "run_turnover", "log_dir", "pnl_plot"):
                page.get_by_text(label, exact=True).first.wait_for()
            page.screenshot(path=screenshots / "portfolio.png", full_page=True)
            page.get_by_text("[Show Markdown]").first.click()
            preview = page.locator("img[src^='data:image/png;base64']").first
            preview.wait_for()
            assert preview.evaluate("image => image.naturalWidth") > 100  # the PNG decoded
            page.screenshot(path=screenshots / "pnl_preview.png")

            # a live paper session's bars (the session job, a few minutes at 60x) in the instance the UI
            # reads: the live bar asset's page plots their figures bar after bar (numeric metadata)
            monkeypatch.setenv("DAGSTER_HOME", str(dev.home))  # its event log's home too
            with DagsterInstance.get() as instance:
                live = run_session_job(candles, tmp_path / "live", instance, monkeypatch)[0]
            assert live.success
            statuses = [e.materialization.metadata["status"].value for e in live.get_asset_materialization_events()]
            assert statuses.count("traded") >= 2, statuses  # a chart of two points at least: a line
            page.goto(f"{dev.url}/assets/C1b/paper_trading/bar")
            page.get_by_text("session_pnl", exact=True).first.wait_for()  # the latest bar's metadata
            plot = metadata_plot(page, "session_pnl")
            print(f"session_pnl plot: {plot}")
            # drawn (axes and all), and its series a line across the chart, not one dot
            assert plot.pixels > 1000 and plot.series_span > plot.width / 3, plot
            page.screenshot(path=screenshots / "live_bar_plots.png", full_page=True)

            # the reconciliation's asset check, with its result
            page.goto(f"{dev.url}/assets/C1b/simulation/reconciliation?view=checks")
            page.get_by_text("matches_research", exact=True).first.wait_for()
            page.get_by_text("Passed", exact=True).first.wait_for()
            page.screenshot(path=screenshots / "checks.png")

            # the reconciliation's report, the executed observer notebook, as a reader opens the file
            (report,) = root.glob(f"C1b/simulation/*/*/{REPORT_FOLDER}/*/{REPORT_HTML}")
            page.goto(report.as_uri())
            page.get_by_text("reconciled: pnl correlation").first.wait_for()
            assert page.locator("h2").all_inner_texts() == NOTEBOOK_SECTIONS
            assert page.locator("img[src^='data:image/png;base64']").count() == 4
            page.screenshot(path=screenshots / "observer_notebook.png")

        (log_dir,) = root.glob("C1b/simulation/*/*/system_log_dir")
        statistics = LogDir(log_dir).read_table("portfolio/statistics")
        assert len(statistics) == 288 and statistics["bar_end"].min().isoformat() == "2023-07-21T00:05:00+00:00"
    assert dev.warnings() == [], "\n".join(dev.warnings())
