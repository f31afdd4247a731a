"""The system log dir: everything a run did, in files a person or a notebook can read.

    {root}/{model}/{run_mode}/{trigger}/{start}.{end}/system_log_dir/
        system_config.yaml  log.txt  run.json
        dag/node_outputs/  dag/profiling/
        target_positions/  orders/  fills/
        portfolio/{holdings_shares,holdings_notional,executed_trades_shares,executed_trades_notional,pnl,statistics}/
        pnl_report.md  pnl_report.png

Each table is a folder of Parquet files (``pandas.read_parquet(folder)``), long form, with a UTC
``bar_end`` column. Files are named by the first bar they hold and written atomically, so a rerun of
the same window replaces them instead of mixing with them.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from prod_system.core.config import SystemConfig
from prod_system.core.files import write_atomically
from prod_system.core.timeutil import compact

TABLES = (
    "dag/node_outputs",
    "dag/profiling",
    "target_positions",
    "data_quality",
    "orders",
    "fills",
    "portfolio/holdings_shares",
    "portfolio/holdings_notional",
    "portfolio/executed_trades_shares",
    "portfolio/executed_trades_notional",
    "portfolio/pnl",
    "portfolio/statistics",
)


class LogDirExistsError(FileExistsError):
    """The log dir of this window already holds a run."""


class LogDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def for_config(cls, config: SystemConfig) -> LogDir:
        return cls(config.log_dir())

    def holds_run(self) -> bool:
        """A finished run (``run.json`` is written last) or a live session (its state) is here. A run
        interrupted or killed before its end leaves neither: the next run of the window replaces it."""
        return any((self.path / name).exists() for name in ("run.json", "state.json", "inflight.json"))

    def check_free(self, overwrite: bool = False) -> None:
        """Refuse to mix with an earlier run of the same window unless told to replace it."""
        if not overwrite and self.holds_run():
            raise LogDirExistsError(f"{self.path} already holds a run of this window; pass --overwrite to replace it")

    def prepare(self, config: SystemConfig, overwrite: bool = False) -> None:
        """Create the dir for a new run (replacing an earlier run of the window only if ``overwrite``)."""
        self.check_free(overwrite)
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_text("system_config.yaml", config.to_yaml())

    def write_text(self, name: str, text: str) -> Path:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, lambda tmp: tmp.write_text(text))
        return target

    def write_json(self, name: str, data: dict) -> Path:
        return self.write_text(name, json.dumps(data, indent=2, default=str) + "\n")

    def write_table(self, name: str, frame: pd.DataFrame, first_bar: pd.Timestamp) -> Path:
        folder = self.path / name
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"part-{compact(first_bar)}.parquet"
        write_atomically(target, lambda tmp: frame.to_parquet(tmp, index=False), folder / f".{target.name}.tmp")
        return target

    def read_table(self, name: str) -> pd.DataFrame:
        folder = self.path / name
        files = sorted(folder.glob("part-*.parquet"))
        if not files:
            raise FileNotFoundError(f"no table {name} in {self.path}")
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

    @contextmanager
    def capture_log(self, logger: logging.Logger) -> Iterator[None]:
        """Send ``logger``'s records to log.txt for the duration of the block.

        Every record goes to log.txt; only warnings and errors go on to the parent loggers (the
        console, Dagster's log): a line per bar is for the file, not for the operator's screen.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.path / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        forward = _ForwardWarnings(logger.parent)
        previous = logger.level, logger.propagate
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(handler)
        logger.addHandler(forward)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.removeHandler(forward)
            logger.level, logger.propagate = previous
            handler.close()


class _ForwardWarnings(logging.Handler):
    """Pass warnings and errors on to a parent logger's handlers."""

    def __init__(self, parent: logging.Logger | None):
        super().__init__(level=logging.WARNING)
        self.parent = parent

    def emit(self, record: logging.LogRecord) -> None:
        if self.parent is not None:
            self.parent.handle(record)
