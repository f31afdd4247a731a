"""Alert latency: from an event to its message received by an HTTP endpoint on loopback.

The endpoint is the test kit's (a threaded HTTP server collecting apprise's ``json://`` posts). An event
is ``Notifier.send`` of an alert of a new cause (the rate limit claimed in the SQLite file of a log root,
apprise building and posting the message); the time is from the call to the server's receipt. The first
alert of a process also imports apprise: it is measured apart, in a fresh process, as "cold".

    python benchmarks/alert_latency.py [--events 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from prod_system.alerts import Alert, AlertKind, Notifier
from prod_system.config import AlertsConfig
from prod_system_tests.kit.alerts import URLS_ENV, AlertEndpoint


def measure(events: int, root: str) -> list[float]:
    """Seconds from each send to the message's receipt, for ``events`` alerts of distinct causes."""
    notifier = Notifier(AlertsConfig(), root)
    seconds = []
    with AlertEndpoint() as endpoint:
        os.environ[URLS_ENV] = endpoint.url("bench-token-123")
        for i in range(events):
            began = time.time()
            sent = notifier.send(Alert(AlertKind.BAR_SKIPPED, "C1b paper_trading", f"bar {i} skipped: bench", f"c{i}"))
            (message,) = endpoint.wait_for(i + 1)[i:]
            assert sent and message["message"] == f"bar {i} skipped: bench"
            seconds.append(message["_received_at"] - began)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)  # one event, printed as JSON
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        if args.cold:
            print(json.dumps(measure(1, root)))
            return
        cold = [
            json.loads(subprocess.check_output([sys.executable, __file__, "--cold"], text=True))[0] for _ in range(3)
        ]
        warm = measure(args.events + 1, root)[1:]  # the first one imports apprise: cold, measured above
    print(f"cold (a process's first alert, apprise imported): median {statistics.median(cold):.3f} s of 3")
    print(
        f"warm ({len(warm)} alerts): median {statistics.median(warm):.3f} s, "
        f"p95 {statistics.quantiles(warm, n=20)[-1]:.3f} s, max {max(warm):.3f} s"
    )


if __name__ == "__main__":
    main()
