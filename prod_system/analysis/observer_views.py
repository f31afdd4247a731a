"""What the observer notebook shows, section by section: tables (DataFrames), figures (PNG bytes) and
one-line texts, computed from a report folder that ``observe`` wrote and the run's log dir.

The notebook (``analysis/notebooks/pnl_realtime_observer.ipynb``) only calls these functions and
displays what they return, so the report's logic is tested here and a quant extends the notebook with
the same calls. ``open_run`` is its first call: the folder ``observe`` just wrote, or (a notebook run by
hand, ``report_dir=None``) the latest run of the model under ``root``, reconciled on the spot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from prod_system.analysis import performance, plots
from prod_system.analysis.observer import SUMMARY_JSON, find_runs, observe, production_performance
from prod_system.analysis.statement import last_account, last_statistics
from prod_system.config import SystemConfig, load_config
from prod_system.errors import ReconciliationError
from prod_system.log_dir import LogDir

GAP_PARTS = ("gap", "execution", "fees", "funding", "holdings", "residual")
LOG_DIR = "system_log_dir"  # the run's log dir, in the window folder that holds the report folders


@dataclass(frozen=True)
class ObservedRun:
    """A report folder and the run it reconciled."""

    directory: Path  # {window}/pnl_realtime_observer_notebook/{run_timestamp}
    summary: dict  # its summary.json
    config: SystemConfig  # the run's system config
    logs: LogDir  # the run's log dir

    def table(self, name: str) -> pd.DataFrame:
        """A table of the report folder: per_bar, side_by_side, attribution, bar_timing,
        exchange_statement (parquet) or node_timing (csv)."""
        csv = self.directory / f"{name}.csv"
        return pd.read_csv(csv) if csv.exists() else pd.read_parquet(self.directory / f"{name}.parquet")

    def png(self, name: str) -> bytes:
        """A plot ``observe`` wrote into the folder (cumulative_pnl, holdings_difference, timing)."""
        return (self.directory / f"{name}.png").read_bytes()

    @property
    def title(self) -> str:
        return f"{self.config.model} {self.config.run_mode} ({self.config.trigger})"


def open_run(
    report_dir: str | Path | None,
    root: str | Path | None = None,
    model: str | None = None,
    run_mode: str | None = None,
    trigger: str | None = None,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> ObservedRun:
    """The report folder ``report_dir``; None: reconcile the latest run of ``model`` under ``root`` (of
    ``run_mode`` and ``trigger`` if given) over the bars ending in (start, end] into a new folder first."""
    if report_dir is None:
        if root is None or model is None:
            raise ReconciliationError("give report_dir, or root and model to find the run")
        begin, finish = (None if t is None else pd.Timestamp(t) for t in (start, end))
        runs = find_runs(root, model, run_mode, trigger, begin, finish)
        if not runs:
            raise ReconciliationError(f"no run of {model} under {root} (run_mode {run_mode}, trigger {trigger})")
        report_dir = observe(runs[-1].log_dir, begin, finish, notebook=False).directory
    directory = Path(report_dir).resolve()  # "." (observe's): the kernel's working directory, the folder
    summary = json.loads((directory / SUMMARY_JSON).read_text())
    logs = LogDir(directory.parents[1] / LOG_DIR)  # {window}/{REPORT_FOLDER}/{run_timestamp}: beside the log dir
    return ObservedRun(directory, summary, load_config(logs.path / "system_config.yaml"), logs)


def tables_without_index(shell) -> None:
    """The notebook's tables shown without their index (a row number, meaningless here): ``shell`` is the
    kernel's IPython, ``get_ipython()``."""
    html = shell.display_formatter.formatters["text/html"]
    html.for_type(pd.DataFrame, lambda frame: frame.to_html(index=False, notebook=True))


def parameters(**values) -> pd.DataFrame:
    """The notebook's parameters as a two-column table."""
    return pd.DataFrame({"parameter": list(values), "value": [str(v) for v in values.values()]})


def system_config(run: ObservedRun) -> str:
    """The run's system config as the run saved it (YAML; secrets are never in it, only the names of
    the environment variables holding them)."""
    return (run.logs.path / "system_config.yaml").read_text()


