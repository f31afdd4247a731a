"""analysis/notebooks.execute on a tiny notebook of the test's own, in a real kernel: what the kernel
sees of the environment, and a cell that runs too long ending in one NotebookError line."""

from __future__ import annotations

import nbformat
import pytest

from prod_system.analysis.notebooks import execute
from prod_system.errors import NotebookError

MARKER = "MARKER-kernel-secret-7d2e"


def _template(folder) -> str:
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("sleep = 0", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("import os, time\nprint(sorted(os.environ.items()))"),
            nbformat.v4.new_code_cell("time.sleep(sleep)"),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    path = folder / "tiny.ipynb"
    nbformat.write(notebook, path)
    return path


def test_the_kernel_sees_no_secret_and_a_cell_past_the_timeout_fails_in_one_line(tmp_path, monkeypatch):
    """One kernel for both: the environment is printed by the cell before the one that sleeps (cell [4]:
    papermill injects the parameters as [2])."""
    monkeypatch.setenv("BINANCE_API_SECRET", MARKER)  # named like a secret
    monkeypatch.setenv("AWS_SESSION_TOKEN", MARKER)
    monkeypatch.setenv("VENUE_SIGNING", MARKER + "-named")  # a run's api_secret_env, named like nothing
    monkeypatch.setenv("PROD_SYSTEM_PLAIN", "visible-value")
    out = tmp_path / "out"
    with pytest.raises(NotebookError) as raised:
        execute("tiny", out, {"sleep": 30}, timeout_seconds=2, hidden_env=["VENUE_SIGNING"], source=_template(tmp_path))
    message = str(raised.value)
    assert "\n" not in message and "tiny.ipynb failed at cell [4]: it ran longer than 2 s" in message
    partial = (out / "tiny.ipynb").read_text()
    assert not (out / "tiny.html").exists()
    assert "visible-value" in partial  # the environment was printed, without the secrets
    assert MARKER not in partial
