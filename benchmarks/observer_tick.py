"""The 5-minute observer schedule, tick to published: how long after a tick the latest paper session's
notebook HTML is on S3 (``system_reconciliation/{model}.last_5minutes.html``).

A paper-trading session of C1b (12 hours of 5-minute bars on the bundled candles, the core engine on the
replayed clock) is written once; a local S3 server (moto's, over HTTP) is started. Then, per repeat, the
schedule is evaluated (what the daemon does at the tick: is there a session?) and the run it requests is
executed in process: reconciliation with research, the observer notebook executed and converted, the HTML
uploaded through dagster-aws. The figure is the tick's evaluation plus the run, up to the upload; a daemon
adds its launch (a new process: see benchmarks/live_dagster_daemon.py) on top.

    python benchmarks/observer_tick.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pandas as pd
from dagster import DagsterInstance, build_schedule_context
from dagster_aws.s3 import S3Resource

from prod_system.config import build_config
from prod_system.data.market_data import select_window, write_snapshot
from prod_system.data.sources import load_source
from prod_system.definitions import build_definitions
from prod_system.defs.resources import LogDirResource, MarketDataResource, PublishingResource, SystemResource
from prod_system.naming import observer_job_name, report_object, schedule_name
from prod_system.runs.simulate import simulate

BUNDLED = Path(__file__).resolve().parents[1] / "prod_system" / "data" / "binance_futures_1m"
UNIVERSE = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "DOT", "MATIC"]
BUCKET = "observer-tick-bench"
MODEL, MODE = "C1b", "paper_trading"


def s3_server(folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (folder / "moto.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return server, url
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the local S3 server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        candles = load_source(f"csv:{BUNDLED}", UNIVERSE, pd.Timedelta(seconds=10))
        window = select_window(candles, pd.Timestamp("2023-07-20", tz="UTC"), pd.Timestamp("2023-07-23", tz="UTC"))
        snapshot = write_snapshot(window, folder / "snapshot.parquet")
        root = folder / "runs"
        config = build_config(
            {
                "model": MODEL,
                "run_mode": MODE,
                "start": "2023-07-21T00:00:00Z",
                "end": "2023-07-21T12:00:00Z",
                "market_data": {"source": f"parquet:{snapshot}"},
                "log_root": str(root),
            }
        )
        simulate(config)
        server, endpoint = s3_server(folder)
        try:
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
            defs = build_definitions(
                [MODEL],
                resources={
                    "s3": S3Resource(endpoint_url=endpoint, region_name="us-east-1"),
                    "publishing": PublishingResource(bucket=BUCKET, investor_run_mode=MODE),
                    "log_dir": LogDirResource(root=str(root)),
                    "market_data": MarketDataResource(source=f"parquet:{snapshot}"),
                    "system": SystemResource(),
                },
                investor_model=MODEL,
            )
            job_name = observer_job_name(MODEL, MODE)
            job = defs.resolve_job_def(job_name)
            tick = defs.resolve_schedule_def(schedule_name(job_name))
            instance = DagsterInstance.ephemeral()
            times = []
            for _ in range(args.repeats):
                began = time.perf_counter()
                now = datetime.now(UTC)
                with build_schedule_context(
                    instance=instance, resources=defs.resources, scheduled_execution_time=now
                ) as context:
                    requests = tick.evaluate_tick(context).run_requests
                assert requests, "the schedule requested no run: no paper session found"
                result = job.execute_in_process(instance=instance)
                assert result.success
                times.append(time.perf_counter() - began)
            head = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").head_object(
                Bucket=BUCKET, Key=report_object(MODEL)
            )
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"paper session: 144 bars of 5m, {len(UNIVERSE)} assets; {args.repeats} ticks")
    print(
        f"tick to published: median {statistics.median(times):.2f} s "
        f"(min {min(times):.2f}, max {max(times):.2f}); HTML on S3: {head['ContentLength'] / 1024:,.0f} KB"
    )


if __name__ == "__main__":
    main()
