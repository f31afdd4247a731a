"""Research and reconciliation speed, against the simulation of the same window.

Over a long window of a candle folder in the bundled format (the bundled 9 days, or a longer
download), in one process, medians of repeats:
- the research portfolio alone (vectorised), from batch predictions;
- the historical simulation end to end (batch model in chunks + research portfolio + files);
- the simulation of the same window (pure core: streaming model, sizing, mocked broker, log dir);
- the reconciliation (observer report) of one simulated day.

    python benchmarks/research_speed.py [--candles DIR] [--start 2023-07-19] [--days 28] [--repeats 5]
        [--research-only]

The research portfolio is timed with the default costs (fees, funding at the assumed rate) and with
none (fees 0, funding off), to show what the costs add.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from prod_system.analysis.observer import observe
from prod_system.analysis.research import research_portfolio
from prod_system.common.timeutil import bar_ends
from prod_system.config import build_config
from prod_system.data.market_data import CandleStore, write_snapshot
from prod_system.data.sources import load_source
from prod_system.models.dag import load_model, run_batch
from prod_system.runs.historical import historical_pnl
from prod_system.runs.simulate import simulate
from prod_system.runs.stages import predictions_table

BUNDLED = Path(__file__).resolve().parents[1] / "prod_system" / "data" / "binance_futures_1m"
UNIVERSE = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "DOT", "MATIC"]


def timed(repeats: int, work) -> list[float]:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", default=str(BUNDLED))
    parser.add_argument("--start", default="2023-07-19T00:00:00Z")
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--simulation-repeats", type=int, default=1, help="the long simulation is slow")
    parser.add_argument("--model", default="C3a")
    parser.add_argument("--research-only", action="store_true", help="time the research portfolio alone")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="research_speed_"))
    candles = load_source(f"csv:{options.candles}", UNIVERSE, pd.Timedelta(seconds=10))
    snapshot = write_snapshot(candles, work / "snapshot.parquet")
    store = CandleStore(candles, UNIVERSE)
    start = pd.Timestamp(options.start)
    end = min(start + pd.Timedelta(days=options.days), store.last_bar_end.floor("1D"))
    days = (end - start) / pd.Timedelta(days=1)

    def config(**overrides):
        data = {"model": options.model, "start": start, "end": end, "market_data": {"source": f"parquet:{snapshot}"}}
        return build_config({**data, "log_root": str(work / "runs"), **overrides})

    base = config()
    dag = load_model(base.model, base.bar_delta)
    bars = bar_ends(base.start, base.end, base.bar_delta)
    history = store.visible(store.last_knowledge_ts, store.first_bar_end - pd.Timedelta(minutes=1))
    predictions = predictions_table(dag, run_batch(dag, history, bars))
    research = timed(options.repeats, lambda: research_portfolio(base, predictions, store, bars))
    free = config(costs={"fees": {"taker": 0.0, "maker": 0.0}, "funding": {"mode": "off"}})
    without_costs = timed(options.repeats, lambda: research_portfolio(free, predictions, store, bars))
    print(f"{options.model}, {len(bars):,} bars x {len(UNIVERSE)} assets ({days:g} days from {start:%Y-%m-%d}):")
    print(
        f"  research portfolio          median {statistics.median(research):7.3f} s  ({options.repeats} runs, "
        f"default costs; {statistics.median(without_costs):.3f} s without costs)"
    )
    if options.research_only:
        return
    historical = timed(options.repeats, lambda: historical_pnl(base, overwrite=True))
    simulation = timed(options.simulation_repeats, lambda: simulate(base, overwrite=True))
    day = config(start=end - pd.Timedelta(days=1))
    simulate(day, overwrite=True)
    reconciliation = timed(options.repeats, lambda: observe(day.log_dir(), store=store))
    reconciliation_with_load = timed(options.repeats, lambda: observe(day.log_dir()))

    research_s, historical_s = statistics.median(research), statistics.median(historical)
    simulation_s = statistics.median(simulation)
    print(f"  historical simulation       median {historical_s:7.3f} s  (batch model + research + files)")
    print(f"  simulation, same window     median {simulation_s:7.3f} s  ({options.simulation_repeats} runs, pure core)")
    print(f"  simulation / research       {simulation_s / research_s:7.0f}x")
    print(f"  simulation / historical     {simulation_s / historical_s:7.1f}x")
    print(
        f"  reconciliation of one day   median {statistics.median(reconciliation):7.3f} s "
        f"(report written; {statistics.median(reconciliation_with_load):.3f} s reading the snapshot too)"
    )


if __name__ == "__main__":
    main()
