"""The ``prod-system`` command line: the root group ``main`` and its commands, one module per family
(``data``, ``simulate``, ``analysis``, ``live``, ``exchange``).

Bad input is reported as one ``error:`` line and one ``hint:`` line on stderr, never a traceback;
the exit codes are listed in the root help (``EXIT_*`` in ``errors``). Progress goes to stderr,
results to stdout. The command modules import their heavy dependencies (Dagster, ccxt, the runs)
inside the commands, so that ``prod-system --help`` stays fast.
"""

from __future__ import annotations

import logging

import click

from prod_system.cli import analysis, data, exchange, instruments, live, simulate
from prod_system.cli.errors import DEBUG_ENV, DEBUG_HELP, CliGroup, Invocation


@click.group(
    cls=CliGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Run 'prod-system COMMAND --help' for a command's options and examples.",
)
@click.option(
    "--debug",
    is_flag=True,
    envvar=DEBUG_ENV,
    help=DEBUG_HELP + " Also accepted after the command.",
)
def main(debug: bool) -> None:
    """prod_system: a crypto trading system (Binance USDT-M futures) built as a Dagster asset graph.

    It turns 1-minute candles into a model's predictions, target positions and orders, the same
    way in a simulation of the past, in paper trading and in production, and writes everything a
    run did to its system log dir: {root}/{model}/{run_mode}/{trigger}/{start}.{end}/system_log_dir/.

    \b
    Typical workflow (the bundled candles cover 2023-07-19 to 2023-07-28 UTC):
      1. dump-market-data  candles -> a replayable snapshot file
      2. simulate          replay a window through the production system
      3. reconcile         compare the runs with research (HTML report)
      4. historical-pnl    a model's research PnL over a long history
      5. exchange-sim      a local exchange to rehearse live trading on
      6. run               trade live: paper_trading, then prod
    Other assets than the bundled 8: 'instruments' fetches their exchange rules (--instruments FILE).

    Timestamps are UTC with a zone (2023-07-21T00:00:00Z); durations read 30s, 5m, 1h, 1d.
    Progress goes to stderr, results to stdout.

    \b
    Exit codes:
      0    success
      1    failure while working (exchange or I/O error, or a bug: try --debug)
      2    bad input or usage: an 'error:' line and a 'hint:' line on stderr
      3    reconcile: some run diverges from research
      4    run: cannot reach the exchange at start (nothing was started or written)
      130  interrupted (Ctrl-C)
    """
    Invocation.debug = Invocation.debug or debug
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


for command in (
    data.dump_market_data,
    simulate.simulate,
    simulate.historical_pnl,
    analysis.reconcile,
    live.run,
    exchange.exchange_sim,
    instruments.instruments,
):
    main.add_command(command)


if __name__ == "__main__":
    main()
