"""The investors' notebook, historical_pnl_for_investors: its pair in sync, and executed in a real kernel on a
historical simulation without any live session (the Dagster job that publishes it: defs/test_publishing.py)."""

from __future__ import annotations

import jupytext
import pytest

from prod_system.analysis.investor import notebook_parameters
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
    monkeypatch.chdir(history_only.parent)  # a relative root, as PROD_SYSTEM_ROOT may be, found from the kernel
    done = execute(NAME, tmp_path, notebook_parameters(history_only.name, "C3a", "prod"))
    page = done.html.read_text()
    assert "The historical simulation" in page and "288" in page  # its bars
    for window in ("since_2019", "since_2022"):
        assert f"{window}: cumulative PnL since" in page
    assert page.count("<img ") == 2  # the two historical plots
    assert "(market data from 2023-07-21)" in page  # the later start of the data is noted in the title
    for window in ("last_24hours", "last_5minutes"):
        assert f"No data for {window}</strong>: no prod session of C3a under" in page
    assert "Traceback" not in page and "def show" not in page  # inputs hidden


def test_an_unknown_window_fails_with_one_line_naming_the_parameter(history_only, tmp_path):
    with pytest.raises(NotebookError) as raised:
        execute(NAME, tmp_path, {"model": "C3a", "root": str(history_only), "windows": ["since_1999"]})
    message = str(raised.value)
    assert "\n" not in message and "ConfigError: windows: unknown investor window 'since_1999'" in message
    assert (tmp_path / f"{NAME}.ipynb").is_file() and not (tmp_path / f"{NAME}.html").exists()
