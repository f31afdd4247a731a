"""A range-aware IO manager for the tables the assets pass to each other.

Every asset value is a long table (or a dict of tables) with a UTC ``bar_end`` column. A run over
a partition range stores one Parquet file per table under a folder named by the range; reading any
range (one partition, the same range, or another) takes, for each partition, the rows of its
window from the newest stored range that covers it. Dagster's default IO manager cannot do ranged
runs, which a simulation needs to stay fast (one run for many bars).

One copy of each table: the tables a run also writes in its system log dir (node outputs, target
positions, orders, fills, the portfolio's tables) are not stored again. An output that names its log
dir (output metadata ``log_dir``) leaves in the store only a pointer to it (``log_dir.json``) and the
tables the log dir does not hold (the predictions, the open orders carried to the next day); reading
takes those tables back from the log dir. A log dir replaced since by a run that did not finish
makes the read fail with one line naming the partition to materialize again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
from dagster import ConfigurableIOManager, InputContext, OutputContext
from pydantic import Field

from prod_system.defs.resources.system import default_root
from prod_system.log_dir import LogDir

SINGLE = "value"
POINTER = "log_dir.json"  # in a stored range: the log dir holding its tables, and which
LOG_DIR_TABLES = "log_dir_tables"  # output metadata: which tables of its log dir the output is

# Values handed over within one process (the in-process executor runs a whole simulation in one):
# folder written -> (its modification time, value). Saves reading back what was just written; the
# time check makes sure the folder was not rewritten since (by another process or run).
_handed_over: dict[Path, tuple[int, object]] = {}


def _window_of(context, keys: list[str]) -> list[tuple[str, pd.Timestamp, pd.Timestamp]]:
    definition = context.asset_partitions_def
    windows = []
    for key in keys:
        window = definition.time_window_for_partition_key(key)
        windows.append((key, pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")))
    return windows


class TableStoreIOManager(ConfigurableIOManager):
    """Stores each asset's tables as Parquet per partition range; reads any range back."""

    base_dir: str = Field(default_factory=lambda: str(Path(default_root()) / "asset_store"))

    def _asset_dir(self, context) -> Path:
        return Path(self.base_dir, *context.asset_key.path)

    def handle_output(self, context: OutputContext, obj) -> None:
        if obj is None:
            return
        tables = obj if isinstance(obj, dict) else {SINGLE: obj}
        key_range = context.asset_partition_key_range
        folder = self._asset_dir(context) / f"{key_range.start}__{key_range.end}"
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        in_log_dir = _tables_in_log_dir(context, tables)
        for name, frame in tables.items():
            if name not in in_log_dir:
                frame.to_parquet(tmp / f"{name.replace('/', '.')}.parquet", index=False)
        if in_log_dir:
            log_dir = _metadata(context, "log_dir")
            (tmp / POINTER).write_text(json.dumps({"log_dir": log_dir, "tables": in_log_dir}, indent=2) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        if len(_handed_over) > 32:
            _handed_over.clear()
        _handed_over[folder] = (folder.stat().st_mtime_ns, obj)

    def load_input(self, context: InputContext):
        keys = list(context.asset_partition_keys) if context.has_asset_partitions else []
        if keys:
            folder = self._asset_dir(context) / f"{keys[0]}__{keys[-1]}"
            stamp, value = _handed_over.get(folder, (None, None))
            if stamp is not None and folder.exists() and folder.stat().st_mtime_ns == stamp:
                return value
        stored = sorted(
            (p for p in self._asset_dir(context).glob("*__*") if p.is_dir() and not p.name.endswith(".tmp")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        # An input marked optional is the portfolio's own previous day: it may be missing (start fresh),
        # and only its first mapped key matters (the mapping shifts the step's range back one day, so
        # the rest of the range is what this very step is about to write).
        optional = bool((context.definition_metadata or {}).get("optional"))
        if optional:
            keys = keys[:1]
        parts: dict[str, list[pd.DataFrame]] = {}
        read: dict[tuple, pd.DataFrame] = {}  # a stored range serves many keys: read each table once
        for key, start, end in _window_of(context, keys):
            source = next((p for p in stored if p.name.split("__")[0] <= key <= p.name.split("__")[1]), None)
            if source is None:
                if optional:
                    continue
                raise FileNotFoundError(
                    f"{context.asset_key.to_user_string()} partition {key} has not been materialized"
                )
            for name, frame in _stored_tables(context, source, key, read):
                parts.setdefault(name, []).append(frame[(frame["bar_end"] > start) & (frame["bar_end"] <= end)])
        if not parts:
            return None
        tables = {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}
        return tables.get(SINGLE, tables)


def _metadata(context: OutputContext, name: str) -> str | None:
    value = (context.output_metadata or {}).get(name)
    return None if value is None else str(getattr(value, "value", value))


def _tables_in_log_dir(context: OutputContext, tables: dict) -> dict[str, str]:
    """The output's tables its log dir holds, as its output says (metadata ``log_dir`` and
    ``log_dir_tables``): {name in the output: name in the log dir}."""
    named = _metadata(context, LOG_DIR_TABLES)
    if _metadata(context, "log_dir") is None or not named:
        return {}
    held = named.split(", ")
    if SINGLE in tables:
        return {SINGLE: held[0]}
    return {name: name for name in tables if name in held}


def _stored_tables(context: InputContext, source: Path, key: str, read: dict):
    """(name, whole table) of a stored range: its own Parquet files, and the tables of the log dir it
    points to."""
    for file in source.glob("*.parquet"):
        if file not in read:
            read[file] = pd.read_parquet(file)
        yield file.stem.replace(".", "/"), read[file]
    pointer = source / POINTER
    if not pointer.exists():
        return
    stored = json.loads(pointer.read_text())
    log_dir = LogDir(stored["log_dir"])
    for name, in_log_dir in stored["tables"].items():
        if (log_dir.path, in_log_dir) not in read:
            try:
                read[log_dir.path, in_log_dir] = log_dir.read_table(in_log_dir)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"{context.asset_key.to_user_string()} partition {key}: its table {in_log_dir} is no longer in "
                    f"{log_dir.path} (replaced by a run that did not finish?); materialize {key} again"
                ) from None
        yield name, read[log_dir.path, in_log_dir]
