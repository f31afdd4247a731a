"""The README's rehearsal on the real clock: `prod-system exchange-sim` on the bundled candles (a day of them
closed at start-up, --history's default) and `prod-system run --bar 1m --duration 5m` against it, as two
processes. Reports the orders of each bar: the target is orders on the first bar and 5 of 5 bars traded.

    python benchmarks/rehearsal.py [--mode paper_trading|prod] [--duration 5m]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "prod_system" / "data" / "binance_futures_1m"
KEY, SECRET = "rehearsal-key", "rehearsal-secret"


def prod_system(*args: str) -> list[str]:
    return [sys.executable, "-m", "prod_system.cli", *args]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="paper_trading", choices=["paper_trading", "prod"])
    parser.add_argument("--duration", default="5m")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rehearsal_"))
    env = {**os.environ, "EXCHANGE_API_KEY": KEY, "EXCHANGE_API_SECRET": SECRET}
    env.update(BINANCE_API_KEY=KEY, BINANCE_API_SECRET=SECRET, DAGSTER_HOME=str(work / "dagster_home"))
    (work / "dagster_home").mkdir()
    snapshot = work / "snapshot.parquet"
    dump = ["dump-market-data", "--start", "2023-07-20T00:00:00Z", "--end", "2023-07-23T00:00:00Z"]
    subprocess.run(prod_system(*dump, "--out", str(snapshot)), check=True, env=env, capture_output=True)
    port = free_port()
    server = subprocess.Popen(
        prod_system("exchange-sim", "--market-data", str(snapshot), "--port", str(port)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(5)  # the exchange loads the snapshot
        began = time.perf_counter()
        run = prod_system(
            "run", "--model", "C1b", "--mode", options.mode, "--bar", "1m", "--duration", options.duration,
            "--root", str(work / "runs"), "--exchange-url", f"http://127.0.0.1:{port}",
        )  # fmt: skip
        done = subprocess.run(run, env=env, capture_output=True, text=True, cwd=work)
        seconds = time.perf_counter() - began
    finally:
        server.terminate()
        server.wait(timeout=30)
    bars = re.findall(r"bar (\S+ \S+): (traded|skipped), (.*)", done.stderr)
    for when, status, detail in bars:
        print(f"bar {when}: {status}, {detail}")
    orders = [int(detail.split()[0]) if status == "traded" else 0 for _, status, detail in bars]
    warm = [line for line in done.stderr.splitlines() if line.startswith("warm-up")]
    print(f"exit {done.returncode} after {seconds:.0f} s; {warm[0] if warm else 'no warm-up line'}")
    print(
        f"{options.mode}: orders on the first bar: {orders[0] if orders else 'none'}; "
        f"bars traded with orders: {sum(count > 0 for count in orders)} of {len(orders)}"
    )


if __name__ == "__main__":
    main()
