"""A model outside the package, loaded by its import path ('prod_system_tests.kit.models:build_dag'):
its log dirs are named after its folder (dots) and its Dagster names after its slug (underscores).

Built like C1b: volatility-normalised mean reversion of the last bar's return, a small window so
that a short session trades.
"""

from __future__ import annotations

from functools import partial

import pandas as pd

from prod_system.models import features
from prod_system.models.dag import Dag, Node

IMPORT_PATH = "prod_system_tests.kit.models:build_dag"


def _prediction(z: pd.DataFrame, volatility: pd.DataFrame, kappa: float) -> pd.DataFrame:
    return -kappa * z * volatility


def build_dag(bar: pd.Timedelta, vol_window: int = 12, kappa: float = 0.1) -> Dag:
    nodes = [
        *features.volatility_adjusted_return_nodes(bar, vol_window, clip=4.0),
        Node("prediction", partial(_prediction, kappa=kappa), ("zscore", "volatility"), "expected next-bar log return"),
    ]
    return Dag(name="kit_reversion", bar=bar, nodes=nodes, lookback_bars=vol_window + 4)
