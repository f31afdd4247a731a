"""The PnL real-time observer: reconcile runs with research and write a report next to their log dirs.

For a run whose log dir is ``{root}/{model}/{run_mode}/{trigger}/{start}.{end}/system_log_dir``, a
report goes to ``{start}.{end}/pnl_realtime_observer_notebook/{run_timestamp}/``:

    report.html          self-contained (plots inlined): verdict, figures, largest differences, timing
    summary.json         the machine-readable figures (pnl_correlation, max_abs_pnl_diff,
                         cumulative_pnl_prod, cumulative_pnl_research, first_divergence, timing,
                         performance: production's Sharpe, drawdown, fees, funding, ...)
    cumulative_pnl.png  holdings_difference.png  timing.png
    per_bar.parquet      per-bar PnL, volume, gmv of production and research
    side_by_side.parquet per bar and asset: targets, holdings, PnL, fees, funding of production next to research
    attribution.parquet  per bar and asset: the PnL gap split into execution, fees, funding, holdings, residual
    node_timing.csv      per DAG node: median / p95 / max ms, share of the DAG's time, peak memory
    bar_timing.parquet   per bar: each node's seconds, DAG seconds, decision and order delays
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from prod_system.analysis import performance, plots
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
REPORT_HTML = "report.html"


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
    """The most recently written report.html of ``model`` (of one run mode, or any)."""
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
        return self.directory / REPORT_HTML

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
) -> ObserverReport:
    """Reconcile one run (over the bars ending in (start, end]) and write its report folder.

    ``market_data`` overrides the source saved in the run's config (``store``, already loaded
    candles of that source, saves reading it again); ``now`` (UTC) names the report folder and
    defaults to the wall clock.
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
    _write_json(directory / "summary.json", summary)
    return report


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
    html = _html(report, pngs)
    write_atomically(directory / REPORT_HTML, lambda tmp: tmp.write_text(html), directory / f".{REPORT_HTML}.tmp")


def _image(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _table(frame: pd.DataFrame, floats: str = "{:,.2f}") -> str:
    return frame.to_html(index=False, border=0, classes="grid", float_format=floats.format, na_rep="-")


def _largest(side: pd.DataFrame, name: str, count: int = 10) -> pd.DataFrame:
    gap = (side[f"{name}_prod"] - side[f"{name}_research"]).abs()
    rows = side.assign(abs_diff=gap).nlargest(count, "abs_diff")
    rows = rows[["bar_end", "asset", f"{name}_prod", f"{name}_research", "abs_diff"]]
    return rows.assign(bar_end=rows["bar_end"].dt.strftime("%Y-%m-%d %H:%M"))


def _figure(value, fmt="{:,.2f}") -> str:
    """A summary figure as the report shows it: '-' when there is none (no bars, no orders)."""
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else fmt.format(value)


def _headline(s: dict) -> list[tuple[str, str]]:
    """The report's first table: the summary's figures, named for a reader."""
    timing = s["timing"]
    divergence = s["first_divergence"]
    return [
        ("window (bar ends, UTC)", f"{s['first_bar_end']} to {s['last_bar_end']} ({s['bars']} bars)"),
        ("per-bar PnL correlation", _figure(s["pnl_correlation"], "{:.6f}")),
        ("cumulative PnL, production (USDT)", _figure(s["cumulative_pnl_prod"])),
        ("cumulative PnL, research (USDT)", _figure(s["cumulative_pnl_research"])),
        ("gross volume traded, production (USDT)", _figure(s["gross_volume_prod"], "{:,.0f}")),
        ("largest per-bar PnL difference (USDT)", _figure(s["max_abs_pnl_diff"])),
        (
            "first divergence",
            "none" if divergence is None else f"{divergence['bar_end']}, {divergence['asset']} ({divergence['what']})",
        ),
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


def _statement_html(statement: dict) -> str:
    """The exchange's statement beside the portfolio's accounts: the verdict, then each component's
    session totals (exchange_statement.parquet holds them per bar)."""
    if not statement["available"]:
        return f"<p>{html.escape(statement['verdict'])}</p>"
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{_figure(t['portfolio'])}</td><td>{_figure(t['exchange'])}</td>"
        f"<td>{_figure(t.get('expected'))}</td></tr>"
        for name, t in statement["totals"].items()
    )
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in statement["notes"])
    return (
        f'<p class="verdict {"ok" if statement["agrees"] else "bad"}">{html.escape(statement["verdict"])}</p>'
        f"<table><tr><th>USDT, since the start</th><th>portfolio</th><th>exchange</th><th>config's fees</th></tr>"
        f"{rows}</table><ul>{notes}</ul>"
    )


