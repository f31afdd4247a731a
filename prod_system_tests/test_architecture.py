"""The architecture, read from the source (``ast``, nothing of the project imported for the rules): the
layers of ``prod_system`` and what each may import, no import cycle, imports inside functions only where
listed, Dagster only in its layer, one error hierarchy. A broken rule is reported with its file, line and
import (docs/architecture.md describes the layers)."""

from __future__ import annotations

import ast
import builtins
import itertools
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "prod_system"

# The layers, bottom to top: a module imports from its own layer or the layers below it, never above.
LAYERS = (
    ("errors", "every error a user meets: ProdSystemError and its kinds"),
    ("common", "clock, time helpers, files, progress, failpoints"),
    ("naming", "the names of a model's runs: log-dir folder, Dagster groups, jobs, assets, tags"),
    ("config", "the one config tree, RunMode"),
    ("log_dir", "the log dir: its layout, tables and schemas"),
    ("alerts", "alerts to a person (apprise), rate-limited, scrubbed of secrets"),
    ("data", "market data: sources, snapshots, the market database, the data guard and checks"),
    ("models", "the model DAG, its features, C1b and C3a"),
    ("trading", "sizing, orders, the portfolio, the brokers"),
    ("analysis", "research, reconciliation, the observer, reports and plots"),
    ("runs", "the stages of a bar, simulation, live sessions, historical PnL, ingestion"),
    ("exchange", "the local Binance-compatible exchange (tests, demos)"),
    ("defs", "the Dagster layer: assets, resources, sensors, schedules wiring the runs' stages"),
    ("definitions", "the Dagster code location: merges the defs' Definitions"),
    ("cli", "the prod-system command"),
)
RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}
# The local exchange stands apart: it reads only these layers, and only the CLI (exchange-sim) imports it.
EXCHANGE_READS = {"errors", "common", "config", "data"}
EXCHANGE_READ_BY = {"cli"}

# Imports of the project inside functions, (file, module imported): why each is not at the top.
CLI_LAZY = "the CLI imports a command's engine when the command runs, so that `prod-system --help` stays fast"
LAZY_PROJECT_IMPORTS = {
    ("prod_system/cli/analysis.py", "prod_system.analysis.observer"): CLI_LAZY,
    ("prod_system/cli/exchange.py", "prod_system.exchange.engine"): CLI_LAZY,
    ("prod_system/cli/exchange.py", "prod_system.exchange.faults"): CLI_LAZY,
    ("prod_system/cli/exchange.py", "prod_system.exchange.server"): CLI_LAZY,
    ("prod_system/cli/data.py", "prod_system.runs.download"): CLI_LAZY,
    ("prod_system/cli/data.py", "prod_system.trading.brokers.ccxt_client"): CLI_LAZY + " (ccxt)",
    ("prod_system/cli/live.py", "prod_system.runs.live"): CLI_LAZY,
    ("prod_system/cli/live.py", "prod_system.runs.ingestion"): CLI_LAZY,
    ("prod_system/cli/live.py", "prod_system.trading.brokers.ccxt_client"): CLI_LAZY + " (ccxt)",
    ("prod_system/cli/live.py", "prod_system.cli.launch"): CLI_LAZY + " (Dagster, for a live bar's event)",
    ("prod_system/cli/simulate.py", "prod_system.runs.simulate"): CLI_LAZY,
    ("prod_system/cli/simulate.py", "prod_system.cli.launch"): CLI_LAZY + " (Dagster)",
    ("prod_system/cli/simulate.py", "prod_system.runs.historical"): CLI_LAZY,
    ("prod_system/cli/launch.py", "prod_system.definitions"): "the code location, loaded to run a job in process",
}
# Third-party packages imported inside functions, (file, top-level package): a load-time choice.
PLOTTING = "matplotlib is imported where a figure is drawn, not when Dagster loads the code location"
CCXT = "ccxt is imported where the exchange is called, not when Dagster loads the code location"
NOTEBOOKS = "papermill, nbconvert and the kernel client (~1 s) are imported by the first notebook executed"
LAZY_THIRD_PARTY = {
    ("prod_system/analysis/plots.py", "matplotlib"): PLOTTING,
    ("prod_system/analysis/plots.py", "PIL"): "Pillow only to write a figure's thumbnail",
    ("prod_system/analysis/notebooks/__init__.py", "papermill"): NOTEBOOKS,
    ("prod_system/analysis/notebooks/__init__.py", "nbconvert"): NOTEBOOKS,
    ("prod_system/analysis/notebooks/__init__.py", "jupyter_client"): NOTEBOOKS,
    ("prod_system/analysis/notebooks/__init__.py", "nbclient"): NOTEBOOKS + " (its errors, caught around the run)",
    ("prod_system/analysis/notebooks/__init__.py", "nbformat"): NOTEBOOKS + " (to name a timed-out cell)",
    ("prod_system/alerts.py", "apprise"): "apprise (~0.2 s) is imported by the first alert sent, not by every process",
    ("prod_system/runs/ingestion.py", "ccxt"): CCXT,
    ("prod_system/runs/download.py", "ccxt"): CCXT + " (its error classes, when a request fails)",
    ("prod_system/cli/instruments.py", "ccxt"): CCXT + " (its error classes, when fetching)",
    ("prod_system/trading/brokers/ccxt_client.py", "ccxt"): CCXT,
    ("prod_system/trading/brokers/exchange.py", "ccxt"): CCXT + " (its error classes, when one is raised)",
}

