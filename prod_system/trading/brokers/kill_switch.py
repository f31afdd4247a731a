"""The kill switch: the operator's stop, which every broker of a live session reads (``ExchangeBroker``
acts on it; a paper session's ``MockedBroker`` reports it, so that the session alerts as prod would)."""

from __future__ import annotations

from pathlib import Path


class KillSwitch:
    """The operator's stop: a file (its content 'flatten' also closes every position), or a flag
    set by the orchestrator (a Dagster run tag)."""

    def __init__(self, path: str | None = None):
        self.path = Path(path) if path else None
        self.forced: str | None = None

    def state(self) -> str | None:
        """None (trade), 'stop' (no new orders) or 'flatten' (close every position)."""
        if self.forced:
            return self.forced
        if self.path is None or not self.path.exists():
            return None
        return "flatten" if "flatten" in self.path.read_text().lower() else "stop"
