"""The command line as a person runs it: `python -m prod_system.cli` in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prod_system.trading.brokers.ccxt_client import binanceusdm_client

REPO = Path(__file__).resolve().parents[2]
EXCHANGE_KEY, EXCHANGE_SECRET = "cli-key", "cli-secret-value"  # the keys exchange_sim's exchange takes

# `--config NOTEBOOK_OFF` for a run whose test does not look at the observer's report (no kernel started)
NOTEBOOK_OFF = str(Path(__file__).with_name("notebook_off.yaml"))


def cli(
    *args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`prod-system ARGS...` run from ``cwd`` (the repository by default), its output captured as text;
    ``env`` adds environment variables to this process's."""
    return subprocess.run(
        [sys.executable, "-m", "prod_system.cli", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env} if env else None,
    )


@contextmanager
def exchange_sim(market_data: Path, *options: str) -> Iterator[str]:
    """`prod-system exchange-sim` on ``market_data`` (keys EXCHANGE_KEY/EXCHANGE_SECRET from the
    environment) on a free port: its URL once it answers; stopped at the end of the block."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "EXCHANGE_API_KEY": EXCHANGE_KEY, "EXCHANGE_API_SECRET": EXCHANGE_SECRET}
    command = [sys.executable, "-m", "prod_system.cli", "exchange-sim", "--market-data", str(market_data)]
    server = subprocess.Popen(
        [*command, "--port", str(port), *options], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                binanceusdm_client(url, timeout_ms=1_000).fetch_time()
                break
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    server.kill()
                    raise AssertionError(f"exchange-sim did not start: {server.communicate()[1][-2000:]}") from None
                time.sleep(0.05)
        yield url
    finally:
        if server.returncode is None:
            server.terminate()
            try:
                server.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.communicate()
