"""The PnL real-time observer: reports next to the log dir, the reconcile and historical-pnl commands."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prod_system.analysis import performance, plots
from prod_system.analysis.investor import read_statistics
from prod_system.analysis.observer import (
    REPORT_FOLDER,
    REPORT_HTML,
    find_runs,
    latest_report,
    observe,
    production_performance,
)
from prod_system.analysis.reconciliation import reconcile
from prod_system.data.market_data import (
    CandleStore,
    read_snapshot,
    select_window,
    write_snapshot,
    write_snapshot_months,
)
from prod_system.data.sources import load_source
from prod_system.errors import ReconciliationError
from prod_system.log_dir import LogDir
from prod_system.models.dag import load_model
from prod_system.runs.historical import historical_pnl
from prod_system_tests.kit.cli import cli
from prod_system_tests.kit.data import sim_config
from prod_system_tests.kit.reports import NOTEBOOK_SECTIONS, sections

PNG = b"\x89PNG\r\n\x1a\n"
SUMMARY_KEYS = {
    "pnl_correlation",
    "max_abs_pnl_diff",
    "cumulative_pnl_prod",
    "cumulative_pnl_research",
    "first_divergence",
}


@pytest.fixture(scope="module")
def run_root(tmp_path_factory, simulated_day) -> Path:
    """A root holding a copy of the simulated day's window folder (reports are written next to it)."""
    config, log_dir = simulated_day
    root = tmp_path_factory.mktemp("observer")
    window = log_dir.parent
    target = root / window.relative_to(config.log_root)
    shutil.copytree(window, target, ignore=shutil.ignore_patterns(REPORT_FOLDER))
    return root


def test_a_simulation_writes_its_report(simulated_day):
    """The simulation reconciles itself when it ends: its report (the executed notebook) is next to its log dir."""
    config, log_dir = simulated_day
    (report,) = (log_dir.parent / REPORT_FOLDER).glob(f"*/{REPORT_HTML}")
    assert (report.parent / "pnl_realtime_observer.ipynb").exists()
    assert json.loads((report.parent / "summary.json").read_text())["reconciled"] is True
    # and its pnl_report.md has the run's performance figures
    figures = performance.compute(LogDir(log_dir).read_table("portfolio/statistics"), config.bar_delta)
    assert figures.sharpe is not None and figures.net_pnl != 0
    text = (log_dir / "pnl_report.md").read_text()
    assert "## Performance" in text and f"| Sharpe (annualised) | {figures.sharpe:,.2f} |" in text


