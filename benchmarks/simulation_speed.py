"""Simulation speed: the CLI end to end, through Dagster and in the pure core, on the bundled candles.

Each measurement is a fresh `prod-system simulate` process (CLI start to log dir written), so it
includes Python start-up and imports. Engines alternate within each repeat to share the machine's
noise; the figures are medians, and the Dagster/core ratio is the median of the per-repeat ratios
(each repeat runs both engines back to back, so slow phases of the machine hit both). The CPU time
(user + system) of each process is reported too: it is much less sensitive to other load.

    python benchmarks/simulation_speed.py [--repeats 5] [--days 1 7]

A second measurement runs both engines inside one warm Python process (imports and the Dagster
instance already loaded), to separate Dagster's cost per run from its one-off start-up cost.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START = "2023-07-20T00:00:00Z"


CPU: dict[str, list[float]] = {}


def run(args: list[str], env: dict, engine: str | None = None) -> float:
    """Wall time of one CLI process; its CPU time (user + system) is kept in CPU[engine]."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "prod_system.cli", *args], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - began
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(args)}\n{done.stderr}")
    if engine:
        cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
        CPU.setdefault(engine, []).append(cpu)
    return elapsed


def in_process(snapshot: Path, days: int, options, work: Path) -> dict:
    """Both engines in this process, after a warm-up run of each: the per-run cost of Dagster."""
    from dagster import DagsterInstance

    from prod_system.cli.launch import simulate_with_dagster
    from prod_system.config import build_config
    from prod_system.runs.simulate import simulate

    instance = DagsterInstance.get()
    config = build_config(
        {
            "model": options.model,
            "start": START,
            "end": f"2023-07-{20 + days:02d}T00:00:00Z",
            "market_data": {"source": f"parquet:{snapshot}"},
            "log_root": str(work / "in_process"),
        }
    )
    times: dict[str, list[float]] = {"core": [], "dagster": []}
    for repeat in range(options.repeats + 1):
        for engine in ("core", "dagster"):
            began = time.perf_counter()
            if engine == "core":
                simulate(config, overwrite=True)
            else:
                simulate_with_dagster(config, overwrite=True, instance=instance)
            if repeat:  # the first round warms caches
                times[engine].append(time.perf_counter() - began)
    ratio = statistics.median(d / c for c, d in zip(times["core"], times["dagster"], strict=True))
    core, dagster = statistics.median(times["core"]), statistics.median(times["dagster"])
    print(
        f"{options.model} {days} day(s) in one process: core {core:.2f} s, dagster {dagster:.2f} s, "
        f"dagster/core = {ratio:.2f} (median of pairs)",
        flush=True,
    )
    return {
        "core_median_s": round(core, 2),
        "dagster_median_s": round(dagster, 2),
        "dagster_over_core_median_of_pairs": round(ratio, 3),
    }


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
    os.environ["DAGSTER_HOME"] = str(home)
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
        CPU.clear()
        for _ in range(options.repeats):
            for engine in ("core", "dagster"):
                times[engine].append(run([*common, "--engine", engine, "--root", str(work / engine)], env, engine))
        cpu_core, cpu_dagster = statistics.median(CPU["core"]), statistics.median(CPU["dagster"])
        bars = days * 288
        core, dagster = statistics.median(times["core"]), statistics.median(times["dagster"])
        ratio = statistics.median(d / c for c, d in zip(times["core"], times["dagster"], strict=True))
        results[f"{days}d"] = {
            "bars": bars,
            "core_median_s": round(core, 2),
            "dagster_median_s": round(dagster, 2),
            "dagster_bars_per_s": round(bars / dagster, 1),
            "dagster_over_core_median_of_pairs": round(ratio, 3),
            "runs": {k: [round(v, 2) for v in vs] for k, vs in times.items()},
            "cpu_core_median_s": round(cpu_core, 2),
            "cpu_dagster_median_s": round(cpu_dagster, 2),
            "cpu_dagster_over_core": round(cpu_dagster / cpu_core, 3),
        }
        print(
            f"{options.model} {days} day(s), {bars} bars: core {core:.2f} s, dagster {dagster:.2f} s "
            f"({bars / dagster:.0f} bars/s), dagster/core = {ratio:.2f} (median of pairs); CPU time: core "
            f"{cpu_core:.2f} s, dagster {cpu_dagster:.2f} s, ratio {cpu_dagster / cpu_core:.2f}",
            flush=True,
        )
    for days in options.days:
        results[f"{days}d"]["in_process"] = in_process(snapshot, days, options, work)
    print(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