def account_now(run: ObservedRun) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The account as last recorded, each figure with its source and time, and the open positions.

    ``exchange`` rows (prod): the exchange's balances as the session last fetched them
    (``statement.last_account``, at its fetch time); ``portfolio`` rows: the portfolio's net wealth,
    cash, gross and net market value and leverage at its last bar (``statement.last_statistics``), and
    the positions it holds then (which the exchange statement checks in prod)."""
    last = last_statistics(run.logs)
    bar_end = f"last bar, ending {last['bar_end']:%Y-%m-%d %H:%M} UTC"
    rows = [
        ("portfolio", bar_end, "net wealth (USDT)", f"{last['net_wealth']:,.2f}"),
        ("portfolio", bar_end, "cash (USDT)", f"{last['cash']:,.2f}"),
        ("portfolio", bar_end, "gross market value (USDT)", f"{last['gmv']:,.2f}"),
        ("portfolio", bar_end, "net market value (USDT)", f"{last['nmv']:,.2f}"),
        ("portfolio", bar_end, "leverage", f"{last['leverage']:.3f}"),
    ]
    account = last_account(run.logs)
    if account is not None:
        fetched = f"fetched {account['fetched_at']:%Y-%m-%d %H:%M:%S} UTC"
        rows = [
            ("exchange", fetched, "wallet balance (USDT)", f"{account['wallet_balance']:,.2f}"),
            ("exchange", fetched, "margin balance (USDT)", f"{account['margin_balance']:,.2f}"),
            ("exchange", fetched, "unrealized PnL (USDT)", f"{account['unrealized_pnl']:,.2f}"),
            *rows,
        ]
    shares = run.logs.read_table("portfolio/holdings_shares")
    notional = run.logs.read_table("portfolio/holdings_notional")
    at = shares["bar_end"].max()
    positions = shares[shares["bar_end"] == at].merge(
        notional[notional["bar_end"] == at], on=["bar_end", "asset"], how="left"
    )
    positions = positions[positions["shares"] != 0].sort_values("notional", key=abs, ascending=False)
    positions = positions[["asset", "shares", "notional"]].rename(columns={"notional": "notional_usdt"})
    balances = pd.DataFrame(rows, columns=["source", "as of", "figure", "value"])
    return balances, positions.reset_index(drop=True)


def _named(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["figure", "value"])


def dag_outputs(run: ObservedRun) -> pd.DataFrame:
    """Per DAG node over the reconciled bars: how many values, their mean, spread and range, and the
    share that are missing (NaN)."""
    outputs = run.logs.read_table("dag/node_outputs")
    first, last = pd.Timestamp(run.summary["first_bar_end"]), pd.Timestamp(run.summary["last_bar_end"])
    outputs = outputs[(outputs["bar_end"] >= first) & (outputs["bar_end"] <= last)]
    grouped = outputs.groupby("node", sort=False)["value"]
    table = pd.DataFrame(
        {
            "values": grouped.size(),
            "missing_%": grouped.apply(lambda v: v.isna().mean() * 100),
            "mean": grouped.mean(),
            "std": grouped.std(),
            "min": grouped.min(),
            "max": grouped.max(),
        }
    )
    return table.reset_index()


def node_timing(run: ObservedRun) -> pd.DataFrame:
    """Execution time per DAG node: median / p95 / max ms, share of the DAG's time (%), peak memory."""
    nodes = run.table("node_timing")
    nodes["share_of_dag_time"] *= 100
    return nodes.rename(columns={"share_of_dag_time": "share_%", "peak_memory_mb_max": "peak_mb_max"})


def bar_timing(run: ObservedRun) -> pd.DataFrame:
    """Per bar, the distribution (median, p95, max) of the DAG's time, the decision's and the orders'
    delay after the bar's close."""
    bars = run.table("bar_timing")
    columns = {
        "DAG time (ms)": bars["dag_seconds"] * 1e3,
        "decision delay (s)": bars["decision_delay_seconds"],
        "order delay (s)": bars["order_delay_seconds"],
    }
    rows = [
        (name, values.count(), values.median(), values.quantile(0.95), values.max()) for name, values in columns.items()
    ]
    return pd.DataFrame(rows, columns=["per bar", "bars", "median", "p95", "max"])


