"""Research portfolio speed: the vectorised portfolio over a long window (default 28 days x 8 assets).

Uses the full candle files of a folder in the bundled format (the bundled 9 days, or a longer
download): predictions from a batch evaluation of the model, then the research portfolio, timed
alone (median of repeats).

    python benchmarks/research_speed.py [--candles DIR] [--days 28] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd

from prod_system.core.config import build_config
from prod_system.core.dag import load_model, run_batch
from prod_system.core.market_data import CandleStore, load_source
from prod_system.core.research import research_portfolio
from prod_system.core.simulation import predictions_table
from prod_system.core.timeutil import bar_ends

BUNDLED = Path(__file__).resolve().parents[1] / "prod_system" / "data" / "binance_futures_1m"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", default=str(BUNDLED))
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model", default="C3a")
    options = parser.parse_args()
    start = pd.Timestamp("2023-07-20T00:00:00Z")
    end = start + pd.Timedelta(days=options.days)
    universe = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "DOT", "MATIC"]
    store = CandleStore(load_source(f"csv:{options.candles}", universe, pd.Timedelta(seconds=10)), universe)
    end = min(end, store.last_bar_end.floor("1D"))
    config = build_config(
        {"model": options.model, "start": start, "end": end, "market_data": {"source": f"csv:{options.candles}"}}
    )
    dag = load_model(config.model, config.bar_delta)
    bars = bar_ends(config.start, config.end, config.bar_delta)
    began = time.perf_counter()
    history = store.visible(end + pd.Timedelta(minutes=1), store.first_bar_end - pd.Timedelta(minutes=1))
    predictions = predictions_table(dag, run_batch(dag, history, bars))
    model_seconds = time.perf_counter() - began
    times = []
    for _ in range(options.repeats):
        began = time.perf_counter()
        research_portfolio(config, predictions, store, bars)
        times.append(time.perf_counter() - began)
    print(
        f"{options.model}: {len(bars)} bars x {len(universe)} assets ({(end - start).days} days): research portfolio "
        f"median {statistics.median(times):.3f} s over {options.repeats} runs (batch model {model_seconds:.2f} s)"
    )


if __name__ == "__main__":
    main()
