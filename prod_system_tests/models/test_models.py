"""Models: streaming (bar by bar, through the clock) equals batch (whole history at once)."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from prod_system.common.clock import SimulatedClock
from prod_system.common.timeutil import bar_ends
from prod_system.data.market_data import CandleStore, MarketDataReader
from prod_system.errors import ModelError
from prod_system.models import features
from prod_system.models.dag import load_model, run_batch, run_streaming
from prod_system_tests.kit.data import UNIVERSE

BAR = pd.Timedelta(minutes=5)
DELAY = pd.Timedelta(seconds=10)


@pytest.mark.parametrize("model", ["C1b", "C3a"])
def test_streaming_equals_batch(candles, model):
    dag = load_model(model, BAR)
    store = CandleStore(candles, UNIVERSE)
    start = pd.Timestamp("2023-07-21T00:00:00Z")
    bars = bar_ends(start, start + pd.Timedelta(hours=6), BAR)
    clock = SimulatedClock(start)
    streaming = run_streaming(dag, MarketDataReader(store, clock), bars, DELAY, False)
    history = store.visible(bars[-1] + DELAY, store.first_bar_end - pd.Timedelta(minutes=1))
    batch = run_batch(dag, history, bars)
    for node in dag.order:
        left, right = streaming.node(node), batch.node(node)
        assert left.notna().to_numpy().mean() > 0.95, f"{node} is mostly NaN"
        np.testing.assert_allclose(left.to_numpy(), right.to_numpy(), rtol=1e-9, atol=1e-12, err_msg=node)
    assert set(streaming.profiling["node"]) == set(dag.order)
    assert (streaming.profiling["seconds"] > 0).all()


def test_streaming_records_memory(candles):
    dag = load_model("C1b", BAR)
    store = CandleStore(candles, UNIVERSE)
    start = pd.Timestamp("2023-07-21T00:00:00Z")
    clock = SimulatedClock(start)
    out = run_streaming(dag, MarketDataReader(store, clock), bar_ends(start, start + BAR * 2, BAR), DELAY, True)
    assert (out.profiling["peak_memory_bytes"] > 0).all()
    assert (out.profiling["decided_at"] == out.profiling["bar_end"] + DELAY).all()


def test_user_model_by_import_path(tmp_path, monkeypatch, candles):
    package = tmp_path / "mymodels"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "momentum.py").write_text(
        textwrap.dedent("""
        from functools import partial
        from prod_system.models.dag import SOURCE, Dag, Node
        from prod_system.models import features

        def build_dag(bar, window=12):
            nodes = [
                Node("close", partial(features.resample_close, bar=bar), (SOURCE,)),
                Node("returns", features.log_returns, ("close",)),
                Node("volatility", partial(features.rolling_volatility, window=window), ("returns",)),
                Node("prediction", lambda r: r, ("returns",)),
            ]
            return Dag(name="momentum", bar=bar, nodes=nodes, lookback_bars=window + 2)
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    dag = load_model("mymodels.momentum:build_dag", BAR, {"window": 6})
    assert dag.lookback_bars == 8 and dag.order[-1] in {"prediction", "volatility"}
    with pytest.raises(ModelError, match="rejected its parameters"):
        load_model("mymodels.momentum:build_dag", BAR, {"colour": 1})
    sys.modules.pop("mymodels.momentum", None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("C9z", "unknown model"), ("nowhere.models:build", "cannot load model"), ("builtins:dict", "must return")],
)
def test_bad_model_specs(spec, message):
    with pytest.raises(ModelError, match=message):
        load_model(spec, BAR)


def test_rolling_mean_is_the_mean_of_the_finite_values_of_each_full_window():
    """Against pandas' rolling mean (which skips NaN the same way), on data with gaps and infinities."""
    rng = np.random.default_rng(5)
    values = rng.normal(size=(120, 6))
    values[rng.random(values.shape) < 0.1] = np.nan
    values[3, 2] = np.inf
    window, min_periods = 20, 15
    expected = pd.DataFrame(np.where(np.isfinite(values), values, np.nan)).rolling(window, min_periods=min_periods)
    expected = expected.mean().to_numpy().copy()
    expected[: window - 1] = np.nan  # a full window only
    np.testing.assert_allclose(features.rolling_mean(values, window, min_periods), expected, rtol=1e-12)
