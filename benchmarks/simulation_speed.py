"""Simulation speed: the CLI end to end, through Dagster and in the pure core, on the bundled candles.

Each measurement is a fresh `prod-system simulate` process (CLI start to log dir written), so it
includes Python start-up and imports. Engines alternate within each repeat to share the machine's
noise; the figures are medians.

    python benchmarks/simulation_speed.py [--repeats 5] [--days 1 7]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START = "2023-07-20T00:00:00Z"


def run(args: list[str], env: dict) -> float:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "prod_system.cli", *args], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(args)}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--days", type=int, nargs="+", default=[1, 7])
    parser.add_argument("--model", default="C1b")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prod_system_bench_"))
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    snapshot = work / "snapshot.parquet"
    run(
        [
            "dump-market-data",
            "--start",
            "2023-07-19T00:00:00Z",
            "--end",
            "2023-07-28T00:00:00Z",
            "--out",
            str(snapshot),
        ],
        env,
    )
    results = {}
    for days in options.days:
        end = f"2023-07-{20 + days:02d}T00:00:00Z"
        common = [
            "simulate",
            "--model",
            options.model,
            "--market-data",
            str(snapshot),
            "--start",
            START,
            "--end",
            end,
            "--overwrite",
        ]
        run([*common, "--root", str(work / "warmup")], env)  # creates the instance's tables once
        times: dict[str, list[float]] = {"core": [], "dagster": []}
        for _ in range(options.repeats):
            for engine in ("core", "dagster"):
                times[engine].append(run([*common, "--engine", engine, "--root", str(work / engine)], env))
        bars = days * 288
        core, dagster = statistics.median(times["core"]), statistics.median(times["dagster"])
        results[f"{days}d"] = {
            "bars": bars,
            "core_median_s": round(core, 2),
            "dagster_median_s": round(dagster, 2),
            "dagster_bars_per_s": round(bars / dagster, 1),
            "dagster_over_core": round(dagster / core, 3),
            "runs": {k: [round(v, 2) for v in vs] for k, vs in times.items()},
        }
        print(
            f"{options.model} {days} day(s), {bars} bars: core {core:.2f} s, dagster {dagster:.2f} s "
            f"({bars / dagster:.0f} bars/s), dagster/core = {dagster / core:.2f}",
            flush=True,
        )
    print(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
