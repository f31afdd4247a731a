"""A range-aware IO manager for the tables the assets pass to each other.

Every asset value is a long table (or a dict of tables) with a UTC ``bar_end`` column. A run over
a partition range stores one Parquet file per table under a folder named by the range; reading any
range (one partition, the same range, or another) takes, for each partition, the rows of its
window from the newest stored range that covers it. Dagster's default IO manager cannot do ranged
runs, which a simulation needs to stay fast (one run for many bars).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
from dagster import ConfigurableIOManager, InputContext, OutputContext
from pydantic import Field

from prod_system.defs.resources.system import default_root

SINGLE = "value"

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
        for name, frame in tables.items():
            frame.to_parquet(tmp / f"{name.replace('/', '.')}.parquet", index=False)
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
        read: dict[Path, pd.DataFrame] = {}  # a stored range serves many keys: read each file once
        for key, start, end in _window_of(context, keys):
            source = next((p for p in stored if p.name.split("__")[0] <= key <= p.name.split("__")[1]), None)
            if source is None:
                if optional:
                    continue
                raise FileNotFoundError(
                    f"{context.asset_key.to_user_string()} partition {key} has not been materialized"
                )
            for file in source.glob("*.parquet"):
                if file not in read:
                    read[file] = pd.read_parquet(file)
                frame = read[file]
                parts.setdefault(file.stem.replace(".", "/"), []).append(
                    frame[(frame["bar_end"] > start) & (frame["bar_end"] <= end)]
                )
        if not parts:
            return None
        tables = {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}
        return tables.get(SINGLE, tables)
