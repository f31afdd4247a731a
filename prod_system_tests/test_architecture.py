"""The pure core imports nothing from Dagster; the Dagster layer only wires it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "prod_system" / "core"


def test_core_does_not_import_dagster():
    modules = sorted(
        "prod_system.core." + ".".join(p.relative_to(CORE).with_suffix("").parts)
        for p in CORE.rglob("*.py")
        if p.name != "__init__.py"
    )
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('dagster' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    for path in CORE.rglob("*.py"):
        assert not re.search(r"^\s*(from|import)\s+dagster", path.read_text(), re.MULTILINE), path


def test_loading_the_definitions_imports_no_plotting_or_exchange_client():
    """matplotlib and ccxt are imported where they are used, not when Dagster loads the code location
    (together ~0.85 s of every load: the webserver, the daemon, each run's process)."""
    code = (
        "import prod_system.definitions, sys; "
        "print(sorted(m for m in ('matplotlib', 'ccxt', 'aiohttp') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
