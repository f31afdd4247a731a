"""The wall clock. Every component that needs "now" gets a clock injected.

``RealClock`` reads the machine's UTC time (prod, paper_trading); ``SimulatedClock`` is set by the
simulation loop to each bar's end plus the data delay, replaying the past as if it were now.
"""

from __future__ import annotations

import time
from typing import Protocol

import pandas as pd


class Clock(Protocol):
    def now(self) -> pd.Timestamp: ...

    def wait_until(self, ts: pd.Timestamp) -> None:
        """Return once ``now() >= ts``: a real clock sleeps, a simulated one jumps."""


class RealClock:
    """The machine's clock, in UTC."""

    def now(self) -> pd.Timestamp:
        return pd.Timestamp(time.time_ns(), unit="ns", tz="UTC")

    def wait_until(self, ts: pd.Timestamp) -> None:
        while (remaining := (ts - self.now()).total_seconds()) > 0:
            time.sleep(remaining)


class SimulatedClock:
    """A clock remapped into the past; it only moves forward."""

    def __init__(self, start: pd.Timestamp):
        self._now = pd.Timestamp(start).tz_convert("UTC")

    def now(self) -> pd.Timestamp:
        return self._now

    def wait_until(self, ts: pd.Timestamp) -> None:
        ts = pd.Timestamp(ts).tz_convert("UTC")
        if ts < self._now:
            raise ValueError(f"simulated clock cannot go back from {self._now} to {ts}")
        self._now = ts


class ScaledClock:
    """The real clock, ``speed`` times faster, from ``start`` (a rehearsal of a live session against an
    exchange replaying its market at the same speed; ``speed=1`` with ``start`` = now is the real clock)."""

    def __init__(self, start: pd.Timestamp, speed: float = 1.0):
        if not speed > 0:
            raise ValueError(f"clock speed must be positive, got {speed}")
        self.start = pd.Timestamp(start).tz_convert("UTC")
        self.speed = float(speed)
        self._origin = time.monotonic()

    def now(self) -> pd.Timestamp:
        return self.start + pd.Timedelta(seconds=(time.monotonic() - self._origin) * self.speed)

    def wait_until(self, ts: pd.Timestamp) -> None:
        while (remaining := (ts - self.now()).total_seconds()) > 0:
            time.sleep(remaining / self.speed)
