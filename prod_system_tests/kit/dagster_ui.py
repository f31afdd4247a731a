"""The Dagster UI as an operator uses it: `dagster dev` on loopback with the repository's workspace.yaml
and dagster.yaml (in a fresh DAGSTER_HOME), and headless Chromium driven by Playwright.

Shared by the browser test and `benchmarks/ui_timings.py`. Chromium is the system's (Debian's
`chromium` package; `scripts/test.sh` installs it when missing) or the one PROD_SYSTEM_CHROMIUM names;
Playwright's own browser download is not used."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Chromium on a closed network: no sandbox when running as root, as few background connections as
# flags allow, and no way off loopback for the rest (its updater, sign-in and autofill still call
# Google: the suite's tripwire caught them), since every host name but localhost resolves to nothing
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
# the only warning `dagster dev` may print: Dagster's own notice that the command has a successor
# (`dg dev`, from the separate dagster-dg-cli package); it is about Dagster's CLI, not this project
DAGSTER_DEV_NOTICE = "SupersessionWarning: Function `dev_command` is superseded"


def find_chromium() -> str:
    """The Chromium to drive: PROD_SYSTEM_CHROMIUM, else the system's. A clear error when there is none."""
    configured = os.environ.get("PROD_SYSTEM_CHROMIUM")
    if configured:
        return configured
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(
        "no Chromium found for the browser tests: install the system's (Debian: apt-get install chromium; "
        "scripts/test.sh does it when it can) or set PROD_SYSTEM_CHROMIUM to a Chromium executable"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DagsterDev:
    """A running `dagster dev`: its URL, how long it took to answer, and where its output goes."""

    url: str
    home: Path
    log: Path
    ready_seconds: float

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def warnings(self) -> list[str]:
        """Lines of its output that warn, other than Dagster's notice about the command itself."""
        return [
            line for line in self.output().splitlines() if "warning" in line.lower() and DAGSTER_DEV_NOTICE not in line
        ]


@contextmanager
def dagster_dev(home: Path, env: dict[str, str] | None = None, timeout: float = 120.0) -> Iterator[DagsterDev]:
    """Start `dagster dev -w {repository}/workspace.yaml` in DAGSTER_HOME = `home`, where the repository's
    dagster.yaml is copied (as an operator runs it from the repository with scripts/env.sh, whose
    DAGSTER_HOME is the repository); stop it (SIGINT, like Ctrl-C) on exit."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    log = home / "dagster_dev.log"
    environment = {**os.environ, "DAGSTER_HOME": str(home), **(env or {})}
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(
            ["dagster", "dev", "-w", str(REPO / "workspace.yaml"), "-p", str(port)],
            cwd=home,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() - started > timeout:
                    raise RuntimeError(f"dagster dev did not answer on {url}:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.2)
        yield DagsterDev(url, home, log, time.monotonic() - started)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextmanager
def chromium_page(width: int = 1600, height: int = 1000):
    """A fresh headless Chromium page (a new profile each time)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def open_asset_group(page, url: str, group: str, node_names: list[str]) -> None:
    """Open the group's asset graph and wait until every node is drawn."""
    page.goto(f"{url}/locations/prod_system/asset-groups/{group}")
    for name in node_names:
        page.get_by_text(name, exact=True).first.wait_for()


def lineage_edges(page) -> int:
    """The edges the graph draws (SVG paths ending in an arrow)."""
    return page.locator("svg path[marker-end]").count()


def launch_partition(page, partition: str, tags: dict[str, str] | None = None) -> str:
    """Materialize all of the open group for one partition, as a person does: "Materialize all", all
    partitions, type the partition, add the run's tags if any (the dialog's Tags section), launch.
    Returns the run id the UI reports."""
    page.get_by_role("button", name="Materialize all").click()
    page.get_by_text("Partition selection").wait_for()
    # the dialog offers the last 90 days first: ask for all of them
    show_all = page.get_by_text("Show all partitions")
    partitions = page.get_by_placeholder("ex: 2019-01-01")
    show_all.or_(partitions).first.wait_for()
    if show_all.is_visible():
        show_all.click()
    partitions.fill(partition)
    partitions.press("Enter")
    if tags:
        page.get_by_role("dialog").get_by_text("Tags", exact=True).click()  # the section opens
        page.get_by_role("button", name="Add tags").click()
        for i, (key, value) in enumerate(tags.items()):
            if i:
                page.get_by_role("button", name="Add custom tag").click()
            page.get_by_placeholder("Tag Key").nth(i).fill(key)
            page.get_by_placeholder("Tag Value").nth(i).fill(value)
        page.get_by_role("button", name="Apply").click()
        page.get_by_text(f"{len(tags)} tags", exact=True).wait_for()
    page.get_by_role("button", name="Launch 1 run").click()
    view = page.get_by_role("link", name="View", exact=True)  # in the "Launched run" toast
    href = view.get_attribute("href")
    view.click()
    return href.rsplit("/", 1)[-1]


def wait_for_run(page, timeout_ms: int = 180_000) -> str:
    """On a run's page: wait until its status is final; returns it (Success, Failure or Canceled)."""
    final = page.get_by_text("Success", exact=True).or_(page.get_by_text("Failure", exact=True))
    final = final.or_(page.get_by_text("Canceled", exact=True))
    final.first.wait_for(timeout=timeout_ms)
    return final.first.inner_text()


# the canvas of the metadata plot titled with a label (the nearest box holding the title and a
# canvas): how many of its pixels are drawn (Chart.js draws on a 2D canvas; 0: nothing plotted), its
# width, and the horizontal extent of its coloured pixels (the series: axes, grid and ticks are grey;
# one point is a dot a few pixels wide, a line through two or more spans the plot's width)
_PLOT_PIXELS = """label => {
    const titles = [...document.querySelectorAll('body *')].filter(
        e => e.children.length === 0 && e.textContent.trim() === label);
    for (const title of titles) {
        let box = title.parentElement;
        while (box && !box.querySelector('canvas')) box = box.parentElement;
        if (!box || box.querySelectorAll('canvas').length !== 1) continue;
        const canvas = box.querySelector('canvas');
        if (!canvas.width || !canvas.height) return null;
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let drawn = 0, left = canvas.width, right = -1;
        for (let i = 0; i < pixels.length; i += 4) {
            if (!pixels[i + 3]) continue;
            drawn++;
            const [r, g, b] = [pixels[i], pixels[i + 1], pixels[i + 2]];
            if (Math.max(r, g, b) - Math.min(r, g, b) > 60 && pixels[i + 3] > 128) {
                const x = (i / 4) % canvas.width;
                left = Math.min(left, x);
                right = Math.max(right, x);
            }
        }
        return drawn ? {pixels: drawn, width: canvas.width, series_span: right < 0 ? 0 : right - left + 1} : null;
    }
    return null;
}"""


@dataclass
class DrawnPlot:
    pixels: int  # drawn pixels of the chart's canvas (axes included)
    width: int  # the canvas' width in pixels
    series_span: int  # the horizontal extent of the series' (coloured) pixels


def metadata_plot(page, label: str) -> DrawnPlot:
    """On an asset's page: switch its Metadata section to Plots (numeric metadata across its
    materializations, by partition for a partitioned asset) and wait until the chart of ``label`` is
    drawn; returns what its canvas shows."""
    page.get_by_role("button", name="Plots").click()
    page.get_by_text(label, exact=True).first.scroll_into_view_if_needed()
    page.wait_for_function(_PLOT_PIXELS, arg=label)
    return DrawnPlot(**page.evaluate(_PLOT_PIXELS, label))
