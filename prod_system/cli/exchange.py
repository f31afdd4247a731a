"""``prod-system exchange-sim``: the local Binance USDT-M futures exchange, served until Ctrl-C."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click
from pydantic import ValidationError

from prod_system.cli.errors import fail
from prod_system.common.timeutil import parse_duration
from prod_system.config import (
    BINANCE_BASE_FUNDING_RATE,
    BINANCE_MAKER_FEE,
    BINANCE_TAKER_FEE,
    FUNDING_INTERVAL,
    FundingConfig,
)
from prod_system.errors import FaultRuleError, MarketDataError


class _DecimalType(click.ParamType):
    """A decimal number, >= 0 (or > 0 with ``positive``), kept exact."""

    name = "DECIMAL"

    def __init__(self, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value, param, ctx) -> Decimal:
        if isinstance(value, Decimal):
            return value
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            self.fail(f"not a number: {value!r}", param, ctx)
        if not number.is_finite() or number < 0 or (self.positive and number == 0):
            self.fail(f"must be a number {'>' if self.positive else '>='} 0, got {value!r}", param, ctx)
        return number


def _exchange_hint(message: str) -> str:
    if message.startswith("no exchange rules for"):
        return "every symbol is served its exchange's rules, never made-up ones: give --instruments FILE"
    if "leverage brackets" in message:
        return "fetch the rules with API keys set (prod-system instruments), or give Binance's JSON with --brackets"
    if "instruments" in message:
        return "--instruments takes a file from `prod-system instruments` or Binance's exchangeInfo JSON"
    if "state" in message:  # before "history": a state file kept with another --history says both
        return "check the --state file (remove it to start with fresh accounts)"
    if "history" in message:
        return "give a --history of whole minutes, shorter than the market data (0m: nothing closed at start-up)"
    if message.startswith("cannot listen"):
        return "choose another --port (0 picks a free one) or --host"
    return "--market-data takes a .parquet snapshot (see dump-market-data) or 'csv:DIR'"


def _history(text: str):
    """--history as a length: '0m', '1d', '36h'..."""
    try:
        return parse_duration(text)
    except ValueError as error:
        fail(f"--history: {error}", _exchange_hint("history"))


@click.command("exchange-sim", short_help="Run a local Binance USDT-M futures exchange.")
@click.option(
    "--market-data",
    required=True,
    help="Candles to replay: a snapshot ('parquet:FILE' or FILE.parquet) or 'csv:DIR'.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (loopback by default).")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port to listen on; 0 picks a free one (printed at start).",
)
@click.option("--api-key", envvar="EXCHANGE_API_KEY", help="The account's API key  [env: EXCHANGE_API_KEY].")
@click.option("--api-secret", envvar="EXCHANGE_API_SECRET", help="Its secret  [env: EXCHANGE_API_SECRET].")
@click.option(
    "--clock",
    type=click.Choice(["shifted", "original", "manual"]),
    default="shifted",
    show_default=True,
    help="shifted: the candles close in real time from start-up; original: their own times; manual: moved "
    "by POST /_control/clock.",
)
@click.option(
    "--speed",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Market minutes per real minute (shifted and original clocks).",
)
@click.option(
    "--taker-fee",
    default=repr(BINANCE_TAKER_FEE),
    show_default=True,
    type=_DecimalType(),
    help="Fee rate of market orders (0.0005 = 0.05%, Binance USDT-M's standard tier).",
)
@click.option(
    "--maker-fee",
    default=repr(BINANCE_MAKER_FEE),
    show_default=True,
    type=_DecimalType(),
    help="Fee rate of limit orders (0.0002 = 0.02%, Binance USDT-M's standard tier).",
)
@click.option(
    "--funding",
    type=click.Choice(["data", "assumed", "off"]),
    default="data",
    show_default=True,
    help="Settle open positions at the market data's funding rates (the assumed rate for assets without), at "
    "the assumed rate, or not at all.",
)
@click.option(
    "--funding-rate",
    default=BINANCE_BASE_FUNDING_RATE,
    show_default=True,
    type=float,
    help="The assumed funding rate per settlement (positive: longs pay shorts).",
)
@click.option(
    "--funding-interval",
    default=FUNDING_INTERVAL,
    show_default=True,
    help="Time between assumed settlements, from 00:00 UTC (1h, 4h or 8h).",
)
@click.option(
    "--initial-balance",
    default="1000000",
    show_default=True,
    type=_DecimalType(positive=True),
    help="USDT in the account at start.",
)
@click.option(
    "--history",
    default="1d",
    show_default=True,
    help="How much of the market data is already closed at start-up (klines serve it, prices exist at once, "
    "a live session warms up on it); 0m starts at the first candle.",
)
@click.option(
    "--instruments",
    type=click.Path(dir_okay=False),
    help="The rules to serve: a file from `prod-system instruments`, or Binance's exchangeInfo JSON  "
    "[default: the snapshot's embedded table, else the rules bundled for the shipped assets].",
)
@click.option(
    "--brackets",
    type=click.Path(dir_okay=False),
    help="Binance's leverageBracket JSON, for --instruments without brackets (exchangeInfo has none).",
)
@click.option("--faults", type=click.Path(dir_okay=False), help="JSON fault rules, per endpoint (docs/exchange.md).")
@click.option("--state", type=click.Path(dir_okay=False), help="JSON file keeping the accounts across restarts.")
@click.option(
    "--strict-client-ids",
    is_flag=True,
    help="Refuse a reused newClientOrderId forever (-4116). Binance, and the default, refuse it among open orders "
    "only: a filled order's id is accepted again.",
)
def exchange_sim(market_data, host, port, api_key, api_secret, clock, speed, taker_fee, maker_fee, funding,
                 funding_rate, funding_interval, initial_balance, history, instruments, brackets, faults, state,
                 strict_client_ids) -> None:  # fmt: skip
    """Run a local Binance USDT-M futures exchange that the unmodified ccxt client trades on.

    It replays the market data on its clock, the first --history of it (a day) already closed at
    start-up, so that prices exist and a live session can warm up at once; it fills market orders at
    the current price with taker fees and limit orders when the price crosses, keeps positions,
    balances and trades, settles funding on open positions (the market data's rates, else
    --funding-rate every --funding-interval) with Binance's income history, signs and checks
    requests like Binance, and injects faults on chosen endpoints (latency, timeouts, 5xx, 429,
    rejections, partial fills). Point the broker at it with broker.exchange_url (or run's
    --exchange-url). It serves until Ctrl-C.

    \b
    Examples:
      EXCHANGE_API_KEY=key EXCHANGE_API_SECRET=secret \\
        prod-system exchange-sim --market-data snapshot.parquet --port 8765
      prod-system exchange-sim --market-data snapshot.parquet --port 8765 --clock original \\
        --speed 60 --api-key key --api-secret secret
    """
    from prod_system.exchange.engine import EngineConfig
    from prod_system.exchange.faults import parse_rules
    from prod_system.exchange.server import ServerOptions, serve

    if not api_key or not api_secret:
        fail(
            "no API key: give --api-key and --api-secret, or set EXCHANGE_API_KEY and EXCHANGE_API_SECRET",
            "any pair will do; the client (broker config or ccxt) must use the same",
        )
    history_length = _history(history)
    try:
        funding_config = FundingConfig(mode=funding, assumed_rate=funding_rate, interval=funding_interval)
    except ValidationError as error:
        problem = error.errors()[0]
        option = "--funding-rate" if problem["loc"][0] == "assumed_rate" else "--funding-interval"
        fail(f"{option}: {problem['msg']}", "Binance's rates are a few hundredths of a percent, every 1h, 4h or 8h")
    rules = []
    if faults is not None:
        try:
            rules = parse_rules(json.loads(Path(faults).read_text()))
        except OSError as error:
            fail(f"cannot read the fault rules {faults}: {error.strerror}", "--faults takes a JSON file")
        except (ValueError, FaultRuleError) as error:
            fail(f"bad fault rules in {faults}: {error}", "see the fault rules in docs/exchange.md")
    options = ServerOptions(
        market_data, api_key, api_secret, host, port, clock, speed,
        EngineConfig(taker_fee, maker_fee, initial_balance, strict_client_order_ids=strict_client_ids,
                     funding=funding_config), rules,
        Path(state) if state else None, history_length, instruments, brackets,
    )  # fmt: skip
    click.echo(f"starting the local exchange: replaying {market_data} ({clock} clock); Ctrl-C stops it", err=True)
    try:
        serve(options)
    except (MarketDataError, ValueError, OSError) as error:
        fail(str(error), _exchange_hint(str(error)))
