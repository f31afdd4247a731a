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
from contextlib import contextmanager

from dagster._core.storage.event_log.sqlite.consolidated_sqlite_event_log import ConsolidatedSqliteEventLogStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from sqlalchemy import event
from sqlalchemy.pool import QueuePool


class FastSqliteEventLogStorage(ConsolidatedSqliteEventLogStorage):
    """Consolidated SQLite event log: one pooled engine per process, WAL ``synchronous=NORMAL``."""

    _engine = None
    _engine_pid: int | None = None

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
