"""Crash points for the recovery tests: a real ``kill -9`` at an exact place in the code.

``PROD_SYSTEM_FAILPOINT=name[:n]`` makes the process SIGKILL itself the n-th time (default: the first)
it reaches ``failpoint(name)``; unset, a failpoint is one dictionary look-up. Timing a kill from
outside cannot land between two lines (an order sent and not yet recorded): this can, so a test
proves what a restart does with exactly that state. The same idea as FoundationDB's and TiKV's
fail points, reduced to the one action we need.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "PROD_SYSTEM_FAILPOINT"


def _armed() -> tuple[str, int] | None:
    spec = os.environ.get(ENV, "")
    if not spec:
        return None
    name, _, count = spec.partition(":")
    return name, int(count or 1)


_ARMED = _armed()
_reached: dict[str, int] = {}
_lock = threading.Lock()  # orders are placed from a thread pool


def failpoint(name: str) -> None:
    """Kill this process (SIGKILL: no handler, no flush, no clean-up) if ``name`` is armed and due."""
    if _ARMED is None or _ARMED[0] != name:
        return
    with _lock:
        _reached[name] = _reached.get(name, 0) + 1
        if _reached[name] == _ARMED[1]:
            os.kill(os.getpid(), signal.SIGKILL)
