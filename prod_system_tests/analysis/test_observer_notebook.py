"""The observer's notebook: paired with its .py, run by `prod-system reconcile` (code shown on request, no
secret in it, a failing cell one error line) and re-run by hand from a model and a root alone."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import jupytext
import nbformat
import pytest

from prod_system.analysis import notebooks
from prod_system.analysis import observer_views as views
from prod_system.analysis.observer import NOTEBOOK, REPORT_FOLDER, REPORT_HTML, find_runs
from prod_system_tests.kit.cli import cli
from prod_system_tests.kit.reports import NOTEBOOK_SECTIONS, sections

SECRET = "MARKER-secret-4f1c9a"  # an API secret in the environment of the reconciling process


@pytest.fixture
def root(tmp_path, simulated_day) -> Path:
    """A root holding a copy of the simulated day's window folder, without its reports."""
    config, log_dir = simulated_day
    window = log_dir.parent
    target = tmp_path / "root" / window.relative_to(config.log_root)
    shutil.copytree(window, target, ignore=shutil.ignore_patterns(REPORT_FOLDER))
    return tmp_path / "root"


def _reports(root: Path) -> list[Path]:
    (run,) = find_runs(root, "C1b")
    return sorted((run.window_dir / REPORT_FOLDER).iterdir())


def test_the_notebook_and_its_py_are_in_sync():
    """The .py (what a review reads) and the .ipynb (what papermill runs) hold the same cells."""
    ipynb = nbformat.read(notebooks.template(NOTEBOOK), as_version=4)
    py = jupytext.read(notebooks.NOTEBOOKS / f"{NOTEBOOK}.py")
    assert [(c.cell_type, c.source) for c in py.cells] == [(c.cell_type, c.source) for c in ipynb.cells]
    assert ipynb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert ipynb.metadata["kernelspec"]["name"] == "python3"
    assert [c for c in ipynb.cells if "parameters" in c.metadata.get("tags", [])]
    assert not any(c.get("outputs") for c in ipynb.cells if c.cell_type == "code")  # committed without outputs


def test_reconcile_shows_the_code_on_request_and_writes_no_secret(root):
    done = cli(
        "reconcile", "--model", "C1b", "--root", str(root), "--show-input",
        env={"BINANCE_API_SECRET": SECRET, "BINANCE_API_KEY": SECRET},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (report,) = _reports(root)
    page = (report / REPORT_HTML).read_text()
    assert 'class="jp-CodeMirrorEditor' in page and "views.open_run(" in re.sub("<[^>]+>", "", page)  # the code, shown
    assert sections(page) == NOTEBOOK_SECTIONS
    for written in report.iterdir():
        if written.suffix in (".html", ".ipynb", ".json"):
            assert SECRET not in written.read_text(), written.name
    assert SECRET not in done.stdout + done.stderr


def test_a_failing_cell_fails_reconcile_in_one_line_and_keeps_the_partial_notebook(root):
    """A log dir that lost the table of the DAG's outputs: the reconciliation itself does not need it,
    the notebook's DAG section does."""
    (run,) = find_runs(root, "C1b")
    shutil.rmtree(run.log_dir / "dag" / "node_outputs")
    done = cli("reconcile", "--model", "C1b", "--root", str(root))
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    assert re.search(rf"{NOTEBOOK}\.ipynb failed at cell \[\d+\]: FileNotFoundError: .*node_outputs", errors[0])
    (report,) = _reports(root)
    assert (report / f"{NOTEBOOK}.ipynb").exists() and not (report / REPORT_HTML).exists()
    assert (report / "summary.json").exists()  # the reconciliation's figures were written before


def test_the_notebook_runs_by_hand_from_a_model_and_a_root(root, tmp_path):
    """A quant's run: no report folder, only the model, the root and the run mode: the notebook finds the
    run and reconciles it (writing a report folder of tables beside it, no second notebook)."""
    executed = notebooks.execute(
        NOTEBOOK, tmp_path / "by_hand", {"model": "C1b", "root": str(root), "run_mode": "simulation"}
    )
    page = executed.html.read_text()
    assert sections(page) == NOTEBOOK_SECTIONS
    assert "reconciled: pnl correlation" in page
    (report,) = _reports(root)
    assert (report / "summary.json").exists() and not (report / REPORT_HTML).exists()


def test_a_moved_report_folder_reads_its_new_place(simulated_day, tmp_path, monkeypatch):
    """The executed notebook names its report folder as "." (the kernel runs there): a window folder copied
    elsewhere re-runs on the copy's tables and log dir, not the original's."""
    _, log_dir = simulated_day
    moved = tmp_path / "moved"
    shutil.copytree(log_dir.parent, moved)
    (report,) = sorted((moved / REPORT_FOLDER).iterdir())
    injected = [c for c in nbformat.read(report / f"{NOTEBOOK}.ipynb", as_version=4).cells if "injected" in str(c)]
    assert 'report_dir = "."' in injected[0].source
    monkeypatch.chdir(report)
    run = views.open_run(".")
    assert run.directory == report.resolve() and run.logs.path == (moved / views.LOG_DIR).resolve()


def test_hide_input_turns_off_a_runs_show_input():
    """`--show-input/--hide-input`, not given: None, so the run's observer.show_input decides."""
    from prod_system.cli.analysis import reconcile

    def given(*flags):
        return reconcile.make_context("reconcile", ["--model", "C1b", "--root", ".", *flags]).params["show_input"]

    assert (given(), given("--show-input"), given("--hide-input")) == (None, True, False)


def test_the_reports_tables_have_no_index_and_the_account_its_sources(simulated_day):
    _, log_dir = simulated_day
    (report,) = sorted((log_dir.parent / REPORT_FOLDER).iterdir())
    page = (report / REPORT_HTML).read_text()
    assert page.count("<table") >= 10 and "<th>0</th>" not in page  # no row numbers
    assert re.search(r"<th>source</th>\s*<th>as of</th>\s*<th>figure</th>", page)  # each balance's source, time
    assert re.search(r"<td>portfolio</td>\s*<td>last bar, ending 2023-07-22 00:00 UTC</td>", page)
