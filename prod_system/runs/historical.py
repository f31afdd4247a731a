"""The historical simulation: a model in batch over a long history, traded by the research portfolio.

No clock replay and no broker: the model is evaluated over the history in chunks (each with the
model's warm-up in front, so a chunk's first bars see what streaming would have shown them), and
the research portfolio trades the predictions vectorised. Months of 5-minute bars take seconds.
The result goes to ``{root}/{model}/historical_pnl/{start}.{end}/`` with the log dir's table layout (read back by
``analysis.investor``: ``historical_runs``, ``read_statistics``):

    system_config.yaml  run.json  predictions/  target_positions/  portfolio/...  pnl_report.{png,md}
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from prod_system.analysis.investor import HISTORICAL_FOLDER
from prod_system.analysis.research import research_portfolio
from prod_system.common.timeutil import bar_ends, compact
from prod_system.config import SystemConfig
from prod_system.data.instruments import LOG_DIR_FILE, resolve_instruments
from prod_system.data.market_data import CandleStore
from prod_system.errors import MarketDataError
from prod_system.log_dir import LogDir
from prod_system.models.dag import load_model, run_batch
from prod_system.runs.finish import finish_run, summarize
from prod_system.runs.stages import Progress, in_the_days_universe, load_store, predictions_table

logger = logging.getLogger(__name__)

CHUNK = pd.Timedelta(days=7)


def historical_dir(config: SystemConfig) -> Path:
    return (
        Path(config.log_root) / config.model_name / HISTORICAL_FOLDER / f"{compact(config.start)}.{compact(config.end)}"
    )


@dataclass
class HistoricalResult:
    directory: Path
    statistics: pd.DataFrame
    seconds: float

    def lines(self) -> list[str]:
        summary = summarize(str(self.directory), self.statistics, self.seconds)
        return summary.lines()


def historical_pnl(
    config: SystemConfig, overwrite: bool = False, progress: Progress | None = None, chunk: pd.Timedelta = CHUNK
) -> HistoricalResult:
    """Evaluate the model over the config's window in batch and write the research portfolio."""
    began = time.perf_counter()
    config, instruments = resolve_instruments(config)  # an asset without exchange rules: refused here
    dag = load_model(config.model, config.bar_delta, config.model_params)
    out = LogDir(historical_dir(config))
    out.check_free(overwrite)
    store = load_store(config, dag)  # bad market data fails here, before anything is written
    bars = bar_ends(config.start, config.end, config.bar_delta)
    known = max(store.last_knowledge_ts, bars[-1])  # the past is known whole
    per_chunk = max(1, chunk // config.bar_delta)
    predictions = []
    for first in range(0, len(bars), per_chunk):
        chunk_bars = bars[first : first + per_chunk]
        candles = store.visible(known, chunk_bars[0] - dag.lookback, until=chunk_bars[-1])
        predictions.append(predictions_table(dag, run_batch(dag, candles, chunk_bars)))
        if progress:
            progress("model", first + len(chunk_bars), len(bars))
    predictions = in_the_days_universe(config, pd.concat(predictions, ignore_index=True))
    research = research_portfolio(config, predictions, store, bars)
    if progress:
        progress("research", len(bars), len(bars))
    out.prepare(config, overwrite=overwrite)
    instruments.write(out.path / LOG_DIR_FILE)  # the rules the research sized with
    out.write_table("predictions", predictions, bars[0])
    for name, frame in research.items():
        out.write_table(name, frame, bars[0])
    summary = finish_run(
        out, config, research["portfolio/statistics"], began, engine="historical", kind="historical simulation"
    )
    return HistoricalResult(out.path, research["portfolio/statistics"], summary.seconds)


def history_window(
    store: CandleStore, bar: pd.Timedelta, since: pd.Timestamp, until: pd.Timestamp | None = None
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The bars of ``[since, until)`` that the market data covers (whole bars only)."""
    first = max(since, (store.first_bar_end - store.interval).ceil(bar))
    last = store.last_bar_end.floor(bar) if until is None else min(until, store.last_bar_end).floor(bar)
    if last <= first:
        raise MarketDataError(
            f"the market data ({store.first_bar_end} to {store.last_bar_end}) has no bar after {since}"
        )
    return first, last
