"""The system config: one validated object holding every parameter of a run.

Loaded from YAML, overridden from the CLI or Dagster run config, and saved into the system log dir.
Unknown fields and bad values fail with a ``ConfigError`` naming the field.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from prod_system.common.timeutil import compact, format_duration, is_aligned, parse_duration, to_utc
from prod_system.errors import ConfigError
from prod_system.naming import model_folder


class RunMode(StrEnum):
    """The three ways a system runs: the same code, another clock and broker (see ``_broker_of_the_mode``)."""

    SIMULATION = "simulation"  # a replay of a snapshot on a simulated clock, mocked broker
    PAPER_TRADING = "paper_trading"  # the real clock and market, mocked broker: never sends orders
    PROD = "prod"  # the real clock and market, Binance USDT-M through ccxt

    @classmethod
    def live(cls) -> tuple[str, ...]:
        """The modes on the real clock (live sessions, bar by bar), as plain strings: Dagster's tags and
        keys take strings, not enums."""
        return (cls.PAPER_TRADING.value, cls.PROD.value)


Trigger = Literal["manual", "scheduled"]

DEFAULT_UNIVERSE = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "DOT", "MATIC"]
TOP_WINDOW = "1d"  # the trailing window of 'top:N' when the spec gives none (Binance's 24-hour volume)
_TOP_WINDOW = parse_duration(TOP_WINDOW)


@dataclass(frozen=True)
class UniverseRule:
    """A universe chosen from the market data rather than listed: every trading asset of the snapshot
    (``count`` None: 'all'), or the ``count`` assets of largest quote volume over the ``window`` before
    the run's start ('top:N/WINDOW'). ``data.universe`` resolves it into the run's list."""

    count: int | None = None
    window: pd.Timedelta = _TOP_WINDOW

    def __str__(self) -> str:
        return "all" if self.count is None else f"top:{self.count}/{format_duration(self.window)}"


def parse_universe(spec: str) -> list[str] | UniverseRule:
    """A universe spec: 'BTC,ETH' (the list, upper case), 'all', or 'top:N' with an optional trailing
    window ('top:20/7d'; default 1d). A bad spec is a ValueError saying what is wrong with it."""
    text = spec.strip()
    if text.lower() == "all":
        return UniverseRule()
    if text.lower().startswith("top:"):
        count, _, window = text[4:].partition("/")
        if not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"{spec!r}: top:N takes a whole number of assets N >= 1, e.g. top:20 or top:20/7d")
        try:
            delta = _duration(window.strip() or TOP_WINDOW)
        except ValueError as error:
            raise ValueError(f"{spec!r}: the window of top:N: {error}") from None
        if delta < pd.Timedelta(minutes=1) or delta.value % pd.Timedelta(minutes=1).value:
            raise ValueError(f"{spec!r}: the window of top:N is a whole number of minutes, e.g. top:20/7d")
        return UniverseRule(int(count), delta)
    assets = [asset.strip().upper() for asset in text.split(",") if asset.strip()]
    if not assets:
        raise ValueError(f"{spec!r}: give assets (BTC,ETH), 'all' or 'top:N'")
    return assets


def _duration(value: str) -> pd.Timedelta:
    """``parse_duration``, with a duration too long for a Timedelta as a ValueError (reported under the field)."""
    try:
        return parse_duration(value).as_unit("ns")
    except (OverflowError, pd.errors.OutOfBoundsTimedelta):
        raise ValueError(f"duration {value!r} is out of range") from None


def is_database(source: str) -> bool:
    return source.startswith(("sqlite:", "postgresql:", "postgres:", "postgresql+"))


ARCHIVE_SOURCE = "binance-archive"  # 'binance-archive:DIR': Binance's public data archive of USDT-M klines


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class Instrument(_Strict):
    """The exchange rules the sizing and the orders use (Binance USDT-M LOT_SIZE step and MIN_NOTIONAL).

    In a config, an override: the exchange's rules come from the instruments table
    (``prod_system.data.instruments``); a run resolves them at its start and saves them here."""

    lot_size: float = Field(gt=0, description="quantity step, in shares (base asset)")
    min_notional: float = Field(default=5.0, ge=0, description="smallest order value, in USDT")


class MarketDataConfig(_Strict):
    source: str = Field(
        description="where candles come from: 'parquet:FILE' (a snapshot), 'csv:DIR' "
        "({SYMBOL}_USDT.csv.gz files), 'binance-archive:DIR' (Binance's public data archive: kline zips), "
        "a path to a .parquet snapshot, or the real-time market database "
        "('sqlite:///FILE', 'postgresql://user@host/db'; live sessions read it)"
    )
    knowledge_delay: str = Field(
        default="10s", description="time after a candle's close at which it is known (historical files)"
    )
    max_jump: float = Field(
        default=0.5,
        gt=0,
        description="data guard: an asset whose close moved more than this fraction from the previous bar's "
        "is not traded on that bar",
    )
    delisted_after: str = Field(
        default="1h", description="data guard: how long without any candle before an asset counts as delisted"
    )
    instruments: str | None = Field(
        default=None,
        description="the exchange's rules of the assets: a file from `prod-system instruments` (or Binance's "
        "exchangeInfo JSON); None: the snapshot's embedded table, else the rules bundled for the shipped assets",
    )

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        kinds = ("csv:", "parquet:", f"{ARCHIVE_SOURCE}:")
        if not (value.startswith(kinds) or value.endswith(".parquet") or is_database(value)):
            raise ValueError(
                f"unknown market data source {value!r}: "
                f"use 'csv:DIR', '{ARCHIVE_SOURCE}:DIR', 'parquet:FILE', a .parquet file or a database URL"
            )
        return value

    @field_validator("delisted_after")
    @classmethod
    def _delisted(cls, value: str) -> str:
        if _duration(value) <= pd.Timedelta(0):
            raise ValueError("must be positive")
        return value

    @property
    def delisted_after_delta(self) -> pd.Timedelta:
        return parse_duration(self.delisted_after)

    @field_validator("knowledge_delay")
    @classmethod
    def _delay(cls, value: str) -> str:
        delta = _duration(value)
        if delta < pd.Timedelta(0):
            raise ValueError("must not be negative")
        return format_duration(delta) if delta.total_seconds() % 1 == 0 else value

    @property
    def delay(self) -> pd.Timedelta:
        return parse_duration(self.knowledge_delay)


class PortfolioConfig(_Strict):
    initial_cash: float = Field(default=1_000_000.0, gt=0, description="USDT at the start of the run")
    target_gmv: float = Field(default=100_000.0, gt=0, description="gross market value to size to, USDT")
    max_notional_per_asset: float = Field(
        default=30_000.0, gt=0, description="cap on |target notional| of any asset, USDT"
    )
    instruments: dict[str, Instrument] = Field(
        default_factory=dict,
        description="per-asset lot size and min notional overriding the exchange's rules (market_data.instruments); "
        "a run saves every asset's resolved rules here",
    )


# Binance USDT-M's standard (regular, VIP 0) tier: what an account pays before volume discounts. The
# local exchange charges the same by default, so a rehearsal's fees match a mocked run's.
BINANCE_TAKER_FEE = 0.0005
BINANCE_MAKER_FEE = 0.0002
# Binance's funding rate when the premium is nil: the interest rate of 0.03% a day, per 8-hour settlement
BINANCE_BASE_FUNDING_RATE = 0.0001
FUNDING_INTERVAL = "8h"  # settlements at 00:00, 08:00 and 16:00 UTC


class FeesConfig(_Strict):
    """Commission per fill, as a fraction of its notional (price x quantity), as Binance charges it."""

    taker: float = Field(
        default=BINANCE_TAKER_FEE, ge=0, le=0.01, description="fee of a fill that takes liquidity (market orders)"
    )
    maker: float = Field(
        default=BINANCE_MAKER_FEE,
        ge=-0.001,
        le=0.01,
        description="fee of a fill that rests first (limit orders; negative: a rebate)",
    )


class FundingConfig(_Strict):
    """Funding of perpetual positions: at each settlement, a position pays position x mark x rate."""

    mode: Literal["data", "assumed", "off"] = Field(
        default="data",
        description="'data': the market data's funding rates (the assumed rate for an asset the window has none "
        "of); 'assumed': the assumed rate always; 'off': no funding (reports say so)",
    )
    assumed_rate: float = Field(
        default=BINANCE_BASE_FUNDING_RATE,
        ge=-0.03,
        le=0.03,
        description="rate per settlement where there is no funding data (positive: longs pay shorts)",
    )
    interval: str = Field(
        default=FUNDING_INTERVAL,
        description="time between assumed settlements, from 00:00 UTC: whole hours that divide a day (Binance "
        "uses 1h, 4h or 8h)",
    )

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        delta = _duration(value)
        hour = pd.Timedelta(hours=1)
        if delta < hour or delta.value % hour.value or pd.Timedelta(days=1).value % delta.value:
            raise ValueError("must be a whole number of hours that divides a day (Binance uses 1h, 4h or 8h)")
        return format_duration(delta)

    @property
    def interval_delta(self) -> pd.Timedelta:
        return parse_duration(self.interval)


class SlippageConfig(_Strict):
    """The mocked broker's execution cost, off by default: each fill's price moves against the order by
    ``half_spread_bps + impact_bps_per_million x |notional| / 1,000,000`` basis points (a flat half spread,
    and an impact that grows with the order's size). The research portfolio applies the same."""

    half_spread_bps: float = Field(default=0.0, ge=0, le=100, description="half the bid-ask spread, bps")
    impact_bps_per_million: float = Field(
        default=0.0, ge=0, le=100, description="extra bps per 1,000,000 USDT of the order's notional"
    )


class CostsConfig(_Strict):
    """What trading costs: fees, funding and (for the mocked broker) slippage."""

    fees: FeesConfig = Field(default_factory=FeesConfig)
    funding: FundingConfig = Field(default_factory=FundingConfig)
    slippage: SlippageConfig = Field(default_factory=SlippageConfig)


class BrokerConfig(_Strict):
    """Who executes the orders. API keys are never here: only the names of the environment
    variables that hold them."""

    kind: Literal["mocked", "ccxt"] = Field(
        default="mocked", description="'mocked': 100% fills at the next bar's TWAP; 'ccxt': Binance USDT-M via ccxt"
    )
    exchange_url: str | None = Field(
        default=None, description="base URL of a Binance-compatible exchange (the local one); None = Binance"
    )
    api_key_env: str = Field(default="BINANCE_API_KEY", description="environment variable holding the API key")
    api_secret_env: str = Field(default="BINANCE_API_SECRET", description="environment variable holding the secret")
    execution: Literal["market", "twap"] = Field(
        default="market", description="'market': one market order per asset; 'twap': child orders across the bar"
    )
    twap_waves: int = Field(default=5, ge=1, le=60, description="child orders per asset and bar for 'twap'")
    timeout_seconds: float = Field(default=10.0, gt=0, le=120, description="HTTP timeout of one request")
    max_attempts: int = Field(default=6, ge=1, le=20, description="tries of one request on transient errors")
    backoff_seconds: float = Field(default=0.2, gt=0, le=30, description="first retry delay; doubles, capped at 5 s")
    concurrency: int = Field(default=8, ge=1, le=64, description="requests in flight at once")
    on_mismatch: Literal["refuse", "adopt"] = Field(
        default="refuse",
        description="when the exchange's positions or open orders disagree with the portfolio (at start, and at "
        "each in-session check): 'refuse' to trade, or 'adopt' the exchange's positions (and cancel our open orders)",
    )
    check_every_bars: int = Field(
        default=12,
        ge=0,
        description="a prod session compares its positions and open orders with the exchange's every this many "
        "bars, not only at start (0: only at start); a mismatch alerts, then on_mismatch decides",
    )
    statement_every_bars: int = Field(
        default=1,
        ge=1,
        description="a prod session pulls the exchange's income history and balances every this many bars "
        "(broker/income, broker/account: the reconciliation's portfolio vs exchange)",
    )

    @field_validator("api_key_env", "api_secret_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not value.replace("_", "").isalnum() or not value[0].isalpha():
            raise ValueError(f"must be the NAME of an environment variable (e.g. BINANCE_API_KEY), got {value[:4]}...")
        return value


class RiskConfig(_Strict):
    """Limits the broker enforces on every order, whatever the model and the sizing asked for."""

    max_notional_per_asset: float | None = Field(default=None, gt=0, description="cap on |position| value, USDT")
    max_gross_notional: float | None = Field(default=None, gt=0, description="cap on the sum of |position| values")
    max_order_notional: float | None = Field(default=None, gt=0, description="cap on one order's value, USDT")
    kill_switch_file: str | None = Field(
        default=None,
        description="if this file exists, no new orders; if it contains 'flatten', close every position",
    )
    margin_ratio_alert: float | None = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="alert when the account's margin ratio (maintenance margin / margin balance, as Binance shows "
        "it; liquidation at 1) reaches this; None: no alert",
    )


class LiveConfig(_Strict):
    """How a live session (paper_trading, prod) waits for its data and what it does when it is late."""

    data_timeout_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="after a bar's close, how long to wait for every asset's candle"
    )
    on_missing: Literal["trade_available", "skip_bar"] = Field(
        default="trade_available",
        description="when some assets' candles are still missing at the timeout: trade the others (the "
        "missing ones keep their holdings), or skip the bar",
    )
    poll_seconds: float = Field(default=0.1, gt=0, le=10, description="how often to look for the bar's candles")


