"""The instruments table: the exchange's trading rules of each asset, as Binance USDT-M serves them.

One row per asset's USDT-margined perpetual: its filters (LOT_SIZE step, min and max quantity,
MARKET_LOT_SIZE max quantity, PRICE_FILTER tick and bounds, MIN_NOTIONAL), status, onboard date,
precisions and leverage brackets. The rules come from the exchange (``fetch``: ccxt's
``load_markets`` and the signed leverageBracket endpoint), never from a guess: an asset without
rules is an ``InstrumentsError`` naming the command that fetches them.

The file is JSON: a header (format, source, fetch time, whether the brackets were fetched) and the
rows, every number as Binance writes it (decimal text, exact). ``read_instruments`` also reads
Binance's own exchangeInfo JSON. The same JSON travels inside every snapshot (metadata
``instruments``) and every log dir (``instruments.json``: what the run traded under).

Where a run's rules come from, per asset: the config's ``portfolio.instruments`` (an override), then
the file the config names (``market_data.instruments``), then the table embedded in the snapshot,
then the rules bundled with the package (``BUNDLED_INSTRUMENTS``, dated in its header).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pandas as pd

from prod_system.common.files import write_atomically
from prod_system.config import Instrument, PortfolioConfig, SystemConfig
from prod_system.data.market_data import read_snapshot_metadata
from prod_system.errors import InstrumentsError, MarketDataError

FORMAT = "prod_system instruments 1"
QUOTE = "USDT"
BUNDLED_INSTRUMENTS = Path(__file__).parent / "instruments" / "binance_usdm.json"
SNAPSHOT_KEY = "instruments"  # the snapshot metadata name of the table
LOG_DIR_FILE = "instruments.json"  # the table a run traded under, in its log dir
FETCH_COMMAND = "prod-system instruments --exchange-url URL --out FILE"
BINANCE_FILTERS = ("PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE", "MIN_NOTIONAL")


def missing_rules_message(assets: Iterable[str]) -> str:
    """The one line of an asset without rules: which, and the command that fetches them."""
    return (
        f"no exchange rules for {sorted(assets)}: fetch them with {FETCH_COMMAND} "
        "and pass --instruments FILE (or override them under portfolio.instruments)"
    )


def _text(value: Decimal) -> str:
    """A Decimal as Binance writes it: plain digits, no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


@dataclass(frozen=True)
class Bracket:
    """One leverage bracket (GET /fapi/v1/leverageBracket): up to ``notional_cap`` of position value,
    at most ``initial_leverage``, maintenance margin = notional x ratio - cum."""

    bracket: int
    initial_leverage: int
    notional_floor: Decimal
    notional_cap: Decimal
    maint_margin_ratio: Decimal
    cum: Decimal

    def to_json(self) -> dict:
        """As Binance answers it: numbers, not text (integral amounts as integers)."""

        def number(value: Decimal):
            return int(value) if value == value.to_integral_value() else float(value)

        return {
            "bracket": self.bracket,
            "initialLeverage": self.initial_leverage,
            "notionalCap": number(self.notional_cap),
            "notionalFloor": number(self.notional_floor),
            "maintMarginRatio": float(self.maint_margin_ratio),
            "cum": float(self.cum),
        }