def _gap_html(s: dict, attribution: pd.DataFrame) -> str:
    """Where production's PnL and research's part: the cumulative gap by component (which one dominates,
    what the verdict judges, against which bound), both sides' costs, and the components per asset."""
    parts = s["attribution"]
    explained = set(s["explained"])
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{_figure(parts.get(name))}</td>"
        f"<td>{'explained' if name in explained else ('-' if name == 'gap' else 'judged')}</td></tr>"
        for name in ("gap", "execution", "fees", "funding", "holdings", "residual")
    )
    costs = s["costs"]
    cost_rows = _rows(
        [
            (
                "fees, production / research (USDT)",
                f"{_figure(costs['fees_prod'])} / {_figure(costs['fees_research'])}",
            ),
            (
                "funding, production / research (USDT)",
                f"{_figure(costs['funding_prod'])} / {_figure(costs['funding_research'])}",
            ),
            ("funding from", costs["funding_source"]),
            ("taker fee", f"{costs['taker_fee']:.4%}"),
        ]
    )
    per_asset = attribution.groupby("asset")[["gap", "execution", "fees", "funding", "holdings", "residual"]].sum()
    per_asset = per_asset.reset_index().sort_values("gap", key=abs, ascending=False)
    dominant = s["dominant"] or "none (no gap)"
    return (
        f"<p>Mostly <b>{html.escape(dominant)}</b>. Judged: {html.escape(s['bound_rule'])}; "
        f"this run's {'residual' if explained else 'gap'} is {_figure(s['judged'])} USDT.</p>"
        f"<table><tr><th>cumulative, production - research (USDT)</th><th></th><th></th></tr>{rows}</table>"
        f"<table>{cost_rows}</table><h3>By asset (USDT)</h3>{_table(per_asset)}"
    )


def _rows(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in pairs)


def _html(report: ObserverReport, pngs: dict[str, bytes]) -> str:
    """The report as one self-contained page (plots inlined): it opens anywhere, copied or mailed."""
    s, result, config = report.summary, report.reconciliation, report.config
    ok = s["reconciled"]
    rows = _rows(_headline(s))
    performance_rows = _rows(performance.rows(report.performance))
    node_timing = result.node_timing.assign(share_of_dag_time=result.node_timing["share_of_dag_time"] * 100)
    node_timing = node_timing.rename(columns={"share_of_dag_time": "share_%", "peak_memory_mb_max": "peak_mb_max"})
    title = f"{config.model} {config.run_mode} ({config.trigger}): production vs research"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1040px; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }}
.verdict {{ padding: .6em 1em; border-radius: 4px; font-weight: 600; }}
.ok {{ background: #e6f4ea; color: #135f26; }} .bad {{ background: #fde7e9; color: #a50e0e; }}
table {{ border-collapse: collapse; margin: .5em 0; }} th, td {{ padding: .25em .8em; text-align: right; }}
th {{ text-align: left; font-weight: 500; color: #444; }} table.grid th {{ text-align: right; }}
table.grid tr:nth-child(even) {{ background: #f6f6f6; }} img {{ max-width: 100%; }}
footer {{ margin-top: 2em; color: #777; font-size: .85em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="verdict {"ok" if ok else "bad"}">{html.escape(s["verdict"])}</p>
<table>{rows}</table>
<h2>Where production and research differ</h2>
{_gap_html(s, result.attribution)}
<h2>Performance (production)</h2>
<table>{performance_rows}</table>
<h2>Portfolio vs exchange</h2>
{_statement_html(s["exchange_statement"])}
<h2>Cumulative PnL</h2>
{_image(pngs["cumulative_pnl.png"], "cumulative PnL, production vs research")}
<h2>Holdings difference per asset</h2>
{_image(pngs["holdings_difference.png"], "holdings difference per asset")}
<h2>Largest differences</h2>
<h3>Per-bar PnL by asset (USDT)</h3>
{_table(_largest(result.side_by_side, "pnl"), "{:,.4f}")}
<h3>Holdings by asset (USDT)</h3>
{_table(_largest(result.side_by_side, "holdings"))}
<h3>Target positions by asset (USDT)</h3>
{_table(_largest(result.side_by_side, "target"))}
<h2>Execution time</h2>
{_image(pngs["timing.png"], "execution time")}
{_table(node_timing, "{:,.3f}")}
<footer>Generated {html.escape(s["generated_at"])} from {html.escape(s["log_dir"])} (run {html.escape(s["run_id"])}).
Tables: per_bar.parquet, side_by_side.parquet, attribution.parquet, node_timing.csv, bar_timing.parquet; figures:
summary.json.</footer>
</body></html>
"""
