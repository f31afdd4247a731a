"""Executed notebooks: the observer's and the investors' analyses as Jupyter notebooks run with a run's
parameters (papermill) and published as HTML (nbconvert).

The notebooks live here as ``.ipynb`` paired by jupytext with a ``.py`` in the percent format (what a
review reads; ``jupytext --sync`` keeps the two together). Their cells call the project's functions:
no logic lives only in a notebook. They run in a kernel of this Python (the venv's), whatever kernel
specs the machine has.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from prod_system.alerts import SECRET_NAMES
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


def kernel_environment(hidden: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The kernel's environment: this process's without its secrets, the variables named like one
    (``alerts.SECRET_NAMES``: API keys, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, alert URLs) and those
    named in ``hidden`` (a run's broker.api_key_env, broker.api_secret_env, alerts.urls_env). A notebook
    reads log dirs, it needs none of them, and a cell printing ``os.environ`` must not publish them."""
    environ = os.environ if environ is None else environ
    hidden = set(hidden)
    return {name: value for name, value in environ.items() if name not in hidden and not SECRET_NAMES.search(name)}


def _kernel_manager_class(env: dict[str, str]):
    """A kernel manager that starts ipykernel on this Python (the 'python3' kernel spec on a machine may
    name another interpreter, ``python`` on the PATH or a user's own spec, without this project) with
    the environment ``env`` instead of this process's."""
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager

    class ThisPythonKernelManager(AsyncKernelManager):
        @property
        def kernel_spec(self) -> KernelSpec:
            return KernelSpec(argv=KERNEL_ARGV, display_name="prod_system", language="python")

        async def start_kernel(self, **kw):
            return await super().start_kernel(**{**kw, "env": dict(env)})

    return ThisPythonKernelManager


def execute(
    name: str,
    directory: Path,
    parameters: dict,
    show_input: bool = False,
    timeout_seconds: float = 600,
    hidden_env: Iterable[str] = (),
    source: Path | None = None,
) -> ExecutedNotebook:
    """Execute notebook ``name`` (this folder's, or the notebook file ``source``) with ``parameters``
    into ``directory/{name}.ipynb`` and convert it to ``directory/{name}.html`` (input cells hidden
    unless ``show_input``). The kernel runs in ``directory``, with this process's environment without
    its secrets (``kernel_environment(hidden_env)``).

    A failing cell, a cell running past ``timeout_seconds``, a kernel that dies or a parameter papermill
    rejects raises ``NotebookError`` in one line naming the notebook (and the cell when known); the
    partially executed notebook stays at ``directory/{name}.ipynb`` and no HTML is written."""
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbconvert import HTMLExporter

    began = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{name}.ipynb"
    try:
        papermill.execute_notebook(
            str(template(name) if source is None else source),
            str(out),
            parameters=parameters,
            kernel_name="python3",
            kernel_manager_class=_kernel_manager_class(kernel_environment(hidden_env)),
            progress_bar=False,
            cwd=str(directory),
            execution_timeout=timeout_seconds,
        )
    except papermill.PapermillExecutionError as error:
        raise NotebookError(
            f"{name}.ipynb failed at cell [{error.exec_count}]: {error.ename}: {_first_line(error.evalue)} "
            f"(partial notebook: {out})"
        ) from None
    except CellTimeoutError:
        raise NotebookError(
            f"{name}.ipynb failed at cell [{_running_cell(out)}]: it ran longer than {timeout_seconds:g} s "
            f"(partial notebook: {out})"
        ) from None
    except (DeadKernelError, papermill.PapermillException) as error:
        raise NotebookError(
            f"{name}.ipynb failed: {type(error).__name__}: {_first_line(error)} (partial notebook: {out})"
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


def _first_line(text) -> str:
    lines = ANSI.sub("", str(text)).strip().splitlines()
    return lines[0] if lines else ""


def _running_cell(out: Path) -> str:
    """The execution count of the cell that was running when the execution stopped (the last cell
    papermill started in the partial notebook), '?' when unknown."""
    import nbformat

    try:
        cells = nbformat.read(out, as_version=4).cells
    except (OSError, ValueError):
        return "?"
    started = [c for c in cells if c.get("metadata", {}).get("papermill", {}).get("start_time")]
    return str(started[-1].get("execution_count") or "?") if started else "?"