def test_report_of_a_simulated_day(run_root, simulated_day):
    config, _ = simulated_day
    (run,) = find_runs(run_root, "C1b")
    report = observe(run.log_dir, now=pd.Timestamp("2026-01-02T03:04:05Z"))
    assert report.directory == run.window_dir / REPORT_FOLDER / "20260102_030405"
    summary = json.loads((report.directory / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["reconciled"] is True and summary["first_divergence"] is None
    assert summary["pnl_correlation"] >= 0.999
    gap = abs(summary["cumulative_pnl_prod"] - summary["cumulative_pnl_research"])
    assert gap <= 0.001 * summary["gross_volume_prod"]
    prod = LogDir(run.log_dir).read_table("portfolio/statistics")
    assert summary["cumulative_pnl_prod"] == pytest.approx(prod["pnl"].sum())
    assert summary["bars"] == 288 and summary["last_bar_end"] == config.end.isoformat()
    figures = performance.compute(prod, config.bar_delta)
    assert summary["performance"]["net_pnl"] == pytest.approx(prod["pnl"].sum())
    assert summary["performance"]["sharpe"] == pytest.approx(figures.sharpe)
    # timing: every node of the model, and orders submitted at the simulated knowledge delay
    nodes = pd.read_csv(report.directory / "node_timing.csv")
    assert list(nodes["node"]) == load_model("C1b", config.bar_delta).order
    assert (nodes["median_ms"] > 0).all() and nodes["share_of_dag_time"].sum() == pytest.approx(1.0)
    assert summary["timing"]["order_delay_seconds"]["median"] == pytest.approx(10.0)
    assert summary["timing"]["orders"] == len(LogDir(run.log_dir).read_table("orders"))
    # side by side: production and research per bar and asset
    side = pd.read_parquet(report.directory / "side_by_side.parquet")
    assert len(side) == 288 * 8
    np.testing.assert_allclose(side["target_shares_prod"], side["target_shares_research"])
    # the report is the executed notebook: every section, the verdict and figures, no code by default; it
    # stands alone (plots inlined, no script fetched from elsewhere)
    page = report.html.read_text()
    assert sections(page) == NOTEBOOK_SECTIONS
    assert "reconciled: pnl correlation" in page and f"<td>{figures.sharpe:,.2f}</td>" in page
    assert 'class="jp-CodeMirrorEditor' not in page and "views.open_run" not in re.sub("<[^>]+>", "", page)
    assert page.count('<img alt="') == page.count("<img ") == 4  # inlined, described
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert summary["notebook_seconds"] > 0
    for name in ("cumulative_pnl.png", "holdings_difference.png", "timing.png"):
        assert (report.directory / name).read_bytes().startswith(PNG)
    assert latest_report(run_root, "C1b") == report.html


def test_reconciles_part_of_a_window(simulated_day):
    config, log_dir = simulated_day
    store = CandleStore(pd.read_parquet(config.market_data.source.removeprefix("parquet:")), config.universe)
    start = config.start + pd.Timedelta(hours=6)
    end = config.start + pd.Timedelta(hours=12)
    result = reconcile(config, LogDir(log_dir), store, start, end)
    assert result.summary.bars == 72
    assert result.per_bar["bar_end"].iloc[0] == start + config.bar_delta
    assert result.per_bar["bar_end"].iloc[-1] == end
    assert result.summary.reconciled
    # the report's performance figures are production's over the same bars
    first, last = result.per_bar["bar_end"].iloc[[0, -1]]
    assert production_performance(LogDir(log_dir), config.bar_delta, first, last).bars == 72
    with pytest.raises(ReconciliationError, match="no bar"):
        reconcile(config, LogDir(log_dir), store, config.end, config.end + pd.Timedelta(hours=1))


def test_find_runs_by_window(run_root):
    assert len(find_runs(run_root, "C1b", start=pd.Timestamp("2023-07-21T12:00:00Z"))) == 1
    assert find_runs(run_root, "C1b", start=pd.Timestamp("2023-07-22T00:00:00Z")) == []
    assert find_runs(run_root, "C1b", end=pd.Timestamp("2023-07-21T00:00:00Z")) == []
    assert find_runs(run_root, "C1b", run_mode="prod") == []
    assert find_runs(run_root, "C3a") == []


def test_find_runs_passes_over_a_run_interrupted_before_its_end(run_root, tmp_path):
    """A simulation stopped by Ctrl-C or a kill leaves tables but no run.json: it is not a run to
    reconcile or observe (its next run replaces it); the finished run beside it is."""
    root = tmp_path / "root"
    shutil.copytree(run_root / "C1b", root / "C1b", ignore=shutil.ignore_patterns(REPORT_FOLDER))
    (finished,) = find_runs(root, "C1b")
    interrupted = finished.log_dir.parent.parent / "20230721_000000.20230721_120000" / "system_log_dir"
    shutil.copytree(finished.log_dir, interrupted)
    (interrupted / "run.json").unlink()
    assert [run.log_dir for run in find_runs(root, "C1b")] == [finished.log_dir]


def test_reconcile_command_fails_loudly_on_a_corrupted_run(run_root, tmp_path):
    """Flip the recorded predictions of one hour: targets, holdings and PnL no longer follow them."""
    root = tmp_path / "root"
    shutil.copytree(run_root / "C1b", root / "C1b", ignore=shutil.ignore_patterns(REPORT_FOLDER))
    (run,) = find_runs(root, "C1b")
    good = cli("reconcile", "--model", "C1b", "--root", str(root), "--no-notebook")
    assert good.returncode == 0, good.stderr
    assert "reconciled: pnl correlation" in good.stdout
    logs = LogDir(run.log_dir)
    targets = logs.read_table("target_positions")
    hour_start = run.start + pd.Timedelta(hours=6)
    hour = (targets["bar_end"] > hour_start) & (targets["bar_end"] <= hour_start + pd.Timedelta(hours=1))
    targets.loc[hour, "prediction"] *= -1
    logs.write_table("target_positions", targets, run.start + pd.Timedelta(minutes=5))  # replaces the part
    bad = cli("reconcile", "--model", "C1b", "--root", str(root))
    assert bad.returncode == 3, bad.stderr
    assert (
        "NOT reconciled" in bad.stdout
        and "1 of 1 runs diverge from research or from the exchange's statement" in bad.stderr
    )
    reports = sorted((run.window_dir / REPORT_FOLDER).iterdir())
    summary = json.loads((reports[-1] / "summary.json").read_text())
    assert summary["reconciled"] is False and summary["pnl_correlation"] < 0.999
    first = hour_start + pd.Timedelta(minutes=5)
    assert summary["first_divergence"]["bar_end"] == first.isoformat()
    assert summary["first_divergence"]["what"] == "target"
    assert "NOT reconciled" in (reports[-1] / REPORT_HTML).read_text()  # the notebook's verdict


def test_reconcile_command_bad_input(tmp_path):
    done = cli("reconcile", "--model", "C1b", "--root", str(tmp_path))
    assert done.returncode == 2 and done.stderr.startswith("error: no run of C1b")
    done = cli("reconcile", "--model", "C1b", "--root", str(tmp_path), "--start", "2023-07-21")
    assert done.returncode == 2 and "has no time zone" in done.stderr and "Traceback" not in done.stderr


def test_historical_pnl_equals_the_research_of_a_simulation(simulated_day, snapshot, tmp_path):
    """Batch in chunks gives the predictions streaming recorded; the research portfolio follows."""
    _, log_dir = simulated_day
    hist = sim_config(snapshot, tmp_path)
    result = historical_pnl(hist, chunk=pd.Timedelta(hours=5))  # chunks that do not divide the day
    predictions = LogDir(result.directory).read_table("predictions").set_index(["bar_end", "asset"])
    recorded = LogDir(log_dir).read_table("target_positions").set_index(["bar_end", "asset"])
    for column in ("prediction", "volatility", "price"):
        np.testing.assert_allclose(predictions[column], recorded[column].reindex(predictions.index), rtol=1e-9)
    stats = read_statistics(result.directory)
    prod = LogDir(log_dir).read_table("portfolio/statistics")
    assert np.corrcoef(stats["pnl"], prod["pnl"])[0, 1] >= 0.999
    assert (result.directory / "pnl_report.png").read_bytes().startswith(PNG)


def test_historical_pnl_command(snapshot, tmp_path):
    done = cli(
        "historical-pnl",
        "--model",
        "C3a",
        "--market-data",
        str(snapshot),
        "--start",
        "2023-07-20T12:00:00Z",
        "--end",
        "2023-07-23T00:00:00Z",
        "--root",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert "720/720 bars" in done.stderr  # progress
    out = tmp_path / "C3a" / "historical_pnl" / "20230720_120000.20230723_000000"
    assert f"log dir:     {out}" in done.stdout
    assert len(read_statistics(out)) == 720
    again = cli("historical-pnl", "--model", "C3a", "--market-data", str(snapshot), "--start",
                "2023-07-20T12:00:00Z", "--end", "2023-07-23T00:00:00Z", "--root", str(tmp_path))  # fmt: skip
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_reconcile_needs_market_data_covering_the_run(run_root, bundled_dir, tmp_path):
    short = tmp_path / "short.parquet"
    candles = load_source(
        f"csv:{bundled_dir}", ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "DOT", "MATIC"], pd.Timedelta(0)
    )
    write_snapshot(select_window(candles, pd.Timestamp("2023-07-21T00:00Z"), pd.Timestamp("2023-07-21T12:00Z")), short)
    done = cli("reconcile", "--model", "C1b", "--root", str(run_root), "--market-data", str(short))
    assert done.returncode == 2, done.stderr
    assert "does not cover the run" in done.stderr and "Traceback" not in done.stderr


def test_a_plot_of_hundreds_of_assets_names_those_furthest_apart():
    """300 assets: the legend names the 8 whose holdings drift furthest (the rest are one band)."""
    rng = np.random.default_rng(3)
    gaps = pd.DataFrame(rng.normal(0, 1, (50, 300)), columns=[f"S{i:03d}" for i in range(300)])
    gaps.loc[10, "S123"] = -1_000.0  # the largest gap, negative
    named = plots.furthest_apart(gaps)
    assert len(named) == plots.MAX_NAMED_ASSETS and named[0] == "S123"
    side_by_side = gaps.rename_axis(index="bar_end", columns="asset").stack().rename("holdings_prod").reset_index()
    side_by_side["bar_end"] = pd.Timestamp("2023-07-21", tz="UTC") + pd.to_timedelta(side_by_side["bar_end"] * 5, "min")
    side_by_side["holdings_research"] = 0.0
    assert plots.holdings_difference(side_by_side, "300 assets").startswith(b"\x89PNG")


def test_a_run_over_a_partitioned_snapshot_is_reconciled_from_its_months_alone(run_root, snapshot, tmp_path):
    months = write_snapshot_months([read_snapshot(snapshot)], tmp_path / "months.parquet")
    junk = months / "month=2023-09" / "part.parquet"  # a month the run does not span: never opened
    junk.parent.mkdir()
    junk.write_text("not parquet")
    (run,) = find_runs(run_root, "C1b")
    report = observe(run.log_dir, market_data=str(months), now=pd.Timestamp("2026-01-02T05:00:00Z"), notebook=False)
    assert json.loads((report.directory / "summary.json").read_text())["reconciled"] is True