@dataclass(frozen=True)
class InstrumentRules:
    """The rules of one asset's USDT-M perpetual, as exchangeInfo serves them (``brackets`` None: not
    fetched; ``onboard_date`` None: not known)."""

    asset: str
    symbol: str
    status: str
    onboard_date: pd.Timestamp | None
    step: Decimal  # LOT_SIZE stepSize (MARKET_LOT_SIZE has the same on Binance USDT-M)
    min_qty: Decimal  # LOT_SIZE minQty
    max_qty: Decimal  # LOT_SIZE maxQty (limit orders)
    market_max_qty: Decimal  # MARKET_LOT_SIZE maxQty (market orders)
    tick: Decimal  # PRICE_FILTER tickSize
    min_price: Decimal
    max_price: Decimal
    min_notional: Decimal  # MIN_NOTIONAL notional, USDT
    price_precision: int  # exchangeInfo's pricePrecision and quantityPrecision (not derived from the tick)
    quantity_precision: int
    brackets: tuple[Bracket, ...] | None = None

    def instrument(self) -> Instrument:
        """What the sizing and the orders use (the config's shape)."""
        return Instrument(lot_size=float(self.step), min_notional=float(self.min_notional))

    def to_json(self) -> dict:
        data: dict[str, Any] = {"asset": self.asset, "symbol": self.symbol, "status": self.status}
        data["onboard_date"] = (
            None if self.onboard_date is None else self.onboard_date.isoformat().replace("+00:00", "Z")
        )
        for name in _DECIMALS:
            data[name] = _text(getattr(self, name))
        data["price_precision"], data["quantity_precision"] = self.price_precision, self.quantity_precision
        data["brackets"] = None if self.brackets is None else [b.to_json() for b in self.brackets]
        return data


_DECIMALS = ("step", "min_qty", "max_qty", "market_max_qty", "tick", "min_price", "max_price", "min_notional")


@dataclass(frozen=True)
class InstrumentTable:
    """Rules by asset, with where they came from: ``source`` (an exchange URL, a file, the bundled
    rules), ``fetched_at`` and ``brackets`` (how the brackets were obtained, or why they were not)."""

    rules: dict[str, InstrumentRules]
    source: str
    fetched_at: pd.Timestamp | None = None
    brackets: str = "fetched"
    origins: dict[str, str] = field(default_factory=dict)  # asset -> where a run took its rules from

    def get(self, asset: str) -> InstrumentRules | None:
        return self.rules.get(asset)

    def select(self, assets: Iterable[str]) -> InstrumentTable:
        """The rows of ``assets`` (an error naming the fetch command for those without rules)."""
        assets = list(assets)
        missing = [a for a in assets if a not in self.rules]
        if missing:
            raise InstrumentsError(missing_rules_message(missing))
        return replace(self, rules={a: self.rules[a] for a in assets})

    def to_json(self) -> str:
        header = {
            "format": FORMAT,
            "source": self.source,
            "fetched_at": None if self.fetched_at is None else self.fetched_at.isoformat().replace("+00:00", "Z"),
            "brackets": self.brackets,
        }
        if self.origins:
            header["origins"] = self.origins
        rows = [rules.to_json() for rules in self.rules.values()]
        return json.dumps({**header, "instruments": rows}, indent=1) + "\n"

    def write(self, path: str | Path) -> Path:
        """Write the table atomically (never half a file under its name)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = self.to_json()
        return write_atomically(path, lambda tmp: tmp.write_text(text))


# -- reading: our file, Binance's exchangeInfo and leverageBracket JSON ---------------------------


class _Reader:
    """Field access that fails in one line naming the file, the row and the field."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, what: str) -> InstrumentsError:
        return InstrumentsError(f"{self.where}: {what}")

    def get(self, data: dict, name: str, row: str) -> Any:
        if not isinstance(data, dict):
            raise self.fail(f"{row}: not a JSON object")
        if name not in data:
            raise self.fail(f"{row}: field '{name}' is missing")
        return data[name]

    def decimal(self, data: dict, name: str, row: str, positive: bool = True) -> Decimal:
        value = self.get(data, name, row)
        try:
            number = (
                Decimal(str(value)) if isinstance(value, str | int | float) and not isinstance(value, bool) else None
            )
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite() or number < 0 or (positive and number == 0):
            kind = "positive" if positive else "non-negative"
            raise self.fail(f"{row}: field '{name}' is not a {kind} number: {value!r}")
        return number

    def integer(self, data: dict, name: str, row: str) -> int:
        value = self.get(data, name, row)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.fail(f"{row}: field '{name}' is not a non-negative integer: {value!r}")
        return value

    def text(self, data: dict, name: str, row: str) -> str:
        value = self.get(data, name, row)
        if not isinstance(value, str) or not value:
            raise self.fail(f"{row}: field '{name}' is not a text: {value!r}")
        return value

    def time(self, value: Any, name: str, row: str) -> pd.Timestamp | None:
        if value is None:
            return None
        try:
            if isinstance(value, int) and not isinstance(value, bool):
                return pd.Timestamp(value, unit="ms", tz="UTC")
            if isinstance(value, str):
                stamp = pd.Timestamp(value)
                if stamp.tzinfo is not None:
                    return stamp.tz_convert("UTC")
        except (ValueError, OverflowError):
            pass
        raise self.fail(f"{row}: field '{name}' is not a UTC time: {value!r}")