class ObserverConfig(_Strict):
    """What the PnL observer writes after a run (its notebook) and the thresholds it alerts on."""

    notebook: bool = Field(
        default=True,
        description="execute the observer notebook (papermill) into the report folder, .ipynb and HTML; false: "
        "summary.json and the tables only (a sweep of many runs, say)",
    )
    show_input: bool = Field(default=False, description="the notebook's HTML shows its code cells too")
    min_balance: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="alert when the account's balance (USDT) is below this; None: no alert",
    )
    min_cumulative_pnl: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="alert when the run's cumulative PnL (USDT, net of costs) is below this (-5000, say); None: none",
    )
    min_pnl_over_gmv: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="alert when cumulative PnL / mean gross market value is below this, e.g. -0.02; None: no alert",
    )


class AlertsConfig(_Strict):
    """Where alerts go: apprise URLs (Slack, Telegram, Discord, e-mail, webhooks) read from an environment
    variable, never from this file (they carry tokens)."""

    urls_env: str = Field(
        default="PROD_SYSTEM_ALERT_URLS",
        description="environment variable holding the apprise URLs, separated by spaces or commas; unset: no alert "
        "is sent (each is still logged)",
    )
    repeat_after_minutes: float = Field(
        default=60.0, ge=0, description="an alert of the same cause is sent again only after this long"
    )

    @field_validator("urls_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not value.replace("_", "").isalnum() or not value[0].isalpha():
            raise ValueError(
                f"must be the NAME of an environment variable (e.g. PROD_SYSTEM_ALERT_URLS), got {value[:4]}..."
            )
        return value


class SystemConfig(_Strict):
    """Every parameter of one run of the system."""

    model: str = Field(description="built-in model name (C1b, C3a) or 'package.module:function'")
    model_params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the model")
    universe: list[str] = Field(
        default_factory=lambda: list(DEFAULT_UNIVERSE),
        min_length=1,
        description="the assets traded (the run's identity); simulate and historical-pnl default to the snapshot's",
    )
    universe_rule: str | None = Field(
        default=None,
        description="'all' or 'top:N[/WINDOW]': the rule that chose `universe` from the market data as of start "
        "(resolved by the CLI and the Dagster resources, recorded here); None: `universe` as listed",
    )
    universe_each_day: bool = Field(
        default=False,
        description="with a top:N universe_rule: rank again at each session day's start (00:00 UTC) within the "
        "run; the run trades the union of the days' lists (`universe`) and an asset outside a day's list gets a "
        "zero target on that day's bars",
    )
    universe_by_day: dict[str, list[str]] | None = Field(
        default=None,
        description="written by the run with universe_each_day: each session day's top:N (YYYY-MM-DD -> assets)",
    )
    bar: str = Field(default="5m", description="bar length: the system decides once per bar")
    run_mode: RunMode = RunMode.SIMULATION
    trigger: Trigger = "manual"
    start: pd.Timestamp = Field(description="first bar starts here (UTC, aligned to the bar)")
    end: pd.Timestamp = Field(description="last bar ends here (UTC, aligned to the bar)")
    market_data: MarketDataConfig
    portfolio: PortfolioConfig = Field(default_factory=PortfolioConfig)
    broker: BrokerConfig = Field(
        default=None, validate_default=True, description="who executes: decided by run_mode (see _broker_of_the_mode)"
    )
    risk: RiskConfig = Field(default_factory=RiskConfig)
    costs: CostsConfig = Field(default_factory=CostsConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)
    observer: ObserverConfig = Field(default_factory=ObserverConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    log_root: str = Field(default="system_runs", description="root folder of the system log dirs")
    profile_memory: bool = Field(default=True, description="record each DAG node's peak memory (tracemalloc)")

    # run_mode keeps its plain string value (RunMode is a StrEnum: it compares equal): tags and paths stay strings
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True, use_enum_values=True)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> pd.Timestamp:
        try:
            return to_utc(value)
        except (TypeError, OverflowError):
            raise ValueError(f"not a timestamp: {value!r}") from None

    @field_validator("broker", mode="before")
    @classmethod
    def _broker_default(cls, value: Any, info: ValidationInfo) -> Any:
        """prod trades through ccxt, the other modes through the mocked broker, unless the config says."""
        kind = "ccxt" if info.data.get("run_mode") == RunMode.PROD else "mocked"
        if value is None:
            return {"kind": kind}
        if isinstance(value, dict) and value.get("kind") is None:
            return {**value, "kind": kind}
        return value

    @field_validator("broker")
    @classmethod
    def _broker_of_the_mode(cls, broker: BrokerConfig, info: ValidationInfo) -> BrokerConfig:
        """The run mode decides who may execute, so that a typo cannot send real orders from what the
        operator believes is paper trading: prod through ccxt only; paper_trading through the mocked
        broker only; a simulation through the mocked broker, or through ccxt against a local exchange
        (an exchange_url on this machine: the replay of tests and rehearsals), never a remote one."""
        mode = info.data.get("run_mode")
        if mode == RunMode.PROD and broker.kind != "ccxt":
            raise ValueError("prod trades through ccxt (kind: ccxt); use run_mode paper_trading for the mocked broker")
        if mode == RunMode.PAPER_TRADING and broker.kind != "mocked":
            raise ValueError(
                "paper_trading never sends orders: its broker is the mocked one (kind: mocked); "
                "use run_mode prod to trade through ccxt"
            )
        if mode == RunMode.SIMULATION and broker.kind == "ccxt" and not _is_loopback(broker.exchange_url):
            raise ValueError(
                f"a simulation never trades on a real exchange: kind ccxt needs an exchange_url on this machine "
                f"(the local exchange, e.g. http://127.0.0.1:8765), got {broker.exchange_url or 'Binance'}"
            )
        return broker

    @field_validator("bar")
    @classmethod
    def _bar(cls, value: str) -> str:
        delta = _duration(value)
        if delta < pd.Timedelta(minutes=1) or delta.value % pd.Timedelta(minutes=1).value:
            raise ValueError("must be a whole number of minutes (a multiple of the market data's candles)")
        return format_duration(delta)

    @field_validator("universe")
    @classmethod
    def _universe(cls, value: list[str]) -> list[str]:
        cleaned = [asset.strip().upper() for asset in value]
        if any(not asset or not asset.isalnum() for asset in cleaned):
            raise ValueError(f"asset names must be alphanumeric, got {value}")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError(f"duplicate assets in {value}")
        return cleaned

    @field_validator("universe_rule")
    @classmethod
    def _universe_rule(cls, value: str | None) -> str | None:
        if value is None:
            return None
        rule = parse_universe(value)
        if not isinstance(rule, UniverseRule):
            raise ValueError(f"{value!r} is a list: put it under universe (universe_rule is 'all' or 'top:N')")
        return str(rule)

    @field_validator("universe_by_day")
    @classmethod
    def _universe_by_day(cls, value: dict[str, list[str]] | None, info: ValidationInfo) -> dict | None:
        """Each day a date, its assets among the run's universe (the union of the days' lists)."""
        if value is None:
            return None
        universe = set(info.data.get("universe") or ())
        for day, assets in value.items():
            try:
                pd.Timestamp(day)
            except ValueError:
                raise ValueError(f"{day!r} is not a day (YYYY-MM-DD)") from None
            outside = [asset for asset in assets if asset not in universe]
            if outside:
                raise ValueError(f"{day}: {outside} not in universe")
        return {str(pd.Timestamp(day).date()): list(assets) for day, assets in value.items()}

    @model_validator(mode="after")
    def _window(self) -> SystemConfig:
        bar = self.bar_delta
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        for name in ("start", "end"):
            if not is_aligned(getattr(self, name), bar):
                raise ValueError(f"{name} ({getattr(self, name)}) is not aligned to the {self.bar} bar")
        return self

    @property
    def bar_delta(self) -> pd.Timedelta:
        return parse_duration(self.bar)

    @property
    def run_id(self) -> str:
        """Deterministic id of the run: the same window of the same system gets the same id."""
        key = "|".join(
            [self.model, self.run_mode, self.trigger, compact(self.start), compact(self.end), ",".join(self.universe)]
        )
        return hashlib.sha256(key.encode()).hexdigest()[:8]

    @property
    def model_name(self) -> str:
        """A folder-safe name of the model ('C1b', or 'mypkg.models.build_dag')."""
        return model_folder(self.model)

    def log_dir(self) -> Path:
        window = f"{compact(self.start)}.{compact(self.end)}"
        return Path(self.log_root) / self.model_name / self.run_mode / self.trigger / window / "system_log_dir"

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json")
        data["start"] = self.start.isoformat().replace("+00:00", "Z")
        data["end"] = self.end.isoformat().replace("+00:00", "Z")
        return yaml.safe_dump(data, sort_keys=False)


def _is_loopback(url: str | None) -> bool:
    """Whether ``url`` points at this machine (127.0.0.0/8, ::1, localhost)."""
    host = urlsplit(url).hostname if url else None
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _format_error(errors: list) -> str:
    lines = []
    for item in errors:
        field = ".".join(str(part) for part in item["loc"]) or "(config)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"field '{field}': {message}")
    return "invalid system config: " + "; ".join(lines)


def _deep_merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict):
            if merged.get(key) is None:
                merged[key] = _deep_merge({}, value)
            elif isinstance(merged[key], dict):
                merged[key] = _deep_merge(merged[key], value)
            # else: a section that is not a mapping stays, so that its error names it
        elif value is not None:
            merged[key] = value
    return merged


