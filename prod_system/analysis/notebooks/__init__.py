"""Executed notebooks: the observer's and the investors' analyses as Jupyter notebooks run with a run's
parameters (papermill) and published as HTML (nbconvert).

The notebooks live here as ``.ipynb`` paired by jupytext with a ``.py`` in the percent format (what a
review reads; ``jupytext --sync`` keeps the two together). Their cells call the project's functions:
no logic lives only in a notebook. They run in a kernel of this Python (the venv's), whatever kernel
specs the machine has.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from prod_system.common.files import write_atomically
from prod_system.errors import NotebookError

NOTEBOOKS = Path(__file__).parent
# the kernel logs errors only: its notice that it talks to papermill over TCP on loopback is not a fault (it
# was the one warning a `dagster dev` showed after a reconciliation)
KERNEL_ARGV = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--IPKernelApp.log_level=ERROR"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
HTML_TEMPLATE = "offline"  # templates/offline: JupyterLab's look, no script fetched from a CDN


@dataclass(frozen=True)
class ExecutedNotebook:
    notebook: Path  # the executed .ipynb
    html: Path  # its HTML
    seconds: float  # execution and conversion, kernel start included


def template(name: str) -> Path:
    """The notebook ``name`` (without .ipynb) of this folder."""
    path = NOTEBOOKS / f"{name}.ipynb"
    if not path.is_file():
        raise NotebookError(f"no notebook {name}.ipynb in {NOTEBOOKS}")
    return path


def _kernel_manager_class():
    """A kernel manager that starts ipykernel on this Python: the 'python3' kernel spec on a machine may
    name another interpreter (``python`` on the PATH, a user's own spec), without this project."""
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager

    class ThisPythonKernelManager(AsyncKernelManager):
        @property
        def kernel_spec(self) -> KernelSpec:
            return KernelSpec(argv=KERNEL_ARGV, display_name="prod_system", language="python")

    return ThisPythonKernelManager


def execute(
    name: str,
    directory: Path,
    parameters: dict,
    show_input: bool = False,
    timeout_seconds: float = 600,
) -> ExecutedNotebook:
    """Execute notebook ``name`` with ``parameters`` into ``directory/{name}.ipynb`` and convert it to
    ``directory/{name}.html`` (input cells hidden unless ``show_input``).

    A failing cell raises ``NotebookError`` with the cell's error in one line; the partially executed
    notebook stays at ``directory/{name}.ipynb`` and no HTML is written."""
    import papermill
    from nbconvert import HTMLExporter

    began = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{name}.ipynb"
    try:
        papermill.execute_notebook(
            str(template(name)),
            str(out),
            parameters=parameters,
            kernel_name="python3",
            kernel_manager_class=_kernel_manager_class(),
            progress_bar=False,
            cwd=str(directory),
            execution_timeout=timeout_seconds,
        )
    except papermill.PapermillExecutionError as error:
        message = ANSI.sub("", str(error.evalue)).strip().splitlines()
        first = message[0] if message else ""
        raise NotebookError(
            f"{name}.ipynb failed at cell [{error.exec_count}]: {error.ename}: {first} (partial notebook: {out})"
        ) from None
    exporter = HTMLExporter(
        template_name=HTML_TEMPLATE,
        extra_template_basedirs=[str(NOTEBOOKS / "templates")],
        exclude_input=not show_input,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    body, _ = exporter.from_filename(str(out))
    html = directory / f"{name}.html"
    write_atomically(html, lambda tmp: tmp.write_text(body, encoding="utf-8"))
    return ExecutedNotebook(out, html, round(time.perf_counter() - began, 3))
