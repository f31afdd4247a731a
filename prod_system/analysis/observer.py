"""The PnL real-time observer: reconcile runs with research and write a report next to their log dirs.

For a run whose log dir is ``{root}/{model}/{run_mode}/{trigger}/{start}.{end}/system_log_dir``, a
report goes to ``{start}.{end}/pnl_realtime_observer_notebook/{run_timestamp}/``:

    pnl_realtime_observer.html   the report: the executed observer notebook (plots inlined, code hidden
                                 unless ``observer.show_input``), the account, the DAG, both portfolios,
                                 their differences, costs, performance and the exchange's statement
    pnl_realtime_observer.ipynb  the same notebook, executed: open it in Jupyter to re-run or extend it
    summary.json         the machine-readable figures (pnl_correlation, max_abs_pnl_diff,
                         cumulative_pnl_prod, cumulative_pnl_research, first_divergence, timing,
                         performance: production's Sharpe, drawdown, fees, funding, ...; seconds and
                         notebook_seconds: the reconciliation's and the notebook's time)
    cumulative_pnl.png  holdings_difference.png  timing.png
    per_bar.parquet      per-bar PnL, volume, gmv of production and research
    side_by_side.parquet per bar and asset: targets, holdings, PnL, fees, funding of production next to research
    attribution.parquet  per bar and asset: the PnL gap split into execution, fees, funding, holdings, residual
    node_timing.csv      per DAG node: median / p95 / max ms, share of the DAG's time, peak memory
    bar_timing.parquet   per bar: each node's seconds, DAG seconds, decision and order delays
    exchange_statement.parquet  prod: the exchange's statement beside the portfolio, per bar

With ``observer.notebook: false`` the folder holds summary.json, the tables and the plots only. The
notebook (``prod_system/analysis/notebooks/pnl_realtime_observer.ipynb``) reads this folder; run by hand
with ``report_dir = None`` it finds the run under ``root`` and calls ``observe`` itself.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from prod_system.alerts import secret_names
from prod_system.analysis import notebooks, performance, plots
from prod_system.analysis.alerting import send_observer_alerts
from prod_system.analysis.reconciliation import Reconciliation, reconcile
from prod_system.analysis.statement import check_log_dir
from prod_system.common.files import write_atomically
from prod_system.common.timeutil import compact
from prod_system.config import SystemConfig, load_config
from prod_system.data.market_data import CandleStore
from prod_system.data.sources import load_funding, load_source
from prod_system.log_dir import LogDir
from prod_system.naming import model_folder

REPORT_FOLDER = "pnl_realtime_observer_notebook"
NOTEBOOK = "pnl_realtime_observer"  # prod_system/analysis/notebooks/{NOTEBOOK}.ipynb
REPORT_HTML = f"{NOTEBOOK}.html"  # the executed notebook's HTML: the report people open and S3 publishes
SUMMARY_JSON = "summary.json"


@dataclass(frozen=True)
class RunRef:
    """A system log dir found under a root, with what its path says about it."""

    log_dir: Path
    model: str
    run_mode: str
    trigger: str
    start: pd.Timestamp
    end: pd.Timestamp

    @property
    def window_dir(self) -> Path:
        return self.log_dir.parent


def _parse_window(name: str) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    begin, _, finish = name.partition(".")
    try:
        return (
            pd.to_datetime(begin, format="%Y%m%d_%H%M%S", utc=True),
            pd.to_datetime(finish, format="%Y%m%d_%H%M%S", utc=True),
        )
    except ValueError:
        return None


def find_runs(
    root: str | Path,
    model: str,
    run_mode: str | None = None,
    trigger: str | None = None,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> list[RunRef]:
    """The log dirs of ``model`` under ``root`` whose window overlaps [start, end), oldest first: finished
    runs and live sessions, not a run interrupted before its end (its next run replaces it)."""
    runs = []
    pattern = f"{model_folder(model)}/{run_mode or '*'}/{trigger or '*'}/*/system_log_dir"
    for path in Path(root).glob(pattern):
        window = _parse_window(path.parent.name)
        if window is None or not (path / "system_config.yaml").exists() or not LogDir(path).holds_run():
            continue
        first, last = window
        if (start is not None and last <= start) or (end is not None and first >= end):
            continue
        mode, trig = path.parts[-4], path.parts[-3]
        runs.append(RunRef(path, model, mode, trig, first, last))
    return sorted(runs, key=lambda run: (run.start, run.run_mode, run.trigger))


def latest_report(root: str | Path, model: str, run_mode: str | None = None) -> Path | None:
    """The most recently written report (the notebook's HTML) of ``model`` (of one run mode, or any)."""
    pattern = f"{model_folder(model)}/{run_mode or '*'}/*/*/{REPORT_FOLDER}/*/{REPORT_HTML}"
    reports = sorted(Path(root).glob(pattern), key=lambda path: path.parent.name)
    return reports[-1] if reports else None


def session_statistics(runs: list[RunRef]) -> pd.DataFrame:
    """The portfolio statistics of consecutive sessions as one table (a bar recorded by two sessions
    keeps the later session's row)."""
    frames = []
    for order, run in enumerate(runs):
        try:
            frames.append(LogDir(run.log_dir).read_table("portfolio/statistics").assign(_session=order))
        except FileNotFoundError:
            continue  # a session that has not finished its first bar
    if not frames:
        return pd.DataFrame(columns=["bar_end", "pnl", "net_wealth"])
    stats = pd.concat(frames, ignore_index=True).sort_values(["bar_end", "_session"])
    return stats.drop_duplicates("bar_end", keep="last").drop(columns="_session").reset_index(drop=True)


@dataclass
class ObserverReport:
    directory: Path
    summary: dict
    reconciliation: Reconciliation
    config: SystemConfig
    performance: performance.Performance  # production's, over the reconciled bars

    @property
    def html(self) -> Path:
        """The executed notebook's HTML (absent when the notebook was not executed)."""
        return self.directory / REPORT_HTML

    @property
    def path(self) -> Path:
        """What to open: the notebook's HTML, or summary.json when the notebook was not executed."""
        return self.html if self.html.exists() else self.directory / SUMMARY_JSON

    @property
    def plot(self) -> Path:
        return self.directory / "cumulative_pnl.png"


def observe(
    log_dir: str | Path,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    market_data: str | None = None,
    now: pd.Timestamp | None = None,
    holdings_tolerance: float = 10.0,
    pnl_tolerance: float = 1.0,
    store: CandleStore | None = None,
    notebook: bool | None = None,
    show_input: bool | None = None,
) -> ObserverReport:
    """Reconcile one run (over the bars ending in (start, end]) and write its report folder.

    ``market_data`` overrides the source saved in the run's config (``store``, already loaded
    candles of that source, saves reading it again); ``now`` (UTC) names the report folder and
    defaults to the wall clock. ``notebook`` and ``show_input`` override the run's ``observer``
    config: execute the observer notebook into the folder (its HTML is the report), code cells shown.
    A failing cell raises ``NotebookError`` (one line; the partial .ipynb stays in the folder).
    """
    began = time.perf_counter()
    logs = LogDir(log_dir)
    overrides = {"market_data": {"source": market_data}} if market_data else {}
    config = load_config(logs.path / "system_config.yaml", **overrides)
    if store is None:  # the run's window (a bar before its start: its first bar's prices), not a year of it
        window = (config.start - config.bar_delta, config.end)
        data = config.market_data
        candles = load_source(data.source, config.universe, data.delay, window)
        funding = load_funding(data.source, config.universe, data.delay, window)  # research pays what the run paid
        store = CandleStore(candles, config.universe, funding=funding)
    result = reconcile(config, logs, store, start, end, holdings_tolerance, pnl_tolerance)
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    directory = logs.path.parent / REPORT_FOLDER / compact(now)
    directory.mkdir(parents=True, exist_ok=True)
    window = result.per_bar["bar_end"]
    figures = production_performance(logs, config.bar_delta, window.iloc[0], window.iloc[-1])
    summary = {
        **result.summary.to_dict(),
        "verdict": result.summary.verdict(),
        "model": config.model,
        "run_mode": config.run_mode,
        "trigger": config.trigger,
        "run_id": config.run_id,
        "log_dir": str(logs.path),
        "first_bar_end": window.iloc[0].isoformat(),
        "last_bar_end": window.iloc[-1].isoformat(),
        "generated_at": now.isoformat(),
        "tolerances_usdt": {"holdings_and_targets": holdings_tolerance, "pnl": pnl_tolerance},
        "timing": result.timing,
        "performance": figures.to_dict(),
    }
    statement = check_log_dir(logs.path, config.costs.fees.taker, config.bar_delta)  # portfolio vs exchange
    summary["exchange_statement"] = statement.to_dict()
    if statement.available:
        statement.per_bar.to_parquet(directory / "exchange_statement.parquet", index=False)
    report = ObserverReport(directory, summary, result, config, figures)
    _write(report)
    summary["seconds"] = round(time.perf_counter() - began, 4)
    _write_json(directory / SUMMARY_JSON, summary)
    send_observer_alerts(summary, config)  # a divergence from research, a threshold crossed (analysis/alerting.py)
    if config.observer.notebook if notebook is None else notebook:
        shown = config.observer.show_input if show_input is None else show_input
        parameters = notebook_parameters(config, logs, start, end, directory)
        executed = notebooks.execute(NOTEBOOK, directory, parameters, shown, hidden_env=secret_names(config))
        summary["notebook_seconds"] = executed.seconds
        _write_json(directory / SUMMARY_JSON, summary)
    return report


def notebook_parameters(
    config: SystemConfig, logs: LogDir, start: pd.Timestamp | None, end: pd.Timestamp | None, report_dir: Path | None
) -> dict:
    """The observer notebook's parameters for the run in ``logs`` (``{root}/{model folder}/{run_mode}/
    {trigger}/{window}/system_log_dir``): what a quant gives by hand (``root`` absolute), and the folder
    observe() wrote as ``"."``: the kernel's working directory is the report folder, so a copied or moved
    report folder (with its window folder) re-runs from where it is."""
    path = logs.path.resolve()
    model_dir, run_mode, trigger = path.parents[3], path.parts[-4], path.parts[-3]
    return {
        "model": config.model,
        "start": None if start is None else start.isoformat(),
        "end": None if end is None else end.isoformat(),
        "root": str(model_dir.parent),
        "run_mode": run_mode,
        "trigger": trigger,
        "report_dir": None if report_dir is None else ".",  # the kernel runs in the report folder
    }


def production_performance(
    logs: LogDir, bar: pd.Timedelta, first: pd.Timestamp, last: pd.Timestamp
) -> performance.Performance:
    """The performance figures of the run's own statistics over the reconciled bars ``[first, last]``."""
    stats = logs.read_table("portfolio/statistics")
    return performance.compute(stats[(stats["bar_end"] >= first) & (stats["bar_end"] <= last)], bar)


def _clean(value):
    """JSON without NaN (which is not JSON): NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    return value


def _write_json(path: Path, data: dict) -> None:
    text = json.dumps(_clean(data), indent=2, default=str, allow_nan=False) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text))


def _write(report: ObserverReport) -> None:
    """The report folder's figures (PNG) and tables: what the notebook, summary.json's readers and the
    Dagster previews read."""
    result, config, directory = report.reconciliation, report.config, report.directory
    name = f"{config.model} {config.run_mode}"
    pngs = {
        "cumulative_pnl.png": plots.cumulative_pnl_prod_vs_research(
            result.per_bar, f"{name}: cumulative PnL, production vs research"
        ),
        "holdings_difference.png": plots.holdings_difference(
            result.side_by_side, f"{name}: holdings difference per asset, production - research"
        ),
        "timing.png": plots.timing(result.bar_timing, list(result.node_timing["node"]), f"{name}: execution time"),
    }
    for file, data in pngs.items():
        (directory / file).write_bytes(data)
    result.per_bar.to_parquet(directory / "per_bar.parquet", index=False)
    result.side_by_side.to_parquet(directory / "side_by_side.parquet", index=False)
    result.attribution.to_parquet(directory / "attribution.parquet", index=False)
    result.bar_timing.to_parquet(directory / "bar_timing.parquet", index=False)
    result.node_timing.to_csv(directory / "node_timing.csv", index=False)
