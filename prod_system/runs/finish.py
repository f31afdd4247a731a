"""The end of every run that writes a log dir (core simulation, Dagster simulation, historical): its
summary, its PnL report and ``run.json``, written last (a log dir holds a finished run once it exists)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import pandas as pd

from prod_system.analysis import performance
from prod_system.analysis.report import write_pnl_report
from prod_system.config import SystemConfig
from prod_system.log_dir import LogDir

logger = logging.getLogger("prod_system")


@dataclass
class RunSummary:
    log_dir: str
    bars: int
    pnl: float  # net of costs: gross_pnl - fees + funding
    gross_volume: float
    turnover: float
    final_net_wealth: float
    seconds: float
    dagster_run_id: str | None = None
    reconciliation: str | None = None  # the observer's verdict: production vs research
    report: str | None = None  # its HTML report
    performance: dict = field(default_factory=dict)  # analysis.performance figures (JSON-safe)
    gross_pnl: float = 0.0  # before fees and funding
    fees: float = 0.0
    funding: float = 0.0
    funding_assumed: bool = False  # some settlement used the config's assumed rate, not market data

    def lines(self) -> list[str]:
        run = [f"dagster run: {self.dagster_run_id}"] if self.dagster_run_id else []
        observer = [f"research:    {self.reconciliation}", f"report:      {self.report}"] if self.report else []
        return [
            *run,
            f"log dir:     {self.log_dir}",
            f"bars:        {self.bars}",
            f"pnl:         {self.pnl:,.2f} USDT net of costs: gross {self.gross_pnl:,.2f}, "
            f"fees {0.0 - self.fees:,.2f}, funding {self.funding:,.2f}{' (assumed rate)' * self.funding_assumed}",
            *self._risk(),
            f"turnover:    {self.turnover:.2f}x mean gmv ({self.gross_volume:,.0f} USDT traded)",
            f"net wealth:  {self.final_net_wealth:,.2f} USDT",
            *observer,
            f"seconds:     {self.seconds:.2f}",
        ]

    def _risk(self) -> list[str]:
        """Sharpe and max drawdown of the net PnL, once the performance figures are in."""
        figures = self.performance
        if not figures:
            return []
        sharpe = "n/a" if figures.get("sharpe") is None else f"{figures['sharpe']:.2f}"
        return [f"sharpe:      {sharpe} (net, annualised); max drawdown {figures['max_drawdown']:,.2f} USDT"]


def summarize(log_dir: str, statistics: pd.DataFrame, seconds: float, bar: pd.Timedelta | None = None) -> RunSummary:
    """The run's figures from its statistics; with the ``bar`` length, its performance figures too."""
    gross = float(statistics["gross_volume"].sum())
    mean_gmv = float(statistics["gmv"].mean()) if len(statistics) else 0.0
    fees = float(statistics["fees"].sum())
    funding = float(statistics["funding"].sum()) if "funding" in statistics else 0.0
    return RunSummary(
        log_dir=str(log_dir),
        bars=len(statistics),
        pnl=float(statistics["pnl"].sum()),
        gross_volume=gross,
        turnover=gross / mean_gmv if mean_gmv > 0 else 0.0,
        final_net_wealth=float(statistics["net_wealth"].iloc[-1]) if len(statistics) else float("nan"),
        seconds=seconds,
        gross_pnl=float(statistics["pnl"].sum()) + fees - funding,
        fees=fees,
        funding=funding,
        funding_assumed=bool("funding_assumed" in statistics and statistics["funding_assumed"].sum() > 0),
        performance=performance.compute(statistics, bar).to_dict() if bar is not None and len(statistics) else {},
    )


def finish_run(
    log_dir: LogDir,
    config: SystemConfig,
    statistics: pd.DataFrame,
    began: float,
    engine: str,
    kind: str | None = None,
    dagster_run_id: str | None = None,
) -> RunSummary:
    """Summarize the run, write its PnL report, then ``run.json`` (last), and log the summary.

    ``began`` is the run's ``time.perf_counter()`` at its start; ``kind`` names the run in the report's
    title (the run mode by default); ``engine`` is recorded in ``run.json`` (core, dagster, historical)."""
    summary = summarize(str(log_dir.path), statistics, time.perf_counter() - began)
    summary.dagster_run_id = dagster_run_id
    figures = performance.compute(statistics, config.bar_delta)
    summary.performance = figures.to_dict()
    write_pnl_report(
        log_dir,
        f"{config.model} {kind or config.run_mode}: {config.start:%Y-%m-%d %H:%M} to {config.end:%Y-%m-%d %H:%M} UTC",
        figures,
    )
    log_dir.write_json("run.json", {"run_id": config.run_id, "engine": engine, **summary.__dict__})
    logger.info("done: %s", "; ".join(summary.lines()))
    return summary
