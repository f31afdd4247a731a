"""One error hierarchy: every error a user can cause or meet, each with a one-line message.

The CLI turns a ``ProdSystemError`` into one ``error:`` line and an exit code (2 for bad input); the
Dagster layer into a failed step with that line. Subclasses keep their builtin base (``ValueError``,
``FileExistsError``...) so callers that catch those still do.
"""

from __future__ import annotations


class ProdSystemError(Exception):
    """The base of every error this system raises on purpose."""


class ConfigError(ProdSystemError, ValueError):
    """A system config that cannot be used; the message names the bad field."""


class MarketDataError(ProdSystemError, ValueError):
    """Market data that cannot be used (missing file, bad columns, impossible rows)."""


class DatabaseUnavailable(MarketDataError):
    """The market database did not answer (connection lost, server down): the caller may retry."""


class DownloadInterrupted(MarketDataError):
    """A download from the exchange stopped (unreachable, banned, gave up retrying): what it fetched is
    kept, and the same command run again goes on from there."""


class ModelError(ProdSystemError, ValueError):
    """A model that cannot be loaded or built."""


class LogDirExistsError(ProdSystemError, FileExistsError):
    """The log dir of this window already holds a run."""


class BrokerError(ProdSystemError, RuntimeError):
    """A bar the broker could not execute as asked (the message says which orders and why)."""


class ReconciliationError(ProdSystemError, ValueError):
    """A run that cannot be reconciled at all (no bars in the window, tables missing)."""


class StatisticsError(ProdSystemError, ValueError):
    """A portfolio statistics table the performance figures cannot be computed from (a column missing or
    empty); the message names the column."""


class FaultRuleError(ProdSystemError, ValueError):
    """A fault rule of the local exchange that cannot be used; the message names the rule and the field."""


class InstrumentsError(ProdSystemError, ValueError):
    """Exchange rules (lot size, tick, brackets) that are missing or cannot be read; the message names the
    file and field, or the assets and the command that fetches their rules."""


class NotebookError(ProdSystemError, RuntimeError):
    """A notebook that failed: the message names the notebook, the cell and its error in one line; the
    partially executed notebook is kept beside it for debugging."""


class NoInvestorDataError(ProdSystemError, LookupError):
    """An investor window with nothing to show yet (no historical simulation, no bar after its date, no live
    session with a bar recorded): the message says which and where it looked."""
