"""The investors' notebook, historical_pnl_for_investors: its pair in sync, and executed in a real kernel on a
historical simulation without any live session (the Dagster job that publishes it: defs/test_publishing.py)."""

from __future__ import annotations

import re

import jupytext
import pytest

from prod_system.analysis.investor import historical_runs, investor_window, notebook_directory, notebook_parameters
from prod_system.analysis.notebooks import NOTEBOOKS, execute
from prod_system.errors import NotebookError
from prod_system.runs.historical import historical_pnl
from prod_system_tests.kit.data import sim_config

NAME = "historical_pnl_for_investors"


def test_the_notebook_and_its_script_hold_the_same_cells():
    """The .ipynb papermill runs and the .py a review reads (jupytext --sync keeps them together)."""
    notebook, script = (jupytext.read(NOTEBOOKS / f"{NAME}.{ext}") for ext in ("ipynb", "py"))
    assert [(c.cell_type, c.source) for c in notebook.cells] == [(c.cell_type, c.source) for c in script.cells]
    assert [c.metadata.get("tags") for c in notebook.cells].count(["parameters"]) == 1
    assert all(not c.get("outputs") for c in notebook.cells)  # a template: no outputs committed
    assert (
        notebook.metadata["kernelspec"]["name"] == "python3" and notebook.metadata["language_info"]["name"] == "python"
    )


@pytest.fixture(scope="module")
def history_only(tmp_path_factory, snapshot):
    """A log root with a historical simulation of C3a and no live session."""
    root = tmp_path_factory.mktemp("investor")
    historical_pnl(sim_config(snapshot, root, model="C3a", start="2023-07-21T00:00:00Z", end="2023-07-22T00:00:00Z"))
    return root


def test_a_window_without_data_says_so_and_the_notebook_goes_on(history_only, tmp_path, monkeypatch):
    """Investors read the HTML: the figures and titles of the windows with data, "not available yet" for the
    others, no path of this machine and no operator's message."""
    monkeypatch.chdir(history_only.parent)  # a relative root, as PROD_SYSTEM_ROOT may be, found from the kernel
    done = execute(NAME, tmp_path, notebook_parameters(history_only.name, "C3a", "prod"))
    page = done.html.read_text()
    assert "<td>bars</td>\n<td>288</td>" in page  # the historical simulation's figures, a table without index
    for window in ("since_2019", "since_2022"):
        title = investor_window(history_only, "C3a", window, "prod").title
        assert re.search(rf'<h3 id="[^"]*">{re.escape(title)}<', page)  # the window's own title, as a heading
        assert "(market data from 2023-07-21)" in title  # the later start of the data is noted in the title
    assert page.count("<img ") == 2 and page.count('alt="C3a: cumulative PnL since') == 2  # with alternative text
    for window in ("last_24hours", "last_5minutes"):
        assert f"<em>{window}: not available yet.</em>" in page
    text = re.sub(r"<[^>]+>", " ", re.sub(r"(?s)<(style|script)\b.*?</\1>", "", page))  # what a reader sees
    assert history_only.name not in page  # no path (the root's folder name, in any part of a path)
    for operator in ("materialize", "log root", "directory", "No data"):
        assert operator not in text, operator
    assert "Traceback" not in page and "window_section(" not in page  # inputs hidden


def test_an_unknown_window_fails_with_one_line_naming_the_parameter(history_only, tmp_path):
    with pytest.raises(NotebookError) as raised:
        execute(NAME, tmp_path, {"model": "C3a", "root": str(history_only), "windows": ["since_1999"]})
    message = str(raised.value)
    assert "\n" not in message and "ConfigError: windows: unknown investor window 'since_1999'" in message
    assert (tmp_path / f"{NAME}.ipynb").is_file() and not (tmp_path / f"{NAME}.html").exists()


def test_the_notebook_folder_is_absolute_for_the_operators_metadata(history_only, monkeypatch):
    monkeypatch.chdir(history_only.parent)
    directory = notebook_directory(history_only.name, "C3a", "20230722_000000")
    assert directory.is_absolute() and directory.parents[1] == historical_runs(history_only, "C3a")[-1]