def _asset_name(reader: _Reader, asset: str, row: str) -> str:
    if not asset.isalnum() or asset != asset.upper():
        raise reader.fail(f"{row}: asset {asset!r} is not an upper-case alphanumeric name")
    return asset


def _check(reader: _Reader, rules: InstrumentRules, row: str) -> InstrumentRules:
    """The filters hold together: no minimum above its maximum."""
    if rules.min_qty > rules.max_qty or rules.min_price > rules.max_price:
        raise reader.fail(f"{row}: a minimum above its maximum (quantity or price)")
    return rules


def parse_brackets(reader: _Reader, items: Any, row: str) -> tuple[Bracket, ...]:
    """A symbol's brackets (Binance's leverageBracket shape), checked to cover notional from 0 upwards."""
    if not isinstance(items, list) or not items:
        raise reader.fail(f"{row}: field 'brackets' is not a non-empty list")
    brackets = []
    for i, item in enumerate(items):
        where = f"{row} bracket {i + 1}"
        brackets.append(
            Bracket(
                reader.integer(item, "bracket", where),
                reader.integer(item, "initialLeverage", where),
                reader.decimal(item, "notionalFloor", where, positive=False),
                reader.decimal(item, "notionalCap", where),
                reader.decimal(item, "maintMarginRatio", where, positive=False),
                reader.decimal(item, "cum", where, positive=False),
            )
        )
    brackets.sort(key=lambda b: b.notional_floor)
    if brackets[0].notional_floor != 0 or any(
        a.notional_cap != b.notional_floor for a, b in itertools.pairwise(brackets)
    ):
        raise reader.fail(f"{row}: the brackets do not cover notional from 0 without gaps")
    return tuple(brackets)


def parse_symbol_info(reader: _Reader, item: dict, row: str) -> InstrumentRules:
    """One exchangeInfo ``symbols`` entry (Binance's shape) as rules."""
    filters = reader.get(item, "filters", row)
    if not isinstance(filters, list):
        raise reader.fail(f"{row}: field 'filters' is not a list")
    by_type = {f.get("filterType"): f for f in filters if isinstance(f, dict)}
    for name in BINANCE_FILTERS:
        if name not in by_type:
            raise reader.fail(f"{row}: no {name} filter")
    price, lot, market, notional = (by_type[name] for name in BINANCE_FILTERS)
    rules = InstrumentRules(
        asset=_asset_name(reader, reader.text(item, "baseAsset", row), row),
        symbol=reader.text(item, "symbol", row),
        status=reader.text(item, "status", row),
        onboard_date=reader.time(item.get("onboardDate"), "onboardDate", row),
        step=reader.decimal(lot, "stepSize", f"{row} LOT_SIZE"),
        min_qty=reader.decimal(lot, "minQty", f"{row} LOT_SIZE"),
        max_qty=reader.decimal(lot, "maxQty", f"{row} LOT_SIZE"),
        market_max_qty=reader.decimal(market, "maxQty", f"{row} MARKET_LOT_SIZE"),
        tick=reader.decimal(price, "tickSize", f"{row} PRICE_FILTER"),
        min_price=reader.decimal(price, "minPrice", f"{row} PRICE_FILTER"),
        max_price=reader.decimal(price, "maxPrice", f"{row} PRICE_FILTER"),
        min_notional=reader.decimal(notional, "notional", f"{row} MIN_NOTIONAL", positive=False),
        price_precision=reader.integer(item, "pricePrecision", row),
        quantity_precision=reader.integer(item, "quantityPrecision", row),
    )
    return _check(reader, rules, row)


