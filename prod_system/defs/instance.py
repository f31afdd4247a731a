"""A faster SQLite event log for a one-machine Dagster instance.

Dagster's ``ConsolidatedSqliteEventLogStorage`` (one database for every run's events) builds a new
SQLAlchemy engine and connection for every event it stores (closing the last connection to a WAL
database checkpoints it) and commits with SQLite's default ``synchronous=FULL``, an fsync per
event: about 10-19 ms per event here, most of the cost of a simulation run's ~140 events. This
subclass keeps one engine with a small connection pool per process and sets ``synchronous=NORMAL``, the usual
setting with the WAL journal that Dagster already enables: commits stay atomic and durable across
a crash of the process; only an OS crash or power loss can lose the last transactions.
Production uses PostgreSQL storage (dagster-postgres) instead.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager

from dagster import Field, StringSource
from dagster._core.storage.event_log.sqlite.consolidated_sqlite_event_log import ConsolidatedSqliteEventLogStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from sqlalchemy import event
from sqlalchemy.pool import QueuePool


class FastSqliteEventLogStorage(ConsolidatedSqliteEventLogStorage):
    """Consolidated SQLite event log: one pooled engine per process, WAL ``synchronous=NORMAL``."""

    _engine = None
    _engine_pid: int | None = None

    @classmethod
    def config_type(cls):
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        """``base_dir`` defaults to DAGSTER_HOME; without one (a Dagster command run from the repository
        without scripts/env.sh, where Dagster itself falls back to temporary storage), a temporary
        folder too, instead of failing on an unset variable."""
        base_dir = config_value.get("base_dir") or os.environ.get("DAGSTER_HOME")
        return cls(inst_data=inst_data, base_dir=base_dir or tempfile.mkdtemp(prefix="prod_system_event_log_"))

    def _shared_engine(self):
        if self._engine is None or self._engine_pid != os.getpid():
            # a small pool keeps connections open: closing the last connection to a WAL database
            # checkpoints it, which Dagster's NullPool did after every event
            engine = create_engine(
                self._conn_string,
                poolclass=QueuePool,
                pool_size=2,
                max_overflow=8,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_connection, _record) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

            self._engine, self._engine_pid = engine, os.getpid()
        return self._engine

    @contextmanager
    def _connect(self):
        with self._shared_engine().connect() as connection, connection.begin():
            yield connection
