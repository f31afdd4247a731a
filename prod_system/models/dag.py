"""Models as DAGs of named nodes, evaluated bar by bar (streaming) or over a history (batch).

A node is a function of its inputs' outputs. The DAG's source input is ``candles`` (the visible
candles, on the market data's grid: 1-minute, or e.g. 5-minute klines); every node returns a frame
indexed by bar end with one column per asset. Each model names the node holding its prediction (the
expected log return of the next bar) and the one holding its volatility estimate; sizing uses both.

Streaming evaluation gives each bar only the candles visible at that bar's decision time, through
the clock; batch evaluation runs once over a whole history. The models are built so that both give
the same predictions (tested).
"""

from __future__ import annotations

import difflib
import importlib
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter

import numpy as np
import pandas as pd

from prod_system.data.market_data import Candles, MarketDataReader
from prod_system.errors import ModelError

SOURCE = "candles"


@dataclass(frozen=True)
class Node:
    name: str
    func: Callable[..., pd.DataFrame]
    inputs: tuple[str, ...]
    doc: str = ""


@dataclass
class Dag:
    """A model: nodes in dependency order, the bar they work on and the history they need."""

    name: str
    bar: pd.Timedelta
    nodes: list[Node]
    lookback_bars: int
    prediction_node: str = "prediction"
    volatility_node: str = "volatility"
    price_node: str = "close"
    order: list[str] = field(init=False)

    def __post_init__(self) -> None:
        by_name = {}
        for node in self.nodes:
            if node.name in by_name or node.name == SOURCE:
                raise ValueError(f"model {self.name}: duplicate or reserved node name {node.name!r}")
            by_name[node.name] = node
        for node in self.nodes:
            unknown = [i for i in node.inputs if i != SOURCE and i not in by_name]
            if unknown:
                raise ValueError(f"model {self.name}: node {node.name!r} reads unknown nodes {unknown}")
        for role in (self.prediction_node, self.volatility_node, self.price_node):
            if role not in by_name:
                raise ValueError(f"model {self.name}: no node named {role!r}")
        graph = {node.name: {i for i in node.inputs if i != SOURCE} for node in self.nodes}
        try:
            self.order = list(TopologicalSorter(graph).static_order())
        except CycleError as error:
            raise ValueError(f"model {self.name}: cycle between nodes {error.args[1]}") from None
        self._by_name = by_name

    @property
    def lookback(self) -> pd.Timedelta:
        return self.bar * self.lookback_bars

    def evaluate(self, candles: Candles, profile_memory: bool = False) -> tuple[dict[str, pd.DataFrame], list[dict]]:
        """Run every node once; return their outputs and per-node (seconds, peak bytes).

        Peak memory is what the node allocated at its peak (tracemalloc), traced only while the node
        runs: tracing everything would slow the whole system several times over.
        """
        values: dict[str, object] = {SOURCE: candles}
        profile = []
        for name in self.order:
            node = self._by_name[name]
            args = [values[i] for i in node.inputs]
            tracing = profile_memory and not tracemalloc.is_tracing()
            if tracing:
                tracemalloc.start()
            began = time.perf_counter()
            try:
                values[name] = node.func(*args)
                seconds = time.perf_counter() - began
                peak = float(tracemalloc.get_traced_memory()[1]) if tracing else np.nan
            finally:
                if tracing:
                    tracemalloc.stop()
            profile.append({"node": name, "seconds": seconds, "peak_memory_bytes": peak})
        del values[SOURCE]
        return values, profile  # type: ignore[return-value]


@dataclass
class DagOutputs:
    """What a model computed, per bar: every node's value per asset, and its profiling."""

    node_outputs: pd.DataFrame  # bar_end, node, asset, value
    profiling: pd.DataFrame  # bar_end, node, seconds, peak_memory_bytes, decided_at

    def node(self, name: str) -> pd.DataFrame:
        """One node's output as a wide frame (rows: bar_end, columns: assets)."""
        rows = self.node_outputs[self.node_outputs["node"] == name]
        return rows.pivot(index="bar_end", columns="asset", values="value")


def _long(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    parts = []
    for name, frame in frames.items():
        stacked = frame.rename_axis(index="bar_end", columns="asset").stack(future_stack=True)
        part = stacked.rename("value").reset_index()
        part.insert(1, "node", name)
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out["value"] = out["value"].astype("float64")
    return out


def run_streaming(
    dag: Dag,
    reader: MarketDataReader,
    bar_ends: pd.DatetimeIndex,
    delay: pd.Timedelta,
    profile_memory: bool = True,
    on_bar: Callable[[int], None] | None = None,
) -> DagOutputs:
    """Evaluate the model bar by bar: at each bar's decision time, on what the reader's clock lets it see."""
    assets = reader.assets
    rows: dict[str, np.ndarray] = {name: np.full((len(bar_ends), len(assets)), np.nan) for name in dag.order}
    profiles = []
    for i, bar_end in enumerate(bar_ends):
        reader.clock.wait_until(bar_end + delay)
        candles = reader.read(dag.lookback, since=bar_end - dag.lookback)
        outputs, profile = dag.evaluate(candles, profile_memory)
        decided_at = reader.clock.now()
        for name in dag.order:
            frame = outputs[name]
            if len(frame.index) and frame.index[-1] == bar_end:
                rows[name][i] = frame.to_numpy(dtype="float64")[-1]
        for item in profile:
            profiles.append({"bar_end": bar_end, **item, "decided_at": decided_at})
        if on_bar:
            on_bar(i + 1)
    frames = {name: pd.DataFrame(values, index=bar_ends, columns=assets) for name, values in rows.items()}
    return DagOutputs(node_outputs=_long(frames), profiling=pd.DataFrame(profiles))


def run_batch(dag: Dag, candles: Candles, bar_ends: pd.DatetimeIndex, profile_memory: bool = False) -> DagOutputs:
    """Evaluate the model once over a whole history; keep the rows of ``bar_ends``."""
    outputs, profile = dag.evaluate(candles, profile_memory)
    frames = {name: frame.reindex(bar_ends) for name, frame in outputs.items()}
    profiling = pd.DataFrame([{"bar_end": bar_ends[-1], **item} for item in profile])
    return DagOutputs(node_outputs=_long(frames), profiling=profiling)


# ---------------------------------------------------------------------------------------------
# Loading models
# ---------------------------------------------------------------------------------------------

BUILTIN_MODELS = {
    "C1b": "prod_system.models.c1b:build_dag",
    "C3a": "prod_system.models.c3a:build_dag",
}


def load_model(spec: str, bar: pd.Timedelta, params: dict | None = None) -> Dag:
    """Build a model from a built-in name (C1b, C3a) or an import path 'package.module:function'."""
    target = BUILTIN_MODELS.get(spec, spec)
    module_name, _, attr = target.partition(":")
    if not attr:
        by_lower = {name.lower(): name for name in BUILTIN_MODELS}
        close = difflib.get_close_matches(spec.lower(), list(by_lower), n=1)
        guess = f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
        raise ModelError(
            f"unknown model {spec!r}{guess}: use one of {sorted(BUILTIN_MODELS)} or 'package.module:function'"
        )
    try:
        builder = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ModelError(f"cannot load model {spec!r}: {error}") from None
    try:
        dag = builder(bar=bar, **(params or {}))
    except TypeError as error:
        raise ModelError(f"model {spec!r} rejected its parameters: {error}") from None
    if not isinstance(dag, Dag):
        raise ModelError(f"model {spec!r}: {target} must return a prod_system Dag, got {type(dag).__name__}")
    return dag