def is_usdm_perpetual(item: Any) -> bool:
    """An exchangeInfo entry of a USDT-margined perpetual (not a quarterly, not another quote)."""
    return (
        isinstance(item, dict)
        and item.get("contractType") == "PERPETUAL"
        and item.get("quoteAsset") == QUOTE
        and item.get("marginAsset", QUOTE) == QUOTE
    )


def parse_exchange_info(symbols: list, where: str) -> dict[str, InstrumentRules]:
    """exchangeInfo's ``symbols`` (or ccxt markets' ``info``): the USDT-M perpetuals' rules by asset."""
    reader = _Reader(where)
    rules: dict[str, InstrumentRules] = {}
    for item in symbols:
        if is_usdm_perpetual(item):
            parsed = parse_symbol_info(reader, item, f"symbol {item.get('symbol')!r}")
            rules[parsed.asset] = parsed
    return rules


def parse_leverage_brackets(answer: Any, where: str) -> dict[str, tuple[Bracket, ...]]:
    """GET /fapi/v1/leverageBracket's answer (a list, or one symbol's entry): brackets by symbol."""
    reader = _Reader(where)
    entries = [answer] if isinstance(answer, dict) else answer
    if not isinstance(entries, list):
        raise reader.fail("the leverage brackets are not a list of symbols")
    out = {}
    for i, entry in enumerate(entries):
        symbol = reader.text(entry, "symbol", f"entry {i + 1}")
        out[symbol] = parse_brackets(reader, reader.get(entry, "brackets", symbol), symbol)
    return out


def with_brackets(rules: dict[str, InstrumentRules], brackets: dict[str, tuple[Bracket, ...]]) -> dict:
    return {asset: replace(r, brackets=brackets.get(r.symbol)) for asset, r in rules.items()}


def _table_from_json(data: Any, where: str) -> InstrumentTable:
    reader = _Reader(where)
    if isinstance(data, dict) and "symbols" in data:  # Binance's own exchangeInfo answer
        if not isinstance(data["symbols"], list):
            raise reader.fail("field 'symbols' is not a list")
        return InstrumentTable(
            parse_exchange_info(data["symbols"], where),
            source=f"Binance exchangeInfo JSON {where}",
            fetched_at=reader.time(data.get("serverTime"), "serverTime", "exchangeInfo"),
            brackets="not in exchangeInfo (GET /fapi/v1/leverageBracket serves them)",
        )
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise reader.fail(f"not an instruments file (its 'format' must be {FORMAT!r}) nor Binance's exchangeInfo JSON")
    rows = reader.get(data, "instruments", "header")
    if not isinstance(rows, list):
        raise reader.fail("field 'instruments' is not a list")
    rules: dict[str, InstrumentRules] = {}
    for i, item in enumerate(rows):
        row = f"instruments[{i}]"
        asset = _asset_name(reader, reader.text(item, "asset", row), row)
        row = f"{row} ({asset})"
        if asset in rules:
            raise reader.fail(f"{row}: a second row for {asset}")
        brackets = item.get("brackets")
        parsed = InstrumentRules(
            asset=asset,
            symbol=reader.text(item, "symbol", row),
            status=reader.text(item, "status", row),
            onboard_date=reader.time(item.get("onboard_date"), "onboard_date", row),
            **{name: reader.decimal(item, name, row, positive=name != "min_notional") for name in _DECIMALS},
            price_precision=reader.integer(item, "price_precision", row),
            quantity_precision=reader.integer(item, "quantity_precision", row),
            brackets=None if brackets is None else parse_brackets(reader, brackets, row),
        )
        rules[asset] = _check(reader, parsed, row)
    origins = data.get("origins") or {}
    return InstrumentTable(
        rules,
        source=reader.text(data, "source", "header"),
        fetched_at=reader.time(data.get("fetched_at"), "fetched_at", "header"),
        brackets=reader.text(data, "brackets", "header"),
        origins=origins if isinstance(origins, dict) else {},
    )


