"""What investors see of a model: its historical simulation on disk and the four windows of its cumulative PnL.

- ``since_2019``, ``since_2022``: the latest historical simulation (``{root}/{model}/historical_pnl/{start}.{end}/``,
  written by ``runs.historical``) from the window's date, with a note when the market data starts later;
- ``last_24hours``: the live sessions of the investor run mode, the trailing 24 hours up to their last bar;
- ``last_5minutes``: the current (latest) live session.

Each window is one function here (``history_since``, ``last_24hours``, ``current_session``; ``investor_window``
picks one by name) returning an ``InvestorWindow``: the window's statistics with its title, source line, plot
and performance figures. The Dagster assets (``defs/publishing.py``) publish them to S3; the notebook
``historical_pnl_for_investors`` shows them, one call per cell (``introduction``, ``historical_section``,
``window_section``). A window with nothing to show raises ``NoInvestorDataError`` (for the operator: it names
the root); the notebook, which investors read, says "not available yet" instead and shows no path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from prod_system.analysis import performance, plots
from prod_system.analysis.observer import find_runs, session_statistics
from prod_system.config import load_config
from prod_system.errors import ConfigError, NoInvestorDataError
from prod_system.log_dir import LogDir
from prod_system.naming import INVESTOR_NOTEBOOK, model_folder

HISTORICAL_FOLDER = "historical_pnl"
HISTORICAL_WINDOWS = {
    "since_2019": pd.Timestamp("2019-01-01", tz="UTC"),
    "since_2022": pd.Timestamp("2022-01-01", tz="UTC"),
}
LIVE_WINDOWS = ("last_24hours", "last_5minutes")
WINDOWS = (*HISTORICAL_WINDOWS, *LIVE_WINDOWS)
NOT_AVAILABLE = "not available yet"  # what investors read for a window without data


@dataclass(frozen=True)
class Text:
    """Markdown a notebook cell displays (IPython's display protocol: no IPython imported here)."""

    markdown: str

    def _repr_markdown_(self) -> str:
        return self.markdown


@dataclass(frozen=True)
class Plot:
    """A PNG a notebook cell displays, with its alternative text."""

    png: bytes
    alt: str

    def _repr_png_(self) -> tuple[bytes, dict]:
        return self.png, {"alt": self.alt}


@dataclass(frozen=True)
class InvestorWindow:
    """One investor window: the portfolio statistics of its bars (indexed by bar end) and how to show them."""

    statistics: pd.DataFrame
    bar: pd.Timedelta
    title: str
    source: str  # where the bars come from and their span, printed under the plot

    @property
    def cumulative(self) -> pd.Series:
        return self.statistics["pnl"].cumsum()

    def plot(self) -> bytes:
        """The cumulative PnL in $ (PNG)."""
        return plots.investor_cumulative_pnl(self.cumulative, self.title, self.source)

    def performance(self) -> performance.Performance:
        return performance.compute(self.statistics.reset_index(), self.bar)

    def markdown(self, figures: performance.Performance | None = None, level: int = 1) -> str:
        """The window's performance figures as a Markdown page: its title (a heading of ``level``), source
        and table."""
        figures = self.performance() if figures is None else figures
        return "\n".join([f"{'#' * level} {self.title}", "", self.source, "", *performance.markdown(figures), ""])


def historical_runs(root: str | Path, model_name: str) -> list[Path]:
    """The finished historical simulations of a model under ``root``, the most recently written last."""
    parent = Path(root) / model_folder(model_name) / HISTORICAL_FOLDER
    folders = [p for p in parent.glob("*.*") if (p / "run.json").exists()]
    return sorted(folders, key=lambda p: (p / "run.json").stat().st_mtime)


def read_statistics(directory: str | Path) -> pd.DataFrame:
    """The research portfolio's statistics of a historical simulation."""
    return LogDir(directory).read_table("portfolio/statistics").sort_values("bar_end", ignore_index=True)


def run_bar(directory: str | Path) -> pd.Timedelta:
    """The bar length of a run, from the config saved in its directory."""
    return load_config(Path(directory) / "system_config.yaml").bar_delta


def latest_historical_run(root: str | Path, model: str) -> Path:
    """The directory of the latest historical simulation of ``model`` under ``root``."""
    runs = historical_runs(root, model)
    if not runs:
        raise NoInvestorDataError(f"no historical simulation of {model} under {root}: materialize it first")
    return runs[-1]


@dataclass(frozen=True)
class HistoricalSummary:
    """The latest historical simulation in a few figures (from its run.json and statistics)."""

    directory: Path
    bars: int
    first_bar_end: pd.Timestamp
    last_bar_end: pd.Timestamp
    pnl: float  # net of costs, USDT
    seconds: float  # what the simulation took

    def rows(self) -> list[tuple[str, str]]:
        """The figures investors see (not the directory: it stays in the operator's metadata)."""
        return [
            ("bars", f"{self.bars:,}"),
            ("window (bar ends, UTC)", f"{self.first_bar_end:%Y-%m-%d %H:%M} to {self.last_bar_end:%Y-%m-%d %H:%M}"),
            ("PnL (net of costs)", f"{self.pnl:,.2f} USDT"),
            ("seconds", f"{self.seconds:,.2f}"),
        ]


def historical_summary(root: str | Path, model: str) -> HistoricalSummary:
    directory = latest_historical_run(root, model)
    run = json.loads((directory / "run.json").read_text())
    stats = read_statistics(directory)
    if stats.empty:
        raise NoInvestorDataError(f"the historical simulation {directory} has no bar")
    return HistoricalSummary(
        directory,
        len(stats),
        stats["bar_end"].iloc[0],
        stats["bar_end"].iloc[-1],
        float(stats["pnl"].sum()),
        float(run["seconds"]),
    )


def introduction(model: str, run_mode: str, windows: list[str]) -> Text:
    """The notebook's first line: the model, the live sessions' mode and the windows shown."""
    return Text(f"Model **{model}**, live sessions of **{run_mode}**; windows: {', '.join(windows)}.")


def historical_section(root: str | Path, model: str) -> Text:
    """The latest historical simulation in a table of figures, or "not available yet"."""
    try:
        rows = historical_summary(root, model).rows()
    except NoInvestorDataError:
        return Text(f"*The historical simulation: {NOT_AVAILABLE}.*")
    return Text("\n".join(["| figure | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]))


def window_section(root: str | Path, model: str, window: str, run_mode: str, windows: list[str]) -> list:
    """What the notebook shows of ``window``: its title, its cumulative PnL plot and its figures
    (``InvestorWindow.markdown``), or one line when it was not asked for or has no data yet."""
    if window not in windows:
        return [Text(f"*{window}: not among the windows asked for.*")]
    try:
        view = investor_window(root, model, window, run_mode)
    except NoInvestorDataError:
        return [Text(f"*{window}: {NOT_AVAILABLE}.*")]
    return [Text(view.markdown(level=3)), Plot(view.plot(), f"{view.title}: cumulative PnL in USDT, {view.source}")]


def history_since(root: str | Path, model: str, since: pd.Timestamp) -> InvestorWindow:
    """The latest historical simulation's bars after ``since``; the title notes a later start of the market data."""
    directory = latest_historical_run(root, model)
    stats = read_statistics(directory).set_index("bar_end")
    stats = stats[stats.index > since]
    if stats.empty:
        raise NoInvestorDataError(f"the historical simulation of {model} has no bar after {since}")
    first, last = stats.index[0], stats.index[-1]
    note = "" if first <= since + pd.Timedelta(days=1) else f" (market data from {first:%Y-%m-%d})"
    title = f"{model}: cumulative PnL since {since:%Y-%m-%d}{note}"
    source = f"historical simulation, bars ending {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC"
    return InvestorWindow(stats, run_bar(directory), title, source)


def _live(root: str | Path, model: str, run_mode: str, current: bool) -> InvestorWindow:
    runs = find_runs(root, model, run_mode)
    if current:
        runs = runs[-1:]
    stats = session_statistics(runs)
    if stats.empty:
        raise NoInvestorDataError(f"no {run_mode} session of {model} under {root} has recorded a bar yet")
    stats = stats.set_index("bar_end")
    if current:
        title = f"{model}: cumulative PnL of the current session ({run_mode})"
    else:
        stats = stats[stats.index > stats.index[-1] - pd.Timedelta(hours=24)]
        title = f"{model}: cumulative PnL over the last 24 hours ({run_mode})"
    source = f"live {run_mode}, bars ending {stats.index[0]:%Y-%m-%d %H:%M} to {stats.index[-1]:%Y-%m-%d %H:%M} UTC"
    return InvestorWindow(stats, run_bar(runs[-1].log_dir), title, source)


def last_24hours(root: str | Path, model: str, run_mode: str) -> InvestorWindow:
    """The live sessions of ``run_mode``, the 24 hours up to their last recorded bar (across sessions)."""
    return _live(root, model, run_mode, current=False)


def current_session(root: str | Path, model: str, run_mode: str) -> InvestorWindow:
    """The latest live session of ``run_mode``, from its first bar to its last recorded one."""
    return _live(root, model, run_mode, current=True)


def investor_window(root: str | Path, model: str, window: str, run_mode: str) -> InvestorWindow:
    """The window named ``window`` (one of ``WINDOWS``); ``run_mode`` is the live sessions' mode."""
    if window in HISTORICAL_WINDOWS:
        return history_since(root, model, HISTORICAL_WINDOWS[window])
    if window == "last_24hours":
        return last_24hours(root, model, run_mode)
    if window == "last_5minutes":
        return current_session(root, model, run_mode)
    raise ConfigError(f"windows: unknown investor window {window!r}; the windows are {', '.join(WINDOWS)}")


def check_windows(windows: Iterable[str] | None) -> list[str]:
    """The windows asked for, in their order (None: all four); an unknown one is a ConfigError naming it."""
    if windows is None:
        return list(WINDOWS)
    if isinstance(windows, str):
        windows = [windows]
    unknown = [w for w in windows if w not in WINDOWS]
    if unknown:
        raise ConfigError(f"windows: unknown investor window {unknown[0]!r}; the windows are {', '.join(WINDOWS)}")
    return list(windows)


def notebook_parameters(root: str | Path, model: str, run_mode: str, windows: list[str] | None = None) -> dict:
    """The notebook's parameters, ``root`` made absolute: the kernel runs in the notebook's output folder."""
    listed = {} if windows is None else {"windows": check_windows(windows)}
    return {"model": model, "root": str(Path(root).resolve()), "run_mode": run_mode, **listed}


def notebook_directory(root: str | Path, model: str, stamp: str) -> Path:
    """Where the investor notebook of a run goes (absolute: the operator's metadata shows it):
    ``historical_pnl_for_investors/{stamp}/`` in the latest historical simulation's folder, or under the
    model's folder when there is none yet."""
    runs = historical_runs(Path(root).resolve(), model)
    parent = runs[-1] if runs else Path(root).resolve() / model_folder(model)
    return parent / INVESTOR_NOTEBOOK / stamp