def production_portfolio(run: ObservedRun) -> tuple[pd.DataFrame, pd.DataFrame, bytes]:
    """Production over the reconciled bars: its figures, its PnL by asset (worst first) and a plot of
    its cumulative PnL and gross market value."""
    per_bar = run.table("per_bar")
    side = run.table("side_by_side")
    return (
        _portfolio(per_bar, side, "prod"),
        _by_asset(side, "prod"),
        plots.portfolio(
            per_bar["bar_end"],
            per_bar["cumulative_pnl_prod"],
            per_bar["gmv_prod"],
            f"{run.title}: production portfolio",
        ),
    )


def research_portfolio(run: ObservedRun) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Research's equivalent (the run's recorded predictions traded at research's prices, same costs):
    its figures and its PnL by asset."""
    side = run.table("side_by_side")
    return _portfolio(run.table("per_bar"), side, "research"), _by_asset(side, "research")


def _portfolio(per_bar: pd.DataFrame, side: pd.DataFrame, which: str) -> pd.DataFrame:
    return _named(
        [
            ("bars", f"{len(per_bar):,}"),
            ("cumulative PnL (USDT)", f"{per_bar[f'pnl_{which}'].sum():,.2f}"),
            ("gross volume traded (USDT)", f"{per_bar[f'gross_volume_{which}'].sum():,.0f}"),
            ("mean gross market value (USDT)", f"{per_bar[f'gmv_{which}'].mean():,.0f}"),
            ("fees (USDT)", f"{side[f'fees_{which}'].sum():,.2f}"),
            ("funding (USDT)", f"{side[f'funding_{which}'].sum():,.2f}"),
        ]
    )


def _by_asset(side: pd.DataFrame, which: str) -> pd.DataFrame:
    sums = side.groupby("asset")[[f"pnl_{which}", f"fees_{which}", f"funding_{which}"]].sum()
    return sums.sort_values(f"pnl_{which}").reset_index()


def verdict(run: ObservedRun) -> str:
    return run.summary["verdict"]


def headline(run: ObservedRun) -> pd.DataFrame:
    """Production vs research in figures: the window, correlation, both cumulative PnLs, the largest
    per-bar difference, the first divergence, timing and orders."""
    s = run.summary
    timing = s["timing"]
    return _named(
        [
            ("window (bar ends, UTC)", f"{s['first_bar_end']} to {s['last_bar_end']} ({s['bars']} bars)"),
            ("per-bar PnL correlation", _figure(s["pnl_correlation"], "{:.6f}")),
            ("cumulative PnL, production (USDT)", _figure(s["cumulative_pnl_prod"])),
            ("cumulative PnL, research (USDT)", _figure(s["cumulative_pnl_research"])),
            ("gross volume traded, production (USDT)", _figure(s["gross_volume_prod"], "{:,.0f}")),
            ("largest per-bar PnL difference (USDT)", _figure(s["max_abs_pnl_diff"])),
            ("first divergence", first_divergence(run)),
            (
                "DAG time per bar, median / p95 (ms)",
                f"{_figure(timing['dag_ms_per_bar']['median'])} / {_figure(timing['dag_ms_per_bar']['p95'])}",
            ),
            (
                "order delay after bar close, median / p95 (s)",
                f"{_figure(timing['order_delay_seconds']['median'])} / {_figure(timing['order_delay_seconds']['p95'])}",
            ),
            ("orders", f"{timing['orders']:,}"),
        ]
    )


def first_divergence(run: ObservedRun) -> str:
    """The first bar and asset where production and research differ beyond tolerance, and in what."""
    divergence = run.summary["first_divergence"]
    if divergence is None:
        return "none"
    return f"{divergence['bar_end']}, {divergence['asset']} ({divergence['what']})"


def _figure(value, fmt: str = "{:,.2f}") -> str:
    """A figure as the report shows it: '-' when there is none (no bars, no orders)."""
    return "-" if value is None or (isinstance(value, float) and value != value) else fmt.format(value)


def per_bar_pnl(run: ObservedRun, count: int = 10) -> pd.DataFrame:
    """The bars where production's and research's PnL differ most."""
    per_bar = run.table("per_bar")
    per_bar = per_bar.assign(abs_diff=(per_bar["pnl_prod"] - per_bar["pnl_research"]).abs())
    rows = per_bar.nlargest(count, "abs_diff")[["bar_end", "pnl_prod", "pnl_research", "abs_diff"]]
    return rows.assign(bar_end=rows["bar_end"].dt.strftime("%Y-%m-%d %H:%M")).reset_index(drop=True)


def largest_differences(run: ObservedRun, name: str, count: int = 10) -> pd.DataFrame:
    """The bars and assets where production's ``name`` (pnl, holdings, target) differs most from research's."""
    side = run.table("side_by_side")
    gap = (side[f"{name}_prod"] - side[f"{name}_research"]).abs()
    rows = side.assign(abs_diff=gap).nlargest(count, "abs_diff")
    rows = rows[["bar_end", "asset", f"{name}_prod", f"{name}_research", "abs_diff"]]
    return rows.assign(bar_end=rows["bar_end"].dt.strftime("%Y-%m-%d %H:%M")).reset_index(drop=True)


def gap_note(run: ObservedRun) -> str:
    """Which component dominates the gap and what the verdict judges, against which bound."""
    s = run.summary
    judged = "residual" if s["explained"] else "gap"
    return (
        f"Mostly {s['dominant'] or 'none (no gap)'}. Judged: {s['bound_rule']}; "
        f"this run's {judged} is {_figure(s['judged'])} USDT."
    )


def gap_attribution(run: ObservedRun) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cumulative gap (production - research, USDT) split into its components (each explained or
    judged), and the same per asset (largest gap first)."""
    s = run.summary
    explained = set(s["explained"])
    components = pd.DataFrame(
        [
            (name, s["attribution"].get(name), "-" if name == "gap" else "explained" if name in explained else "judged")
            for name in GAP_PARTS
        ],
        columns=["component", "cumulative_usdt", "verdict"],
    )
    per_asset = run.table("attribution").groupby("asset")[list(GAP_PARTS)].sum()
    return components, per_asset.reset_index().sort_values("gap", key=abs, ascending=False).reset_index(drop=True)