# Dagster lives in defs/ and definitions.py; outside them, only these files import it.
DAGSTER_LAYER = ("prod_system/defs/", "prod_system/definitions.py")
DAGSTER_USERS = {"defs", "definitions", "cli"}  # the layers whose modules may load Dagster when imported
# The notebooks' paired scripts (jupytext percent format): run cell by cell in a kernel, never imported; their
# imports obey the layers like any module's, but importing one would execute the notebook.
NOTEBOOK_SCRIPTS = "prod_system/analysis/notebooks/"
DAGSTER_OUTSIDE_DEFS = {
    "prod_system/cli/launch.py": "the CLI's Dagster launcher: a simulation job run in process, a live bar's event",
}

# Exception classes the project defines outside errors.py or not under ProdSystemError: why.
NOT_USER_ERRORS = {
    ("prod_system/exchange/engine.py", "BinanceError"): "the local exchange's wire error: its code and message "
    "become Binance's JSON error body; the system meets it as ccxt's errors, as with the real exchange",
}


@dataclass(frozen=True)
class Import:
    """One import statement of a project file and the modules it imports."""

    path: str  # relative to the repository
    line: int
    text: str
    targets: tuple[str, ...]
    where: str  # "module", "type_checking" (under ``if TYPE_CHECKING:``) or "function"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: `{self.text}`"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _files() -> dict[str, Path]:
    """Every module of prod_system by its dotted name."""
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> str | None:
    """The layer of a project module (None for the package itself, or a module outside prod_system)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "prod_system" and len(parts) > 1 else None


def _targets(node: ast.Import | ast.ImportFrom, path: Path) -> tuple[str, ...]:
    """The modules an import statement imports: ``from X import Y`` imports X.Y when that is a module."""
    if isinstance(node, ast.Import):
        return tuple(alias.name for alias in node.names)
    base = node.module or ""
    if node.level:  # relative: from the module's package upwards
        package = _module_name(path.parent / "__init__.py").split(".")
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    found: list[str] = []
    for alias in node.names:
        target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in _files() else base
        if target not in found:
            found.append(target)
    return tuple(found)


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_of(path: Path) -> list[Import]:
    """The import statements of one file, each with where it stands."""
    source, relative = path.read_text(), path.relative_to(REPO).as_posix()
    found: list[Import] = []
    pending: list[tuple[ast.AST, str]] = [(ast.parse(source, relative), "module")]
    while pending:
        node, where = pending.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                text = " ".join(ast.get_source_segment(source, child).split())
                found.append(Import(relative, child.lineno, text, _targets(child, path), where))
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                pending.append((child, "function"))
            elif where == "module" and _is_type_checking(child):
                pending.append((child, "type_checking"))
            else:
                pending.append((child, where))
    return sorted(found, key=lambda imp: imp.line)


@cache
def _imports() -> tuple[Import, ...]:
    """Every import statement of prod_system."""
    return tuple(imp for path in _files().values() for imp in _imports_of(path))


def _fail_with(broken: list[str], rule: str) -> None:
    """Fail with the rule and each breach on a line of its own (file:line: `import`: why)."""
    if broken:
        pytest.fail(f"{rule}:\n  " + "\n  ".join(broken), pytrace=False)


def test_every_module_is_in_a_layer():
    outside = [
        f"{path.relative_to(REPO)}: {_layer(m)}" for m, path in _files().items() if _layer(m) not in (None, *RANK)
    ]
    _fail_with(outside, "modules in no layer (add their layer to LAYERS, in its place)")


def test_modules_import_only_from_their_layer_or_below():
    broken = []
    for imp in _imports():
        layer = _layer(_module_name(REPO / imp.path))
        for target in imp.targets:
            other = _layer(target)
            if other == layer or other not in RANK or layer not in RANK:
                continue
            if RANK[other] > RANK[layer]:
                broken.append(f"{imp}: {layer} imports {other}, a layer above it")
            elif other == "exchange" and layer not in EXCHANGE_READ_BY:
                readers = ", ".join(sorted(EXCHANGE_READ_BY))
                broken.append(f"{imp}: {layer} imports the local exchange (only {readers} may)")
            elif layer == "exchange" and other not in EXCHANGE_READS:
                reads = ", ".join(sorted(EXCHANGE_READS))
                broken.append(f"{imp}: the local exchange imports {other} (it reads {reads} only)")
    _fail_with(broken, "imports against the layers (bottom to top: " + ", ".join(RANK) + ")")


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), those of more than one module or of a module
    importing itself, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def enter(node: str) -> tuple[str, Iterator[str]]:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        return node, iter(sorted(graph[node]))

    for root in sorted(graph):
        if root in index:
            continue
        work = [enter(root)]
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    work.append(enter(child))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = [stack.pop()]
                while component[-1] != node:
                    component.append(stack.pop())
                on_stack.difference_update(component)
                if len(component) > 1 or node in graph[node]:
                    components.append(sorted(component))
    return components


def _cycle_through(start: str, members: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest import path from ``start`` back to itself within ``members`` (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def test_no_import_cycle():
    """Between modules, by their imports at load time (not those inside functions or under TYPE_CHECKING)."""
    graph: dict[str, set[str]] = {module: set() for module in _files()}
    statement: dict[tuple[str, str], Import] = {}
    for imp in _imports():
        source = _module_name(REPO / imp.path)
        for target in imp.targets if imp.where == "module" else ():
            if target in graph:
                graph[source].add(target)
                statement.setdefault((source, target), imp)
    broken = []
    for component in _strongly_connected(graph):
        path = _cycle_through(component[0], set(component), graph)
        steps = [f"{statement[step]} ({step[0]} -> {step[1]})" for step in itertools.pairwise(path)]
        broken.append(" -> ".join(path) + "\n    " + "\n    ".join(steps))
    _fail_with(broken, "import cycles (break each: move what both sides need into a module below them)")


def test_imports_inside_functions_only_where_listed():
    broken, used = [], set()
    for imp in _imports():
        for target in imp.targets if imp.where == "function" else ():
            if _layer(target) is not None:
                key, allowlist = (imp.path, target), "LAZY_PROJECT_IMPORTS"
            else:
                key, allowlist = (imp.path, target.split(".")[0]), "LAZY_THIRD_PARTY"
            if key in LAZY_PROJECT_IMPORTS or key in LAZY_THIRD_PARTY:
                used.add(key)
            else:
                broken.append(f"{imp}: {key[1]} inside a function (import it at the top, or list it in {allowlist})")
    stale = sorted((set(LAZY_PROJECT_IMPORTS) | set(LAZY_THIRD_PARTY)) - used)
    broken += [f"{path}: imports {what} inside no function any more: take it off the allowlist" for path, what in stale]
    _fail_with(broken, "imports inside functions")


def test_only_the_dagster_layer_imports_dagster():
    broken = []
    for imp in _imports():
        if imp.path.startswith(DAGSTER_LAYER) or imp.path in DAGSTER_OUTSIDE_DEFS:
            continue
        for top in {target.split(".")[0] for target in imp.targets}:
            if top == "dagster" or top.startswith("dagster_"):
                broken.append(f"{imp}: {top} outside defs/ and definitions.py (see DAGSTER_OUTSIDE_DEFS)")
    _fail_with(broken, "Dagster imported outside its layer")


def _is_notebook_script(path: Path) -> bool:
    return path.relative_to(REPO).as_posix().startswith(NOTEBOOK_SCRIPTS) and path.name != "__init__.py"


def test_the_core_loads_without_dagster():
    """Every module outside defs/, definitions.py and cli/, imported in a fresh interpreter: no Dagster."""
    modules = [
        m
        for m, path in _files().items()
        if _layer(m) not in DAGSTER_USERS and path.name != "__main__.py" and not _is_notebook_script(path)
    ]
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules)
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster' or m.startswith('dagster_'))[:5])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", f"importing the core loads Dagster: {done.stdout}"


def test_loading_the_definitions_imports_no_plotting_or_exchange_client():
    """matplotlib and ccxt are imported where they are used, not when Dagster loads the code location
    (together ~0.85 s of every load: the webserver, the daemon, each run's process)."""
    code = (
        "import prod_system.definitions, sys; "
        "print(sorted(m for m in ('matplotlib', 'ccxt', 'aiohttp') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


BUILTIN_ERRORS = {
    name for name, cls in vars(builtins).items() if isinstance(cls, type) and issubclass(cls, BaseException)
}


def _base_names(node: ast.ClassDef) -> list[str]:
    """The names of a class's bases (``ccxt.NetworkError`` -> ``NetworkError``)."""
    names = []
    for base in node.bases:
        while isinstance(base, ast.Subscript):
            base = base.value
        if isinstance(base, ast.Attribute):
            names.append(base.attr)
        elif isinstance(base, ast.Name):
            names.append(base.id)
    return names


def test_every_error_is_a_prod_system_error_defined_in_errors_py():
    classes = []  # (file, class) of every class of the project
    for path in _files().values():
        relative = path.relative_to(REPO).as_posix()
        classes += [
            (relative, node) for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ClassDef)
        ]
    # an error: a base is a builtin exception, a library's (named ...Error or ...Exception) or the project's
    bases_of: dict[str, list[str]] = {}
    grew = True
    while grew:
        grew = False
        for _, node in classes:
            bases = _base_names(node)
            is_error = any(b in BUILTIN_ERRORS or b.endswith(("Error", "Exception")) or b in bases_of for b in bases)
            if is_error and node.name not in bases_of:
                bases_of[node.name], grew = bases, True

    def under_root(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name == "ProdSystemError":
            return True
        return name in bases_of and name not in seen and any(under_root(b, seen | {name}) for b in bases_of[name])

    broken = []
    for path, node in classes:
        if node.name not in bases_of or (path, node.name) in NOT_USER_ERRORS:
            continue
        if path != "prod_system/errors.py":
            broken.append(f"{path}:{node.lineno}: class {node.name}: an error defined outside prod_system/errors.py")
        elif not under_root(node.name):
            broken.append(f"{path}:{node.lineno}: class {node.name}: does not derive from ProdSystemError")
    _fail_with(broken, "errors outside the one hierarchy (or list them in NOT_USER_ERRORS, with why)")


def test_the_docs_name_files_that_exist():
    """A module or folder of prod_system named in the README or docs/ (`prod_system/...py` or `.../`) exists:
    a moved module is renamed in the docs too."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for path in re.findall(r"`(prod_system/[\w/]*(?:\.py|/))", line):
                if not (REPO / path).exists():
                    broken.append(f"{page.relative_to(REPO)}:{number}: `{path}`")
    _fail_with(broken, "files named in the docs that do not exist")


def test_tests_share_helpers_through_the_kit_only():
    """A test module imports helpers from ``prod_system_tests/kit/``, never from ``conftest.py`` (fixtures
    and hooks only) nor from another test module (whose tests would then belong to two modules)."""
    tests = REPO / "prod_system_tests"
    broken = []
    for path in sorted(tests.rglob("*.py")):
        tree, relative = ast.parse(path.read_text()), path.relative_to(REPO).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                last = name.split(".")[-1]
                if name.startswith("prod_system_tests") and (last == "conftest" or last.startswith("test_")):
                    broken.append(f"{relative}:{node.lineno}: imports {name}")
    _fail_with(broken, "helpers shared outside prod_system_tests/kit/")