def parse_instruments(text: str, where: str) -> InstrumentTable:
    """An instruments table from its JSON text (ours or Binance's exchangeInfo); ``where`` names it in errors."""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise InstrumentsError(f"{where}: not valid JSON: {error}") from None
    return _table_from_json(data, where)


def read_instruments(path: str | Path) -> InstrumentTable:
    """An instruments file: ours (``prod-system instruments``) or Binance's exchangeInfo JSON."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InstrumentsError(f"instruments file {path} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InstrumentsError(f"cannot read the instruments file {path}: {error}") from None
    return parse_instruments(text, f"instruments file {path}")


def bundled_instruments() -> InstrumentTable:
    """The rules shipped with the package for the bundled candles' assets (source and date in its header)."""
    return read_instruments(BUNDLED_INSTRUMENTS)


def snapshot_path(source: str) -> Path | None:
    """The snapshot file of a market-data source, if it is one ('parquet:FILE' or FILE.parquet)."""
    if source.startswith("parquet:"):
        return Path(source.removeprefix("parquet:"))
    if source.endswith(".parquet") and not source.startswith("csv:"):
        return Path(source)
    return None


def embedded_instruments(source: str | Path) -> InstrumentTable | None:
    """The table a snapshot carries (None: not a snapshot, not there yet, or written without one)."""
    path = snapshot_path(str(source))
    if path is None or not path.exists():  # a file, or a folder of monthly files
        return None
    try:
        text = read_snapshot_metadata(path).get(SNAPSHOT_KEY)
    except MarketDataError:
        return None  # reading the candles will say what is wrong with the file
    return None if text is None else parse_instruments(text, f"the instruments embedded in {path}")


def combine(assets: Iterable[str], tables: list[tuple[str, InstrumentTable | None]]) -> InstrumentTable:
    """Each asset's rules from the first table that has them (tables given as (name, table)); an
    error naming the fetch command for assets none has. ``origins`` says which table each came from."""
    rules, origins, missing = {}, {}, []
    for asset in assets:
        found = next(((name, t) for name, t in tables if t is not None and asset in t.rules), None)
        if found is None:
            missing.append(asset)
            continue
        name, table = found
        rules[asset], origins[asset] = table.rules[asset], f"{name}: {table.source}"
    if missing:
        raise InstrumentsError(missing_rules_message(missing))
    used = [t for name, t in tables if t is not None and any(o.startswith(f"{name}:") for o in origins.values())]
    fetched = [t.fetched_at for t in used if t.fetched_at is not None]
    return InstrumentTable(
        rules,
        source="; ".join(dict.fromkeys(t.source for t in used)) or "none",
        fetched_at=min(fetched) if fetched else None,
        brackets="; ".join(dict.fromkeys(t.brackets for t in used)) or "none",
        origins=origins,
    )


def _tables(source: str | Path | None, explicit: str | Path | None) -> list[tuple[str, InstrumentTable | None]]:
    """Where rules come from, first first: the file given, the snapshot's table, the bundled rules."""
    return [
        ("file", read_instruments(explicit) if explicit is not None else None),
        ("snapshot", embedded_instruments(source) if source is not None else None),
        ("bundled", _bundled_cache()),
    ]