def _replaced(data: dict, overrides: dict, prefix: tuple = ()) -> list[tuple]:
    """Where ``overrides`` replace a value of ``data``."""
    paths = []
    for key, value in overrides.items():
        if value is None or key not in data:
            continue
        if not isinstance(value, dict):
            paths.append((*prefix, key))
        elif isinstance(data[key], dict):
            paths += _replaced(data[key], value, (*prefix, key))
    return paths


def _replaced_errors(data: dict, overrides: dict) -> list:
    """The errors of the values of ``data`` that ``overrides`` replace: a bad value in a config file is
    reported, not silently dropped, when an option replaces it."""
    paths = _replaced(data, overrides)
    if paths:
        try:
            SystemConfig.model_validate(data)
        except ValidationError as error:
            return [item for item in error.errors() if any(tuple(item["loc"][: len(p)]) == p for p in paths)]
    return []


def build_config(data: dict | None = None, **overrides: Any) -> SystemConfig:
    """Validate a config dict (from YAML), with CLI overrides on top (None means 'not given')."""
    errors = _replaced_errors(data or {}, overrides)
    if errors:
        raise ConfigError(_format_error(errors))
    merged = _deep_merge(data or {}, overrides)
    try:
        return SystemConfig.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(_format_error(error.errors())) from None


def load_config(path: str | Path | None = None, **overrides: Any) -> SystemConfig:
    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not a text file (UTF-8 YAML)") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
        if data is None:
            raise ConfigError(f"config file {path} is empty: it must hold a mapping of fields")
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of fields, got {type(data).__name__}")
    return build_config(data, **overrides)
