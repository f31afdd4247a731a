"""``prod-system instruments``: the exchange's trading rules of its USDT-M perpetuals, fetched into a file."""

from __future__ import annotations

import os
from pathlib import Path

import click

from prod_system.cli.common import check_writable
from prod_system.cli.errors import EXIT_FAILED, EXIT_UNREACHABLE, fail, one_line
from prod_system.data.instruments import fetch_instruments
from prod_system.errors import InstrumentsError
from prod_system.trading.brokers.ccxt_client import BINANCE_FUTURES_URL, binanceusdm_client

KEY_ENV, SECRET_ENV = "BINANCE_API_KEY", "BINANCE_API_SECRET"


def _keys(key_env: str, secret_env: str) -> tuple[str | None, str | None]:
    """The API key and secret from the environment (never from a file or an option), both or neither."""
    key, secret = os.environ.get(key_env) or None, os.environ.get(secret_env) or None
    if (key is None) != (secret is None):
        unset = key_env if key is None else secret_env
        fail(
            f"${unset} is not set (the other of the API key pair is)",
            f"set both {key_env} and {secret_env}, or neither",
        )
    return key, secret


@click.command("instruments", short_help="Fetch the exchange's trading rules (filters, brackets) into a file.")
@click.option(
    "--exchange-url",
    default=BINANCE_FUTURES_URL,
    show_default=True,
    help="Base URL of a Binance USDT-M compatible exchange (the local exchange-sim, or Binance).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Instruments file to write (.json); replaced if it exists, its folder created.",
)
@click.option("--universe", help="Comma-separated assets to keep (each must be listed)  [default: every symbol].")
@click.option(
    "--api-key-env",
    default=KEY_ENV,
    show_default=True,
    help="Environment variable holding the API key: the leverage brackets are a signed endpoint.",
)
@click.option("--api-secret-env", default=SECRET_ENV, show_default=True, help="Environment variable of its secret.")
def instruments(exchange_url: str, out: str, universe: str | None, api_key_env: str, api_secret_env: str) -> None:
    """Fetch every USDT-M perpetual's trading rules from the exchange through ccxt, into one file.

    The rules are exchangeInfo's filters (step, min and max quantity, tick, price bounds, min
    notional), status, onboard date and precisions (ccxt load_markets), and each symbol's leverage
    brackets (GET /fapi/v1/leverageBracket, signed: with the API key and secret from the environment;
    without them the file records that the brackets were not fetched). simulate, run, dump-market-data
    and exchange-sim take the file with --instruments; a run saves the rules it traded under.

    \b
    Examples:
      prod-system instruments --out instruments.json
      EXCHANGE_KEY=key EXCHANGE_SECRET=secret prod-system instruments \\
        --exchange-url http://127.0.0.1:8765 --api-key-env EXCHANGE_KEY \\
        --api-secret-env EXCHANGE_SECRET --out instruments.json
    """
    import ccxt  # the client's error classes (ccxt loads in ~0.45 s: only when fetching)

    if Path(out).suffix != ".json":
        fail(f"--out {out}: an instruments file is a .json file", f"e.g. --out {Path(out).with_suffix('.json').name}")
    check_writable(Path(out).parent, "--out")
    assets = [a.strip().upper() for a in universe.split(",") if a.strip()] if universe else None
    if assets is not None and (not assets or not all(a.isalnum() for a in assets)):
        fail(f"--universe {universe!r}: asset names must be alphanumeric", "e.g. --universe ADA,LTC,TRX")
    key, secret = _keys(api_key_env, api_secret_env)
    no_brackets = None if key else f"no API key in ${api_key_env} and ${api_secret_env} (the endpoint is signed)"
    client = binanceusdm_client(exchange_url, key, secret)
    click.echo(f"fetching the instruments of {exchange_url}", err=True)
    try:
        table = fetch_instruments(client, exchange_url, no_brackets)
    except ccxt.AuthenticationError as error:
        fail(f"the exchange at {exchange_url} refused the API key: {one_line(error)[:300]}",
             f"check ${api_key_env} and ${api_secret_env}, or unset both to fetch without the brackets")  # fmt: skip
    except ccxt.NetworkError as error:
        fail(f"cannot reach the exchange at {exchange_url}: {one_line(error)[:300]}",
             "check --exchange-url (is exchange-sim running?) and the network", EXIT_UNREACHABLE)  # fmt: skip
    except ccxt.BaseError as error:
        fail(f"the exchange at {exchange_url} answered an error: {one_line(error)[:300]}",
             "run again; see --help", EXIT_FAILED)  # fmt: skip
    except InstrumentsError as error:
        fail(f"unexpected rules from the exchange: {error}", "is --exchange-url a Binance USDT-M API?", EXIT_FAILED)
    if assets is not None:
        missing = [a for a in assets if a not in table.rules]
        if missing:
            fail(f"the exchange at {exchange_url} lists no USDT-M perpetual of {missing}",
                 "check --universe (asset names without the USDT quote, e.g. ADA)")  # fmt: skip
        table = table.select(assets)
    path = table.write(out)
    click.echo(f"wrote the rules of {len(table.rules)} instruments (brackets {table.brackets}) to {path}")