def known_instruments(
    assets: Iterable[str], source: str | Path | None, explicit: str | Path | None
) -> tuple[InstrumentTable, list[str]]:
    """The rules of those of ``assets`` some table has (as ``market_instruments``), and the others."""
    tables = _tables(source, explicit)
    assets = list(assets)
    missing = [a for a in assets if not any(t is not None and a in t.rules for _, t in tables)]
    return combine([a for a in assets if a not in missing], tables), missing


def market_instruments(
    assets: Iterable[str], source: str | Path | None, explicit: str | Path | None
) -> InstrumentTable:
    """The rules of a market's assets: the file given, else the snapshot's table, else the bundled rules."""
    return combine(assets, _tables(source, explicit))


def resolve_instruments(config: SystemConfig) -> tuple[SystemConfig, InstrumentTable]:
    """A run's rules, resolved at its start: per asset the config's override, else the config's
    instruments file, else the snapshot's table, else the bundled rules; an error naming the fetch
    command for an asset with none. Returns the config with every universe asset's lot size and min
    notional under ``portfolio.instruments`` (what the sizing and the orders use, saved in the log
    dir's system_config.yaml) and the exchange's rows of the universe (an overridden asset's too,
    where some table has it)."""
    overrides = config.portfolio.instruments
    tables = _tables(config.market_data.source, config.market_data.instruments)
    table = combine([a for a in config.universe if a not in overrides], tables)
    rules, origins = {}, {}
    for asset in config.universe:
        if asset in overrides:
            origins[asset] = "config: portfolio.instruments (lot size, min notional)"
            known = next((t.rules[asset] for _, t in tables if t is not None and asset in t.rules), None)
            if known is not None:
                rules[asset] = known
        else:
            rules[asset], origins[asset] = table.rules[asset], table.origins[asset]
    instruments = {a: overrides[a] if a in overrides else rules[a].instrument() for a in config.universe}
    portfolio = config.portfolio.model_copy(update={"instruments": instruments})
    return config.model_copy(update={"portfolio": portfolio}), replace(table, rules=rules, origins=origins)


def instrument_of(portfolio: PortfolioConfig, asset: str) -> Instrument:
    """An asset's lot size and min notional: the config's (a run's resolved config holds every
    asset's), else the bundled rules; an error naming the fetch command otherwise."""
    if asset in portfolio.instruments:
        return portfolio.instruments[asset]
    rules = _bundled_cache().get(asset)
    if rules is None:
        raise InstrumentsError(missing_rules_message([asset]))
    return rules.instrument()


_BUNDLED: list[InstrumentTable] = []


def _bundled_cache() -> InstrumentTable:
    """The bundled table, read once per process (the sizing asks per bar)."""
    if not _BUNDLED:
        _BUNDLED.append(bundled_instruments())
    return _BUNDLED[0]


# -- fetching from the exchange ----------------------------------------------------------------------


def fetch_instruments(client, source: str, with_brackets_reason: str | None = None) -> InstrumentTable:
    """The rules of every USDT-M perpetual the exchange lists, through a ccxt ``binanceusdm`` client
    (``load_markets``, then the signed leverageBracket endpoint). ``with_brackets_reason`` set means:
    do not ask for the brackets (no API key), and record why; they are never made up."""
    markets = client.load_markets(reload=True)
    infos = [market.get("info") for market in markets.values()]
    rules = parse_exchange_info(infos, f"the exchangeInfo of {source}")
    fetched_at = pd.Timestamp.now(tz="UTC").floor("s")
    if with_brackets_reason is not None:
        return InstrumentTable(
            rules, source=source, fetched_at=fetched_at, brackets=f"not fetched: {with_brackets_reason}"
        )
    answer = client.fapiPrivateGetLeverageBracket()
    brackets = parse_leverage_brackets(answer, f"the leverage brackets of {source}")
    return InstrumentTable(with_brackets(rules, brackets), source=source, fetched_at=fetched_at, brackets="fetched")
