"""Option values that several commands read: timestamps, durations and the folders they write to,
each refused with one ``error:`` line and a hint before any work."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from prod_system.cli.errors import DURATION_HINT, TIMESTAMP_HINT, fail
from prod_system.common.timeutil import parse_duration, to_utc


def timestamp_option(value: str | None, name: str):
    """The UTC time of option ``--name`` (None if not given)."""
    if value is None:
        return None
    try:
        return to_utc(value)
    except (ValueError, TypeError) as error:
        fail(f"--{name}: {error}", TIMESTAMP_HINT)


def duration_option(value: str, name: str) -> pd.Timedelta:
    """The length of option ``--name`` (30s, 5m, 1h, 1d...)."""
    try:
        return parse_duration(value)
    except ValueError as error:
        fail(f"--{name}: {error}", DURATION_HINT)


def check_writable(path: str | Path, option: str) -> None:
    """Refuse, before any work, a folder that cannot be created or written (nothing is created here)."""
    target = Path(path).absolute()
    ancestor = target
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        fail(f"{option} {path}: {ancestor} is a file, not a folder", f"give {option} a folder path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        fail(f"{option} {path}: {ancestor} is not writable", f"give {option} a folder you can write to")
