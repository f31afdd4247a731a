"""``prod-system reconcile``: production against research, one report and one verdict per run."""

from __future__ import annotations

from pathlib import Path

import click

from prod_system.cli.common import timestamp_option
from prod_system.cli.errors import EXIT_NOT_RECONCILED, fail, market_data_hint
from prod_system.config import RunMode
from prod_system.errors import ConfigError, MarketDataError, ReconciliationError


@click.command(short_help="Compare runs with research; exit 3 if one diverges.")
@click.option("--model", required=True, help="The model whose runs to reconcile (its folder name under --root).")
@click.option(
    "--root",
    required=True,
    type=click.Path(file_okay=False),
    help="Root folder of the log dirs, as given to simulate or run.",
)
@click.option("--start", help="Reconcile bars ending after this time, UTC  [default: each run's start].")
@click.option("--end", help="... and up to this time, UTC  [default: each run's last bar].")
@click.option(
    "--mode",
    "run_mode",
    type=click.Choice([mode.value for mode in RunMode]),
    help="Only runs of this run mode  [default: all].",
)
@click.option(
    "--trigger", type=click.Choice(["manual", "scheduled"]), help="Only runs of this trigger  [default: all]."
)
@click.option(
    "--market-data",
    help="Market data for research (.parquet or 'csv:DIR')  [default: the source in each run's config].",
)
@click.option(
    "--holdings-tolerance",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Allowed gap in holdings or targets, USDT per asset.",
)
@click.option(
    "--pnl-tolerance",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Allowed gap in per-bar PnL, USDT per asset.",
)
@click.option(
    "--notebook/--no-notebook",
    default=None,
    help="Execute the observer notebook (the HTML report); --no-notebook: summary.json, plots and tables only "
    "[default: the run's observer.notebook].",
)
@click.option(
    "--show-input/--hide-input",
    default=None,
    help="The report's HTML shows the notebook's code cells too (--hide-input: outputs only)  "
    "[default: the run's observer.show_input].",
)
def reconcile(
    model, root, start, end, run_mode, trigger, market_data, holdings_tolerance, pnl_tolerance, notebook, show_input
) -> None:
    """Compare production with research for the runs in a window (the PnL real-time observer).

    For each run, executes the observer notebook (pnl_realtime_observer.ipynb and its HTML, the report)
    and writes summary.json, plots and side-by-side tables to
    {start}.{end}/pnl_realtime_observer_notebook/{run_timestamp}/ next to its system log dir, and
    prints one verdict line per run. Exit code 0: every run reconciles; 3: some run diverges from
    research (net of costs: see the verdict), or a prod run from the exchange's statement; 2: bad input
    (no such root, no run in the window); 1: a notebook cell failed (the error names it; the partial
    notebook stays in the report folder).

    \b
    Examples:
      prod-system reconcile --model C1b --root OUT
      prod-system reconcile --model C1b --root OUT --mode simulation \\
        --start 2023-07-21T00:00:00Z --end 2023-07-22T00:00:00Z
    """
    from prod_system.analysis.observer import find_runs, observe

    begin, finish = timestamp_option(start, "start"), timestamp_option(end, "end")
    if begin is not None and finish is not None and finish <= begin:
        fail(f"--end ({end}) must be after --start ({start})", "--end must be later than --start")
    if not Path(root).is_dir():
        fail(
            f"--root {root}: no such folder",
            "give the --root that simulate or run wrote to (run's default: system_runs)",
        )
    runs = find_runs(root, model, run_mode, trigger, begin, finish)
    if not runs:
        window = f" between {begin} and {finish}" if begin or finish else ""
        fail(f"no run of {model} under {root}{window}", f"runs live in {root}/{model}/{{run_mode}}/{{trigger}}/")
    diverged = 0
    for run in runs:
        try:
            report = observe(
                run.log_dir,
                begin,
                finish,
                market_data,
                None,
                holdings_tolerance,
                pnl_tolerance,
                notebook=notebook,
                show_input=show_input,  # None (not given): the run's config decides
            )
        except ConfigError as error:
            fail(str(error), f"check {run.log_dir}/system_config.yaml")
        except MarketDataError as error:
            fail(str(error), market_data_hint(str(error)))
        except ReconciliationError as error:
            fail(str(error), f"check the run's log dir {run.log_dir}")
        summary = report.summary
        statement = summary["exchange_statement"]  # portfolio vs exchange (prod runs)
        # the verdict decides (a first divergence that the attribution explains, e.g. holdings after a rejected
        # order through an exchange, is reported, not failed on), and the exchange's own statement must agree
        ok = summary["reconciled"] and statement.get("agrees", True)
        diverged += not ok
        click.echo(
            f"{run.run_mode}/{run.trigger} {run.start:%Y-%m-%d %H:%M}..{run.end:%Y-%m-%d %H:%M}: {summary['verdict']}"
        )
        click.echo(f"  portfolio vs exchange: {statement['verdict']}")
        click.echo(f"  report: {report.path}")
    if diverged:
        fail(
            f"{diverged} of {len(runs)} runs diverge from research or from the exchange's statement",
            "open the reports above: they show the first diverging bar and what the gap is made of",
            EXIT_NOT_RECONCILED,
        )
