"""Operator-facing timings: code-location load, dagster-webserver ready, and the browser's time from
opening a model's asset graph to a successful materialization of one partition (the UI test's flow).

    python benchmarks/ui_timings.py --repeats 3 [--screenshots docs/images]

Code-location load: `dagster definitions validate -w workspace.yaml` (a fresh process: Python, Dagster,
the project and its Definitions), wall time. Webserver ready: `dagster dev -w workspace.yaml` start to
its first answer on /server_info. Browser: headless Chromium (Playwright) from opening the
C1b_simulation asset graph to the run page showing Success for partition 2023-07-21 (the run is queued,
dequeued by the daemon and run in its own process). Medians over the repeats, each with a fresh
DAGSTER_HOME. With --screenshots, the README's pictures are refreshed from the last repeat.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prod_system.naming import WINDOW_START_TAG  # noqa: E402
from prod_system_tests.kit.dagster_ui import (  # noqa: E402
    chromium_page,
    dagster_dev,
    launch_partition,
    open_asset_group,
    wait_for_run,
)

NODES = ["market_data", "dag_node_outputs", "predictions", "target_positions", "orders", "fills", "portfolio"]


def code_location_load() -> float:
    started = time.perf_counter()
    subprocess.run(
        ["dagster", "definitions", "validate", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def ui_round(screenshots: Path | None) -> tuple[float, float]:
    # a relative root: the metadata shows system_runs/..., not a temporary folder
    with (
        tempfile.TemporaryDirectory() as folder,
        dagster_dev(Path(folder), env={"PROD_SYSTEM_ROOT": "system_runs"}) as dev,
        chromium_page() as page,
    ):
        opened = time.perf_counter()
        open_asset_group(page, dev.url, "C1b_simulation", NODES)
        graph = page.screenshot() if screenshots else None
        launch_partition(page, "2023-07-21", tags={WINDOW_START_TAG: "2023-07-21"})  # a window's first day
        status = wait_for_run(page)
        seconds = time.perf_counter() - opened
        if status != "Success":
            raise RuntimeError(f"the run ended {status}")
        if screenshots:
            save_pictures(page, dev.url, graph, screenshots)
        return dev.ready_seconds, seconds


def save_pictures(page, url: str, graph: bytes, folder: Path) -> None:
    """The README's pictures: the asset graph (title and graph, the empty canvas cut) and the
    portfolio asset's page with its metadata."""
    import io

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    image = Image.open(io.BytesIO(graph))
    picture = Image.new("RGB", (1350, 300), "white")
    picture.paste(image.crop((250, 0, 1600, 100)), (0, 0))
    picture.paste(image.crop((250, 450, 1600, 650)), (0, 100))
    picture.save(folder / "asset_graph.png", optimize=True)
    page.goto(f"{url}/assets/C1b/simulation/portfolio?partition=2023-07-21")
    page.get_by_text("run_pnl", exact=True).first.wait_for()
    page.wait_for_timeout(1000)
    image = Image.open(io.BytesIO(page.screenshot()))
    image = image.crop((240, 0, 1600, 1000)).convert("P", palette=Image.ADAPTIVE, colors=128)
    image.save(folder / "portfolio_asset.png", optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--screenshots", type=Path, help="refresh the README's pictures in this folder")
    args = parser.parse_args()
    loads, ready, browser = [], [], []
    for repeat in range(args.repeats):
        loads.append(code_location_load())
        last = repeat == args.repeats - 1
        webserver, seconds = ui_round(args.screenshots if last else None)
        ready.append(webserver)
        browser.append(seconds)
        print(
            f"repeat {repeat + 1}: load {loads[-1]:.2f} s, webserver ready {webserver:.2f} s, "
            f"asset graph -> success {seconds:.2f} s",
            flush=True,
        )
    print()
    print("| what | median | runs |")
    print("|---|---|---|")
    for name, values in [
        ("code-location load (`dagster definitions validate`)", loads),
        ("dagster-webserver ready (`dagster dev` start -> /server_info answers)", ready),
        ("browser: asset graph opened -> partition materialized (Success)", browser),
    ]:
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {name} | {statistics.median(values):.2f} s | {runs} |")


if __name__ == "__main__":
    main()
