"""Run the local Binance USDT-M futures exchange: ``python -m prod_system.exchange --market-data SNAPSHOT ...``.

    python -m prod_system.exchange --market-data parquet:snapshot.parquet --port 8765 \\
        --api-key KEY --api-secret SECRET [--clock shifted|original|manual] [--speed 1] [--history 1d] \\
        [--taker-fee 0.0005] [--maker-fee 0.0002] [--initial-balance 1000000] \\
        [--funding data|assumed|off] [--funding-rate 0.0001] [--funding-interval 8h] \\
        [--instruments rules.json] [--brackets brackets.json] [--faults rules.json] [--state state.json]

The key and secret may come from ``EXCHANGE_API_KEY``/``EXCHANGE_API_SECRET`` instead (the secret
is never printed). ``main(argv)`` parses, checks and blocks in ``server.serve(options)`` until
interrupted; bad input exits 2 with one line. Other front ends (the ``prod-system exchange-sim``
command) call ``main(argv)`` or build a ``ServerOptions`` and call ``serve`` themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from prod_system.common.timeutil import parse_duration
from prod_system.config import BINANCE_BASE_FUNDING_RATE, FUNDING_INTERVAL, FundingConfig
from prod_system.errors import FaultRuleError, MarketDataError
from prod_system.exchange.engine import EngineConfig
from prod_system.exchange.faults import parse_rules
from prod_system.exchange.market import CLOCK_MODES
from prod_system.exchange.server import ServerOptions, serve


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (no usage dump), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _duration(text: str) -> pd.Timedelta:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m prod_system.exchange", description=__doc__.splitlines()[0])
    parser.add_argument("--market-data", required=True, help="'parquet:FILE', a .parquet file, 'csv:DIR' or a folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--api-key", default=None, help="default: $EXCHANGE_API_KEY")
    parser.add_argument("--api-secret", default=None, help="default: $EXCHANGE_API_SECRET")
    parser.add_argument("--clock", choices=CLOCK_MODES, default="shifted")
    parser.add_argument("--speed", type=float, default=1.0, help="market minutes per real minute (not manual)")
    parser.add_argument(
        "--history", type=_duration, default="1d", help="of the market data, closed at start-up (0m: none)"
    )
    parser.add_argument("--taker-fee", type=_decimal, default=EngineConfig.taker_fee)
    parser.add_argument("--maker-fee", type=_decimal, default=EngineConfig.maker_fee)
    parser.add_argument("--initial-balance", type=_decimal, default=EngineConfig.initial_balance)
    parser.add_argument(
        "--funding",
        choices=("data", "assumed", "off"),
        default="data",
        help="settle at the market data's funding rates (the assumed rate without), the assumed rate, or none",
    )
    parser.add_argument(
        "--funding-rate", type=float, default=BINANCE_BASE_FUNDING_RATE, help="the assumed rate per settlement"
    )
    parser.add_argument("--funding-interval", default=FUNDING_INTERVAL, help="between assumed settlements (1h, 4h, 8h)")
    parser.add_argument(
        "--instruments", type=Path, default=None, help="rules file or Binance exchangeInfo JSON (default: snapshot's)"
    )
    parser.add_argument("--brackets", type=Path, default=None, help="Binance leverageBracket JSON")
    parser.add_argument("--faults", type=Path, default=None, help="JSON list of fault rules")
    parser.add_argument(
        "--strict-client-ids",
        action="store_true",
        help="refuse a reused newClientOrderId forever (Binance: only among open orders)",
    )
    parser.add_argument(
        "--state", type=Path, default=None, help="JSON file keeping orders and positions across restarts"
    )
    return parser


def _options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ServerOptions:
    api_key = args.api_key or os.environ.get("EXCHANGE_API_KEY")
    api_secret = args.api_secret or os.environ.get("EXCHANGE_API_SECRET")
    if not api_key or not api_secret:
        parser.error("give --api-key and --api-secret, or set EXCHANGE_API_KEY and EXCHANGE_API_SECRET")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in 0..65535, got {args.port}")
    if not args.speed > 0:
        parser.error(f"--speed must be positive, got {args.speed}")
    if args.initial_balance <= 0:
        parser.error(f"--initial-balance must be positive, got {args.initial_balance}")
    faults = []
    if args.faults is not None:
        try:
            faults = parse_rules(json.loads(args.faults.read_text()))
        except OSError as error:
            parser.error(f"cannot read the fault rules {args.faults}: {error.strerror}")
        except (ValueError, FaultRuleError) as error:
            parser.error(f"bad fault rules in {args.faults}: {error}")
    try:
        funding = FundingConfig(mode=args.funding, assumed_rate=args.funding_rate, interval=args.funding_interval)
    except ValidationError as error:
        problem = error.errors()[0]
        parser.error(f"--funding-{str(problem['loc'][0]).split('_')[-1]}: {problem['msg']}")
    config = EngineConfig(
        args.taker_fee,
        args.maker_fee,
        args.initial_balance,
        strict_client_order_ids=args.strict_client_ids,
        funding=funding,
    )
    return ServerOptions(
        args.market_data,
        api_key,
        api_secret,
        args.host,
        args.port,
        args.clock,
        args.speed,
        config,
        faults,
        args.state,
        args.history,
        args.instruments,
        args.brackets,
    )


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    options = _options(parser.parse_args(argv), parser)
    try:
        serve(options)
    except (MarketDataError, ValueError, OSError) as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