def costs(run: ObservedRun) -> pd.DataFrame:
    """Fees and funding of production and research, where funding came from, the taker fee."""
    c = run.summary["costs"]
    return _named(
        [
            ("fees, production / research (USDT)", f"{_figure(c['fees_prod'])} / {_figure(c['fees_research'])}"),
            (
                "funding, production / research (USDT)",
                f"{_figure(c['funding_prod'])} / {_figure(c['funding_research'])}",
            ),
            ("funding from", str(c["funding_source"])),
            ("taker fee", f"{c['taker_fee']:.4%}"),
        ]
    )


def performance_table(run: ObservedRun) -> pd.DataFrame:
    """Production's performance over the reconciled bars: Sharpe, Sortino, drawdown, turnover, ..."""
    first, last = pd.Timestamp(run.summary["first_bar_end"]), pd.Timestamp(run.summary["last_bar_end"])
    figures = production_performance(run.logs, run.config.bar_delta, first, last)
    return _named(performance.rows(figures))


def exchange_statement(run: ObservedRun) -> tuple[str, pd.DataFrame, list[str]]:
    """The portfolio beside the exchange's own statement (prod): the verdict, each component's totals
    since the start (portfolio, exchange, at the config's fees) and the notes; a run without a statement
    has the verdict only."""
    statement = run.summary["exchange_statement"]
    if not statement["available"]:
        return statement["verdict"], pd.DataFrame(columns=["component", "portfolio", "exchange", "config's fees"]), []
    totals = pd.DataFrame(
        [(name, t["portfolio"], t["exchange"], t.get("expected")) for name, t in statement["totals"].items()],
        columns=["component", "portfolio", "exchange", "config's fees"],
    )
    return statement["verdict"], totals, list(statement["notes"])
