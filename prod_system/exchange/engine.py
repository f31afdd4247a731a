"""The matching and accounting engine of the local exchange: orders, fills, positions and wallets.

Pure Python, no HTTP: the server parses requests and calls these methods; they return Binance's JSON
shapes and raise ``BinanceError`` with Binance's codes. One lock guards all state, so the server's
thread and a test's thread may call it at once. Quantities and money are Decimals, so positions and
wallets stay exact (no 0.30000000000000004).

Matching: a MARKET order fills at once at the current price (the last closed candle's close) as
taker; a LIMIT GTC order that is marketable at placement does the same, otherwise it rests and
fills as maker at its own price once a candle that opened at or after its placement trades through
it (a buy when the low reaches the price, a sell when the high does). Resting orders are matched on
every call, against the candles closed since the previous call, oldest first. A LIMIT order's time
in force, as Binance has them: IOC fills what is marketable now and expires the rest (all of it
when it is not marketable); FOK fills all of it at once or is rejected (-5021, not recorded); GTX
(post-only) is rejected when it would take (-5022, not recorded), else it rests like GTC; GTD rests
like GTC until its ``goodTillDate`` (whole seconds, more than 600 s ahead, else -5040) and expires then.

Accounts are one-way (position side BOTH), cross margin at a leverage per symbol (``set_leverage``,
``EngineConfig.leverage`` until set): initial margin is notional / leverage. There is no liquidation.

Funding: at each settlement of a symbol (its funding data's times, else the assumed rate every
interval from 00:00 UTC: ``exchange.funding``), every open position pays position x mark x rate
(rounded to 8 decimals, as Binance writes it; positive rates: longs pay shorts), the mark being the
data's or else the close of the candle closing then. Settlements are applied like resting orders, on
every call, in time order with the candles closed since the previous call, so each one is applied
once (the state file keeps how far) and counts the position held at its time, not a later fill.
Every change of the wallet is an income row (REALIZED_PNL, COMMISSION, FUNDING_FEE), as Binance's
income history lists them: their sum is the wallet's change.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from pathlib import Path

import pandas as pd

from prod_system.config import BINANCE_MAKER_FEE, BINANCE_TAKER_FEE, FundingConfig
from prod_system.data.instruments import Bracket, InstrumentRules, InstrumentTable, market_instruments
from prod_system.errors import InstrumentsError
from prod_system.exchange.funding import ExchangeFunding, Settlement
from prod_system.exchange.market import ClosedCandle, MarketReplay, ReplayClock, wall_ms

QUOTE = "USDT"
ZERO = Decimal(0)
_CLIENT_ORDER_ID = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
_OPEN = ("NEW", "PARTIALLY_FILLED")
TRADE_WINDOW_MS = 7 * 24 * 3_600_000  # userTrades: startTime to endTime at most 7 days; neither sent: the last 7 days
INCOME_KEPT_MS = 90 * 24 * 3_600_000  # income history: only the last three months
FUNDING_DECIMALS = Decimal("1e-8")
# Binance's incomeType values (Get Income History); this exchange writes the first three
INCOME_TYPES = (
    "REALIZED_PNL",
    "COMMISSION",
    "FUNDING_FEE",
    "TRANSFER",
    "WELCOME_BONUS",
    "INSURANCE_CLEAR",
    "REFERRAL_KICKBACK",
    "COMMISSION_REBATE",
    "API_REBATE",
    "CONTEST_REWARD",
    "CROSS_COLLATERAL_TRANSFER",
    "OPTIONS_PREMIUM_FEE",
    "OPTIONS_SETTLE_PROFIT",
    "INTERNAL_TRANSFER",
    "AUTO_EXCHANGE",
    "DELIVERED_SETTELMENT",
    "COIN_SWAP_DEPOSIT",
    "COIN_SWAP_WITHDRAW",
    "POSITION_LIMIT_INCREASE_FEE",
    "STRATEGY_UMFUTURES_TRANSFER",
    "FEE_RETURN",
    "BFUSD_REWARD",
)
_GONE_MS = 3 * 24 * 3_600_000  # allOrders: a cancelled or expired order without a fill, 3 days after it was placed
_ACCOUNT_TOTALS = (
    "initialMargin",
    "maintMargin",
    "walletBalance",
    "unrealizedProfit",
    "marginBalance",
    "positionInitialMargin",
    "openOrderInitialMargin",
    "crossWalletBalance",
    "crossUnPnl",
)


class BinanceError(Exception):
    """An error answered as Binance does: ``{"code": code, "msg": msg}`` with an HTTP status."""

    def __init__(self, code: int, msg: str, status: int = 400):
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg
        self.status = status


def plain(value: Decimal) -> str:
    """A Decimal as Binance writes numbers: plain digits, at most 12 decimals, no trailing zeros."""
    if value.as_tuple().exponent < -12:
        value = value.quantize(Decimal("1e-12"))
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def to_decimal(price: float) -> Decimal:
    """A candle price (float) as the Decimal it was written as."""
    return Decimal(repr(price))


@dataclass(frozen=True)
class EngineConfig:
    # Binance USDT-M's standard tier, the system config's default fees (one home: prod_system.config)
    taker_fee: Decimal = Decimal(repr(BINANCE_TAKER_FEE))
    maker_fee: Decimal = Decimal(repr(BINANCE_MAKER_FEE))
    initial_balance: Decimal = Decimal("1000000")
    leverage: int = 20
    # Binance documents newClientOrderId as "a unique id among open orders": once an order is filled,
    # cancelled or expired, its id is accepted again (and trades again). True refuses an id forever,
    # stricter than Binance: a client must never rely on it to deduplicate its orders.
    strict_client_order_ids: bool = False
    # settlements: the funding data's, else the assumed rate every interval ('off': none)
    funding: FundingConfig = field(default_factory=FundingConfig)


# A symbol's rules, served exactly as the instruments table holds them (exchangeInfo filters, brackets)
SymbolRules = InstrumentRules


@dataclass
class Order:
    order_id: int
    symbol: str
    client_order_id: str
    side: str
    order_type: str
    quantity: Decimal
    price: Decimal
    reduce_only: bool
    time_ms: int
    update_ms: int
    status: str = "NEW"
    executed: Decimal = ZERO
    cum_quote: Decimal = ZERO
    time_in_force: str = "GTC"  # a MARKET order reads GTC, as on Binance
    good_till_ms: int = 0  # GTD: when it expires (whole seconds); 0 for the others

    @property
    def is_open(self) -> bool:
        return self.status in _OPEN

    @property
    def sign(self) -> int:
        return 1 if self.side == "BUY" else -1

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.executed

    def to_json(self) -> dict:
        average = self.cum_quote / self.executed if self.executed else ZERO
        return {
            "orderId": self.order_id,
            "symbol": self.symbol,
            "status": self.status,
            "clientOrderId": self.client_order_id,
            "price": plain(self.price),
            "avgPrice": plain(average),
            "origQty": plain(self.quantity),
            "executedQty": plain(self.executed),
            "cumQty": plain(self.executed),
            "cumQuote": plain(self.cum_quote),
            "timeInForce": self.time_in_force,
            "type": self.order_type,
            "reduceOnly": self.reduce_only,
            "closePosition": False,
            "side": self.side,
            "positionSide": "BOTH",
            "stopPrice": "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": self.order_type,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "NONE",
            "goodTillDate": self.good_till_ms,
            "time": self.time_ms,
            "updateTime": self.update_ms,
        }


@dataclass
class Trade:
    trade_id: int
    order_id: int
    symbol: str
    side: str
    price: Decimal
    quantity: Decimal
    realized_pnl: Decimal
    commission: Decimal
    maker: bool
    time_ms: int

    def to_json(self) -> dict:
        return {
            "symbol": self.symbol,
            "id": self.trade_id,
            "orderId": self.order_id,
            "side": self.side,
            "price": plain(self.price),
            "qty": plain(self.quantity),
            "realizedPnl": plain(self.realized_pnl),
            "quoteQty": plain(self.price * self.quantity),
            "commission": plain(self.commission),
            "commissionAsset": QUOTE,
            "time": self.time_ms,
            "positionSide": "BOTH",
            "marginAsset": QUOTE,
            "buyer": self.side == "BUY",
            "maker": self.maker,
        }


@dataclass
class Income:
    """A change of the wallet, as Binance's income history lists it."""

    tran_id: int
    symbol: str
    income_type: str
    amount: Decimal
    time_ms: int
    trade_id: int | None = None

    def to_json(self) -> dict:
        return {
            "symbol": self.symbol,
            "incomeType": self.income_type,
            "income": f"{self.amount:.8f}" if self.amount.as_tuple().exponent >= -8 else plain(self.amount),
            "asset": QUOTE,
            "info": self.income_type,
            "time": self.time_ms,
            "tranId": self.tran_id,
            "tradeId": "" if self.trade_id is None else str(self.trade_id),
        }


@dataclass
class Position:
    amount: Decimal = ZERO
    entry_price: Decimal = ZERO
    update_ms: int = 0

    def apply(self, delta: Decimal, price: Decimal, time_ms: int) -> Decimal:
        """Add a signed fill at ``price``; returns the PnL realized by the part that reduces the position."""
        amount, realized = self.amount, ZERO
        new_amount = amount + delta
        if amount == 0 or (amount > 0) == (delta > 0):
            self.entry_price = (abs(amount) * self.entry_price + abs(delta) * price) / abs(new_amount)
        else:
            closed = min(abs(delta), abs(amount))
            realized = closed * (price - self.entry_price) * (1 if amount > 0 else -1)
            if new_amount == 0:
                self.entry_price = ZERO
            elif (new_amount > 0) != (amount > 0):
                self.entry_price = price
        self.amount = new_amount
        self.update_ms = time_ms
        return realized


@dataclass
class Account:
    wallet: Decimal
    update_ms: int
    orders: dict[int, Order] = field(default_factory=dict)
    client_order_ids: dict[str, int] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    positions: dict[str, Position] = field(default_factory=dict)
    leverage: dict[str, int] = field(default_factory=dict)  # per symbol, once set
    income: list[Income] = field(default_factory=list)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        return [o for o in self.orders.values() if o.is_open and (symbol is None or o.symbol == symbol)]


def _encode(item) -> dict:
    return {name: str(value) if isinstance(value, Decimal) else value for name, value in vars(item).items()}


def _decode(cls, data: dict):
    decimals = {f.name for f in dataclasses.fields(cls) if f.type == "Decimal"}
    return cls(**{name: Decimal(value) if name in decimals else value for name, value in data.items()})


class Engine:
    """Accounts (one per API key), their orders, trades and positions, matched on the market replay."""

    def __init__(
        self,
        market: MarketReplay,
        config: EngineConfig,
        api_keys: Iterable[str],
        state_path: Path | None = None,
        state: dict | None = None,
        instruments: InstrumentTable | None = None,
        funding: pd.DataFrame | None = None,
    ):
        """``instruments``: the rules of the market's assets (default: the bundled ones); an asset it
        has no rules for, or no leverage brackets, is an ``InstrumentsError`` (never made-up rules).
        ``funding``: the funding table (``data.funding``'s shape) the symbols settle at; without it, or
        for an asset it has no rows of, the config's assumed rate."""
        self.market = market
        self.config = config
        self.funding = ExchangeFunding(
            funding,
            market.assets,
            pd.Timestamp(market.first_open_ms - market.shift_ms, unit="ms", tz="UTC"),
            pd.Timestamp(market.last_close_ms - market.shift_ms, unit="ms", tz="UTC"),
            market.shift_ms,
            config.funding,
        )
        table = (instruments or market_instruments(market.assets, None, None)).select(market.assets)
        without = [asset for asset, rules in table.rules.items() if not rules.brackets]
        if without:
            raise InstrumentsError(
                f"no leverage brackets for {without} in {table.source} (brackets {table.brackets}): the local "
                "exchange serves each symbol's own; fetch the rules with API keys set, or add Binance's "
                "leverageBracket JSON (--brackets FILE)"
            )
        self.rules = {rules.symbol: rules for rules in table.rules.values()}
        self._lock = threading.RLock()
        self._state_path = state_path
        self._accounts: dict[str, Account] = {}
        self._next_order_id = 1
        self._next_trade_id = 1
        self._next_tran_id = 1
        self._matched_until = market.now_ms()
        if state is not None:
            self._restore(state)
        for key in api_keys:
            self._accounts.setdefault(key, Account(config.initial_balance, market.now_ms()))
        self._save()  # at once: a bad state path fails at startup, and a shifted clock keeps its origin

    # -- the clock and the state file -------------------------------------------------------------

    def now_ms(self) -> int:
        return self.market.now_ms()

    def set_time(self, now_ms: int) -> None:
        """Move a manual clock forward (ValueError otherwise); resting orders match on the way."""
        with self._lock:
            self.market.clock.set_ms(now_ms)
            self._match_resting()
            self._save()

    def _account(self, api_key: str) -> Account:
        account = self._accounts.get(api_key)
        if account is None:
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        return account

    def _state(self) -> dict:
        return {
            "market": {
                "assets": self.market.assets,
                "first_open_ms": self.market.first_open_ms,
                "history_ms": self.market.history_ms,
            },
            "clock": self.market.clock.to_state(),
            "next_order_id": self._next_order_id,
            "next_trade_id": self._next_trade_id,
            "next_tran_id": self._next_tran_id,
            "matched_until": self._matched_until,
            "accounts": {
                key: {
                    "wallet": str(account.wallet),
                    "update_ms": account.update_ms,
                    "orders": [_encode(order) for order in account.orders.values()],
                    "trades": [_encode(trade) for trade in account.trades],
                    "positions": {symbol: _encode(position) for symbol, position in account.positions.items()},
                    "leverage": account.leverage,
                    "income": [_encode(row) for row in account.income],
                }
                for key, account in self._accounts.items()
            },
        }

    def _restore(self, state: dict) -> None:
        market = state["market"]
        if market.get("history_ms", 0) != self.market.history_ms:
            raise ValueError(
                f"the state file was written with {market.get('history_ms', 0) // 60_000} minutes of history, not "
                f"{self.market.history_ms // 60_000}: use the same --history or another state file"
            )
        if market["assets"] != self.market.assets or market["first_open_ms"] != self.market.first_open_ms:
            raise ValueError("the state file was written for other market data")
        self._next_order_id = state["next_order_id"]
        self._next_trade_id = state["next_trade_id"]
        self._next_tran_id = state.get("next_tran_id", 1)
        self._matched_until = state["matched_until"]
        for key, data in state["accounts"].items():
            orders = [_decode(Order, order) for order in data["orders"]]
            self._accounts[key] = Account(
                Decimal(data["wallet"]),
                data["update_ms"],
                orders={order.order_id: order for order in orders},
                client_order_ids={order.client_order_id: order.order_id for order in orders},
                trades=[_decode(Trade, trade) for trade in data["trades"]],
                positions={symbol: _decode(Position, pos) for symbol, pos in data["positions"].items()},
                leverage=data.get("leverage", {}),
                income=[_decode(Income, row) for row in data.get("income", [])],
            )

    def _save(self) -> None:
        """Write the whole state atomically (a crash leaves the previous file, never half of one)."""
        if self._state_path is None:
            return
        tmp = self._state_path.with_name(self._state_path.name + ".tmp")
        tmp.write_text(json.dumps(self._state()))
        os.replace(tmp, self._state_path)

    # -- prices, margin and fills -------------------------------------------------------------------

    def _symbol_rules(self, symbol: str) -> SymbolRules:
        rules = self.rules.get(symbol)
        if rules is None:
            raise BinanceError(-1121, "Invalid symbol.")
        return rules

    def price(self, symbol: str, now_ms: int | None = None) -> Decimal | None:
        """The price at now: the close of the last closed candle (None before the first closes)."""
        price = self.market.price(self.rules[symbol].asset, self.now_ms() if now_ms is None else now_ms)
        return None if price is None else to_decimal(price)

    def _mark(self, symbol: str, position: Position) -> Decimal:
        price = self.price(symbol)
        return position.entry_price if price is None else price

    def _leverage(self, account: Account, symbol: str) -> int:
        return account.leverage.get(symbol, self.config.leverage)

    def _position_margin(self, account: Account, symbol: str, position: Position) -> Decimal:
        return abs(position.amount) * self._mark(symbol, position) / self._leverage(account, symbol)

    def _order_margin(self, account: Account, orders: Iterable[Order]) -> Decimal:
        """Initial margin held by resting orders that could open exposure (reduce-only ones hold none)."""
        return sum(
            (o.remaining * o.price / self._leverage(account, o.symbol) for o in orders if not o.reduce_only), ZERO
        )

    def _unrealized(self, account: Account) -> Decimal:
        return sum((p.amount * (self._mark(s, p) - p.entry_price) for s, p in account.positions.items()), ZERO)

    def _initial_margin(self, account: Account) -> Decimal:
        positions = sum((self._position_margin(account, s, p) for s, p in account.positions.items()), ZERO)
        return positions + self._order_margin(account, account.open_orders())

    def _available(self, account: Account) -> Decimal:
        return max(ZERO, account.wallet + self._unrealized(account) - self._initial_margin(account))

    def _record_income(
        self, account: Account, symbol: str, income_type: str, amount: Decimal, time_ms: int, trade_id: int | None
    ) -> None:
        account.income.append(Income(self._next_tran_id, symbol, income_type, amount, time_ms, trade_id))
        self._next_tran_id += 1

    def _fill(self, account: Account, order: Order, quantity: Decimal, price: Decimal, maker: bool, time_ms: int):
        position = account.positions.setdefault(order.symbol, Position())
        reduces = position.amount * order.sign < 0
        realized = position.apply(order.sign * quantity, price, time_ms)
        commission = quantity * price * (self.config.maker_fee if maker else self.config.taker_fee)
        account.wallet += realized - commission
        account.update_ms = time_ms
        order.executed += quantity
        order.cum_quote += quantity * price
        order.update_ms = time_ms
        order.status = "FILLED" if order.executed == order.quantity else "PARTIALLY_FILLED"
        trade = Trade(
            self._next_trade_id,
            order.order_id,
            order.symbol,
            order.side,
            price,
            quantity,
            realized,
            commission,
            maker,
            time_ms,
        )
        self._next_trade_id += 1
        account.trades.append(trade)
        if reduces:  # Binance records the PnL of every fill that reduces or closes a position
            self._record_income(account, order.symbol, "REALIZED_PNL", realized, time_ms, trade.trade_id)
        self._record_income(account, order.symbol, "COMMISSION", -commission, time_ms, trade.trade_id)

    def _reducible(self, account: Account, order: Order, quantity: Decimal) -> Decimal:
        """How much of ``quantity`` a reduce-only order may fill: at most the opposite position."""
        position = account.positions.get(order.symbol)
        amount = position.amount if position else ZERO
        return min(quantity, abs(amount)) if amount * order.sign < 0 else ZERO

    def _match_resting(self) -> int:
        """Fill resting limit orders against the candles closed since the last call and settle the funding
        due since then, in time order (a candle closing at a settlement's time before it: its fills were
        held then).

        Returns the time matched up to: the rest of the call uses it as its "now".
        """
        now = self.now_ms()
        if now <= self._matched_until:
            return now
        resting = sorted(
            ((order, account) for account in self._accounts.values() for order in account.open_orders()),
            key=lambda pair: pair[0].order_id,
        )
        events: list[tuple[int, int, str, ClosedCandle | Settlement]] = []
        for symbol in sorted({order.symbol for order, _ in resting}):
            events += [
                (candle.close_ms, 0, candle.asset, candle)
                for candle in self.market.closed_candles(self.rules[symbol].asset, self._matched_until, now)
            ]
        # a symbol can pay funding only with a position, or an order that may open one
        held = {s for a in self._accounts.values() for s, p in a.positions.items() if p.amount != 0}
        for symbol in sorted(held | {order.symbol for order, _ in resting}):
            events += [
                (settlement.time_ms, 1, settlement.asset, settlement)
                for settlement in self.funding.between(self.rules[symbol].asset, self._matched_until, now)
            ]
        events.sort(key=lambda event: event[:3])
        changed = False
        for _, _, asset, event in events:
            symbol = f"{asset}{QUOTE}"
            if isinstance(event, Settlement):
                changed |= self._settle(symbol, event)
                continue
            for order, account in resting:
                live = not order.good_till_ms or event.close_ms <= order.good_till_ms  # GTD: until its time
                if order.is_open and order.symbol == symbol and order.time_ms <= event.open_ms and live:
                    changed |= self._match_candle(account, order, event)
        for order, _ in resting:  # a GTD order still open at its time expires then
            if order.is_open and order.good_till_ms and order.good_till_ms <= now:
                order.status, order.update_ms, changed = "EXPIRED", order.good_till_ms, True
        self._matched_until = now
        if changed:
            self._save()
        return now

    def settlement_mark(self, symbol: str, settlement: Settlement) -> Decimal | None:
        """The mark price of a settlement: the data's, else the exchange's price then (None before any)."""
        return settlement.mark if settlement.mark is not None else self.price(symbol, settlement.time_ms)

    def _settle(self, symbol: str, settlement: Settlement) -> bool:
        """Every open position of the symbol pays position x mark x rate (receives it when negative),
        stamped at the settlement's time; whether any wallet moved."""
        mark = self.settlement_mark(symbol, settlement)
        if mark is None:
            return False
        changed = False
        for account in self._accounts.values():
            position = account.positions.get(symbol)
            if position is None or position.amount == 0:
                continue
            fee = (-position.amount * mark * settlement.rate).quantize(FUNDING_DECIMALS, ROUND_HALF_UP)
            account.wallet += fee
            account.update_ms = settlement.time_ms
            self._record_income(account, symbol, "FUNDING_FEE", fee, settlement.time_ms, None)
            changed = True
        return changed

    def _match_candle(self, account: Account, order: Order, candle: ClosedCandle) -> bool:
        """Fill a resting order at its price if the candle traded through it; whether it did."""
        if order.side == "BUY":
            crossed = to_decimal(candle.low) <= order.price
        else:
            crossed = to_decimal(candle.high) >= order.price
        if not crossed:
            return False
        quantity = self._reducible(account, order, order.remaining) if order.reduce_only else order.remaining
        if quantity > 0:
            self._fill(account, order, quantity, order.price, True, candle.close_ms)
        if order.is_open:  # a reduce-only order whose position is gone
            order.status, order.update_ms = "EXPIRED", candle.close_ms
        return True

    # -- orders ------------------------------------------------------------------------------------

    def place_order(
        self,
        api_key: str,
        symbol: str,
        side: str,
        order_type: str,
        quantity: Decimal,
        price: Decimal | None = None,
        client_order_id: str | None = None,
        reduce_only: bool = False,
        ack: bool = False,
        fill_fraction: float | None = None,
        time_in_force: str = "GTC",
        good_till_ms: int | None = None,
    ) -> dict:
        """Check, accept and execute an order; ``fill_fraction`` (a fault) fills only that share at once.
        A GTD order (``good_till_ms``, its seconds only) rests like GTC until then and expires then.

        Returns the order as accepted (``ack``) or after its immediate execution (Binance's RESULT).
        """
        with self._lock:
            account = self._account(api_key)
            now = self._match_resting()
            rules = self._symbol_rules(symbol)
            client_order_id = self._free_client_order_id(account, client_order_id)
            self._check_filters(rules, side, order_type, quantity, price)
            last = self.price(symbol, now)
            if order_type == "MARKET" and last is None:
                raise BinanceError(-1013, "Market is closed.")
            gtd = order_type == "LIMIT" and time_in_force == "GTD"
            good_till_ms = _good_till(good_till_ms, now) if gtd else 0
            order = Order(
                self._next_order_id,
                symbol,
                client_order_id,
                side,
                order_type,
                quantity,
                price if order_type == "LIMIT" else ZERO,
                reduce_only,
                now,
                now,
                time_in_force=time_in_force if order_type == "LIMIT" else "GTC",
                good_till_ms=good_till_ms,
            )
            self._check_risk(account, order, rules, order.price if order_type == "LIMIT" else last)
            marketable = last is not None and (order_type == "MARKET" or (order.price - last) * order.sign >= 0)
            self._check_time_in_force(account, order, rules, marketable, fill_fraction)
            self._next_order_id += 1
            account.orders[order.order_id] = order
            account.client_order_ids[client_order_id] = order.order_id  # a reused id finds its latest order
            accepted = order.to_json()
            if marketable:
                self._execute_at_once(account, order, rules, last, now, fill_fraction)
            elif order.time_in_force == "IOC":  # nothing to take now: all of it expires
                order.status = "EXPIRED"
            self._save()
            return accepted if ack else order.to_json()

    def _immediate_quantity(
        self, account: Account, order: Order, rules: SymbolRules, fill_fraction: float | None
    ) -> Decimal:
        """What a marketable order fills at once: its quantity, a reduce-only order's no further than the
        position, only ``fill_fraction`` of it (rounded down to the lot step) under that fault."""
        quantity = self._reducible(account, order, order.quantity) if order.reduce_only else order.quantity
        if fill_fraction is not None:
            share = quantity * Decimal(repr(fill_fraction)) / rules.step
            quantity = share.to_integral_value(ROUND_DOWN) * rules.step
        return quantity

    def _check_time_in_force(
        self, account: Account, order: Order, rules: SymbolRules, marketable: bool, fill_fraction: float | None
    ) -> None:
        """Binance's rejections, before the order is recorded: a post-only (GTX) order that would take, a
        fill-or-kill (FOK) order that cannot fill all of its quantity at once."""
        if order.time_in_force == "GTX" and marketable:
            raise BinanceError(
                -5022,
                "Due to the order could not be executed as maker, the Post Only order will be rejected. "
                "The order will not be recorded in the order history",
            )
        if order.time_in_force == "FOK" and (
            not marketable or self._immediate_quantity(account, order, rules, fill_fraction) < order.quantity
        ):
            raise BinanceError(
                -5021,
                "Due to the order could not be filled immediately, the FOK order has been rejected. "
                "The order will not be recorded in the order history",
            )

    def _free_client_order_id(self, account: Account, client_order_id: str | None) -> str:
        """The new order's client id: a fresh one if none is given; Binance refuses a malformed id
        (-4015) and one in use by an open order (-4116; by any order with ``strict_client_order_ids``)."""
        if client_order_id is None:
            return uuid.uuid4().hex[:22]
        if not _CLIENT_ORDER_ID.fullmatch(client_order_id):
            raise BinanceError(-4015, "Client order id is not valid.")
        earlier = account.orders.get(account.client_order_ids.get(client_order_id, -1))
        if earlier is not None and (earlier.is_open or self.config.strict_client_order_ids):
            raise BinanceError(-4116, "ClientOrderId is duplicated.")
        return client_order_id

    def _execute_at_once(
        self,
        account: Account,
        order: Order,
        rules: SymbolRules,
        last: Decimal,
        now: int,
        fill_fraction: float | None,
    ) -> None:
        """Fill a marketable order at the last price as a taker (only ``fill_fraction`` of it under that
        fault, and a reduce-only order no further than the position); the rest of a market or IOC order
        expires."""
        quantity = self._immediate_quantity(account, order, rules, fill_fraction)
        if quantity > 0:
            self._fill(account, order, quantity, last, False, now)
        immediate = order.order_type == "MARKET" or order.time_in_force in ("IOC", "FOK")
        if immediate and order.is_open:  # what the book could not fill expires
            order.status = "EXPIRED"

    @staticmethod
    def _check_filters(rules: SymbolRules, side: str, order_type: str, quantity: Decimal, price: Decimal | None):
        if side not in ("BUY", "SELL"):
            raise BinanceError(-1117, "Invalid side.")
        if order_type not in ("LIMIT", "MARKET"):
            raise BinanceError(-1116, "Invalid orderType.")
        if quantity <= 0:
            raise BinanceError(-4003, "Quantity less than or equal to zero.")
        if quantity % rules.step:
            raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
        if quantity < rules.min_qty:
            raise BinanceError(-4004, "Quantity less than min quantity.")
        if quantity > (rules.max_qty if order_type == "LIMIT" else rules.market_max_qty):  # LOT_SIZE, MARKET_LOT_SIZE
            raise BinanceError(-4005, "Quantity greater than max quantity.")
        if order_type != "LIMIT":
            return
        if price is None:
            raise BinanceError(-1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
        if price <= 0:
            raise BinanceError(-4001, "Price less than 0.")
        if price < rules.min_price:
            raise BinanceError(-4013, "Price less than min price.")
        if price % rules.tick:
            raise BinanceError(-4014, "Price not increased by tick size.")
        if price > rules.max_price:
            raise BinanceError(-4016, "Limit price can't be higher than the maximum price.")

    def _check_risk(self, account: Account, order: Order, rules: SymbolRules, price: Decimal) -> None:
        """Reduce-only direction, min notional and initial margin, as Binance checks them at placement."""
        position = account.positions.get(order.symbol)
        amount = position.amount if position else ZERO
        if order.reduce_only:
            if amount * order.sign >= 0:
                raise BinanceError(-2022, "ReduceOnly Order is rejected.")
            return
        if order.quantity * price < rules.min_notional:
            minimum = plain(rules.min_notional)
            raise BinanceError(
                -4164, f"Order's notional must be no smaller than {minimum} (unless you choose reduce only)."
            )
        opening = order.quantity if amount * order.sign >= 0 else max(ZERO, order.quantity - abs(amount))
        if opening * price / self._leverage(account, order.symbol) > self._available(account):
            raise BinanceError(-2019, "Margin is insufficient.")

    def _find_order(self, account: Account, symbol: str, order_id: int | None, client_order_id: str | None):
        self._symbol_rules(symbol)
        if order_id is None:
            order_id = account.client_order_ids.get(client_order_id)
        order = account.orders.get(order_id)
        return order if order is not None and order.symbol == symbol else None

    def get_order(self, api_key: str, symbol: str, order_id: int | None, client_order_id: str | None) -> dict:
        with self._lock:
            account = self._account(api_key)
            self._match_resting()
            order = self._find_order(account, symbol, order_id, client_order_id)
            if order is None:
                raise BinanceError(-2013, "Order does not exist.")
            return order.to_json()

    def cancel_order(self, api_key: str, symbol: str, order_id: int | None, client_order_id: str | None) -> dict:
        with self._lock:
            account = self._account(api_key)
            self._match_resting()
            order = self._find_order(account, symbol, order_id, client_order_id)
            if order is None or not order.is_open:
                raise BinanceError(-2011, "Unknown order sent.")
            order.status, order.update_ms = "CANCELED", self.now_ms()
            self._save()
            return order.to_json()

    def open_order(self, api_key: str, symbol: str, order_id: int | None, client_order_id: str | None) -> dict:
        """GET /fapi/v1/openOrder: an open order; a filled, cancelled or expired one does not exist (-2013)."""
        with self._lock:
            account = self._account(api_key)
            self._match_resting()
            order = self._find_order(account, symbol, order_id, client_order_id)
            if order is None or not order.is_open:
                raise BinanceError(-2013, "Order does not exist.")
            return order.to_json()

    def cancel_all(self, api_key: str, symbol: str) -> dict:
        """DELETE /fapi/v1/allOpenOrders: cancel every open order of the symbol (none open is no error)."""
        with self._lock:
            account = self._account(api_key)
            now = self._match_resting()
            self._symbol_rules(symbol)
            for order in account.open_orders(symbol):
                order.status, order.update_ms = "CANCELED", now
            self._save()
            return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def all_orders(
        self,
        api_key: str,
        symbol: str | None,
        order_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[dict]:
        """GET /fapi/v1/allOrders, as Binance documents it: from ``order_id`` on (ascending, the first
        ``limit``), else the most recent ``limit`` in the time window (the last 7 days when no time is
        sent); a cancelled or expired order without a fill is gone 3 days after it was placed."""
        with self._lock:
            account = self._account(api_key)
            now = self._match_resting()
            if symbol is not None:
                self._symbol_rules(symbol)
            if order_id is None and start_ms is None and end_ms is None:
                start_ms = now - TRADE_WINDOW_MS
            orders = [
                o
                for o in account.orders.values()
                if (symbol is None or o.symbol == symbol)
                and (order_id is None or o.order_id >= order_id)
                and (start_ms is None or o.time_ms >= start_ms)
                and (end_ms is None or o.time_ms <= end_ms)
                and not (o.status in ("CANCELED", "EXPIRED") and o.executed == 0 and o.time_ms + _GONE_MS < now)
            ]
            orders.sort(key=lambda o: o.order_id)
            orders = orders[:limit] if order_id is not None else orders[-limit:]
            return [order.to_json() for order in orders]

    def max_leverage(self, symbol: str) -> int:
        """The symbol's highest leverage: its first bracket's."""
        return max(bracket.initial_leverage for bracket in self._brackets(symbol))

    def _brackets(self, symbol: str) -> tuple[Bracket, ...]:
        """The symbol's leverage brackets (the engine starts only with every symbol's)."""
        return self._symbol_rules(symbol).brackets or ()

    def set_leverage(self, api_key: str, symbol: str, leverage: int) -> dict:
        """POST /fapi/v1/leverage: 1 to the symbol's max (-4028 otherwise); a leverage whose margin the
        account cannot hold is refused (-2028), as Binance does."""
        with self._lock:
            account = self._account(api_key)
            self._match_resting()
            if not 1 <= leverage <= self.max_leverage(symbol):
                raise BinanceError(-4028, f"Leverage {leverage} is not valid")
            before = account.leverage.get(symbol)
            account.leverage[symbol] = leverage
            if account.wallet + self._unrealized(account) < self._initial_margin(account):
                if before is None:
                    del account.leverage[symbol]
                else:
                    account.leverage[symbol] = before
                raise BinanceError(-2028, "Leverage is smaller than permitted: insufficient margin balance.")
            self._save()
            return {
                "leverage": leverage,
                "maxNotionalValue": str(max_notional(leverage, self._brackets(symbol))),
                "symbol": symbol,
            }

    def symbol_config(self, api_key: str, symbol: str | None = None) -> list[dict]:
        """GET /fapi/v1/symbolConfig: margin type, auto-add margin, leverage, max notional per symbol."""
        with self._lock:
            account = self._account(api_key)
            if symbol is not None:
                self._symbol_rules(symbol)
            return [
                {
                    "symbol": s,
                    "marginType": "CROSSED",
                    "isAutoAddMargin": False,
                    "leverage": self._leverage(account, s),
                    "maxNotionalValue": str(max_notional(self._leverage(account, s), self._brackets(s))),
                }
                for s in self.rules
                if symbol is None or s == symbol
            ]

    def _break_even(self, position: Position) -> Decimal:
        """The price at which closing the position as taker pays back the taker fees of opening and
        closing it: entry x (1 + 2 x taker fee) long, entry x (1 - 2 x taker fee) short; 0 when flat."""
        if position.amount == 0:
            return ZERO
        sign = 1 if position.amount > 0 else -1
        return position.entry_price * (1 + sign * 2 * self.config.taker_fee)

    def open_orders(self, api_key: str, symbol: str | None = None) -> list[dict]:
        with self._lock:
            account = self._account(api_key)
            self._match_resting()
            if symbol is not None:
                self._symbol_rules(symbol)
            return [order.to_json() for order in account.open_orders(symbol)]

    def user_trades(
        self,
        api_key: str,
        symbol: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        from_id: int | None = None,
        limit: int = 500,
    ) -> list[dict]:
        """The account's trades of a symbol: from ``from_id``/``start_ms`` on the first ``limit``, else the
        last (of the last 7 days' trades when neither a start nor an end time is sent, as Binance has it)."""
        with self._lock:
            account = self._account(api_key)
            now = self._match_resting()
            self._symbol_rules(symbol)
            ascending = from_id is not None or start_ms is not None
            if from_id is None and start_ms is None and end_ms is None:
                start_ms = now - TRADE_WINDOW_MS
            trades = [
                t
                for t in account.trades
                if t.symbol == symbol
                and (from_id is None or t.trade_id >= from_id)
                and (start_ms is None or t.time_ms >= start_ms)
                and (end_ms is None or t.time_ms <= end_ms)
            ]
            trades = trades[:limit] if ascending else trades[-limit:]
            return [trade.to_json() for trade in trades]

    def income(
        self,
        api_key: str,
        symbol: str | None = None,
        income_type: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        page: int = 1,
        limit: int = 100,
    ) -> list[dict]:
        """GET /fapi/v1/income: the account's income rows in the time window (the last 7 days when
        neither time is sent; only the last three months are kept), oldest first, ``page`` of ``limit``
        rows counted from the window's start."""
        with self._lock:
            account = self._account(api_key)
            now = self._match_resting()
            if symbol is not None:
                self._symbol_rules(symbol)
            if start_ms is None and end_ms is None:
                start_ms = now - TRADE_WINDOW_MS
            start_ms = max(start_ms if start_ms is not None else 0, now - INCOME_KEPT_MS)
            rows = [
                row
                for row in account.income
                if (symbol is None or row.symbol == symbol)
                and (income_type is None or row.income_type == income_type)
                and start_ms <= row.time_ms
                and (end_ms is None or row.time_ms <= end_ms)
            ]
            rows.sort(key=lambda row: (row.time_ms, row.tran_id))
            return [row.to_json() for row in rows[(page - 1) * limit : page * limit]]

    # -- funding -------------------------------------------------------------------------------------

    def funding_rate(self, symbol: str) -> tuple[Decimal, int]:
        """premiumIndex's figures: the last funding rate known now and the next settlement's time."""
        asset, now = self._symbol_rules(symbol).asset, self.now_ms()
        return self.funding.last_known_rate(asset, now), self.funding.next_time(asset, now)

    def funding_history(
        self, symbols: list[str], start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[tuple[str, Settlement, Decimal | None]]:
        """GET /fapi/v1/fundingRate: (symbol, settlement, mark price) of the published settlements since
        the replay began, oldest first: the first ``limit`` from ``start_ms``, else the last up to ``end_ms``."""
        now = self.now_ms()
        last = now if end_ms is None else min(now, end_ms)
        first = max(start_ms or 0, self.market.first_open_ms + 1)  # settled since the replay's first candle
        rows = [
            (symbol, settlement)
            for symbol in symbols
            for settlement in self.funding.published(self.rules[symbol].asset, first, now)
            if settlement.time_ms <= last
        ]
        rows.sort(key=lambda row: (row[1].time_ms, row[0]))
        rows = rows[:limit] if start_ms is not None else rows[-limit:]
        return [(symbol, settlement, self.settlement_mark(symbol, settlement)) for symbol, settlement in rows]

    # -- account views -------------------------------------------------------------------------------

    def _position_json(self, account: Account, symbol: str, version: int) -> dict:
        position = account.positions.get(symbol, Position())
        mark = self._mark(symbol, position)
        notional = position.amount * mark
        orders = account.open_orders(symbol)
        order_margin = self._order_margin(account, orders)
        position_margin = self._position_margin(account, symbol, position)
        leverage = self._leverage(account, symbol)
        common = {
            "symbol": symbol,
            "positionSide": "BOTH",
            "positionAmt": plain(position.amount),
            "entryPrice": plain(position.entry_price),
            "breakEvenPrice": plain(self._break_even(position)),
            "markPrice": plain(mark),
            "unRealizedProfit": plain(position.amount * (mark - position.entry_price)),
            "liquidationPrice": "0",
            "isolatedMargin": "0",
            "notional": plain(notional),
            "isolatedWallet": "0",
            "updateTime": position.update_ms,
        }
        if version == 2:
            return {
                **common,
                "leverage": str(leverage),
                "marginType": "cross",
                "isAutoAddMargin": "false",
                "maxNotionalValue": str(max_notional(leverage, self._brackets(symbol))),
            }
        return {
            **common,
            "marginAsset": QUOTE,
            "initialMargin": plain(position_margin + order_margin),
            "maintMargin": plain(maintenance_margin(abs(notional), self._brackets(symbol))),
            "positionInitialMargin": plain(position_margin),
            "openOrderInitialMargin": plain(order_margin),
            "adl": 0,
            "bidNotional": plain(sum((o.remaining * o.price for o in orders if o.side == "BUY"), ZERO)),
            "askNotional": plain(sum((o.remaining * o.price for o in orders if o.side == "SELL"), ZERO)),
        }

    def _account_position_json(self, account: Account, symbol: str, version: int) -> dict:
        """A position as the account endpoints list it (fewer fields than positionRisk)."""
        risk = self._position_json(account, symbol, 3)
        fields = ("symbol", "positionSide", "positionAmt", "isolatedMargin", "notional", "isolatedWallet")
        result = {name: risk[name] for name in fields}
        result.update(
            unrealizedProfit=risk["unRealizedProfit"],
            initialMargin=risk["initialMargin"],
            maintMargin=risk["maintMargin"],
            updateTime=risk["updateTime"],
        )
        if version == 2:  # Binance's v3 positions leave these out
            leverage = self._leverage(account, symbol)
            result.update(
                positionInitialMargin=risk["positionInitialMargin"],
                openOrderInitialMargin=risk["openOrderInitialMargin"],
                entryPrice=risk["entryPrice"],
                leverage=str(leverage),
                isolated=False,
                maxNotional=str(max_notional(leverage, self._brackets(symbol))),
                bidNotional=risk["bidNotional"],
                askNotional=risk["askNotional"],
            )
        return result

    def _active_symbols(self, account: Account) -> list[str]:
        """Symbols with a position or open orders: what Binance's v3 endpoints list."""
        open_symbols = {order.symbol for order in account.open_orders()}
        return [s for s in self.rules if s in open_symbols or account.positions.get(s, Position()).amount != 0]

    def position_risk(self, api_key: str, symbol: str | None = None, version: int = 3) -> list[dict]:
        """Positions (v3: symbols with a position or open orders; v2: every symbol)."""
        with self._lock:
            account = self._account(api_key)
            self._match_resting()
            if symbol is not None:
                self._symbol_rules(symbol)
            symbols = list(self.rules) if version == 2 else self._active_symbols(account)
            return [self._position_json(account, s, version) for s in symbols if symbol is None or s == symbol]

    def _balance_figures(self, account: Account) -> dict:
        unrealized = self._unrealized(account)
        available = self._available(account)
        return {
            "walletBalance": plain(account.wallet),
            "unrealizedProfit": plain(unrealized),
            "marginBalance": plain(account.wallet + unrealized),
            "maintMargin": plain(
                sum(
                    (
                        maintenance_margin(abs(p.amount * self._mark(s, p)), self._brackets(s))
                        for s, p in account.positions.items()
                    ),
                    ZERO,
                )
            ),
            "initialMargin": plain(self._initial_margin(account)),
            "positionInitialMargin": plain(
                sum((self._position_margin(account, s, p) for s, p in account.positions.items()), ZERO)
            ),
            "openOrderInitialMargin": plain(self._order_margin(account, account.open_orders())),
            "crossWalletBalance": plain(account.wallet),
            "crossUnPnl": plain(unrealized),
            "availableBalance": plain(available),
            "maxWithdrawAmount": plain(min(available, account.wallet)),
        }

    def account(self, api_key: str, version: int = 3) -> dict:
        """The futures account (GET /fapi/v3/account, or v2 with its extra fields), all in USDT."""
        with self._lock:
            account = self._account(api_key)
            self._match_resting()
            figures = self._balance_figures(account)
            totals = {f"total{name[0].upper()}{name[1:]}": figures[name] for name in _ACCOUNT_TOTALS}
            symbols = list(self.rules) if version == 2 else self._active_symbols(account)
            result = {
                **totals,
                "availableBalance": figures["availableBalance"],
                "maxWithdrawAmount": figures["maxWithdrawAmount"],
                "assets": [{"asset": QUOTE, **figures, "marginAvailable": True, "updateTime": account.update_ms}],
                "positions": [self._account_position_json(account, symbol, version) for symbol in symbols],
            }
            if version == 2:
                result = {
                    "feeTier": 0,
                    "feeBurn": False,  # no BNB fee discount here
                    "canTrade": True,
                    "canDeposit": True,
                    "canWithdraw": True,
                    "updateTime": 0,
                    "multiAssetsMargin": False,
                    "tradeGroupId": -1,
                    **result,
                }
            return result

    def balance(self, api_key: str) -> list[dict]:
        """GET /fapi/v2|v3/balance: the USDT wallet."""
        with self._lock:
            account = self._account(api_key)
            self._match_resting()
            figures = self._balance_figures(account)
            return [
                {
                    "accountAlias": "local",
                    "asset": QUOTE,
                    "balance": figures["walletBalance"],
                    "crossWalletBalance": figures["crossWalletBalance"],
                    "crossUnPnl": figures["crossUnPnl"],
                    "availableBalance": figures["availableBalance"],
                    "maxWithdrawAmount": figures["maxWithdrawAmount"],
                    "marginAvailable": True,
                    "updateTime": account.update_ms,
                }
            ]

    def counts(self) -> dict:
        """How many orders (and open ones) and trades the accounts hold."""
        with self._lock:
            self._match_resting()
            accounts = self._accounts.values()
            return {
                "orders": sum(len(a.orders) for a in accounts),
                "open_orders": sum(len(a.open_orders()) for a in accounts),
                "trades": sum(len(a.trades) for a in accounts),
            }


def maintenance_margin(notional: Decimal, brackets: Iterable[Bracket]) -> Decimal:
    """Maintenance margin of a position's absolute notional under its symbol's brackets."""
    for bracket in brackets:
        if bracket.notional_floor <= notional < bracket.notional_cap:
            return notional * bracket.maint_margin_ratio - bracket.cum
    return ZERO


def _good_till(good_till_ms: int | None, now: int) -> int:
    """A GTD order's ``goodTillDate`` as Binance takes it: required, more than 600 s after now, before
    253402300799000; the milliseconds are dropped."""
    if good_till_ms is None:
        raise BinanceError(-1102, "Mandatory parameter 'goodTillDate' was not sent, was empty/null, or malformed.")
    if not now + 600_000 < good_till_ms < 253_402_300_799_000:
        raise BinanceError(
            -5040,
            "The goodTillDate timestamp must be greater than the current time plus 600 seconds and smaller than "
            "253402300799000",
        )
    return good_till_ms // 1_000 * 1_000


def max_notional(leverage: int, brackets: Iterable[Bracket]) -> int:
    """The largest position notional a leverage allows: the cap of the last bracket that admits it."""
    caps = [bracket.notional_cap for bracket in brackets if leverage <= bracket.initial_leverage]
    return int(max(caps)) if caps else 0


def leverage_brackets(rules: Iterable[SymbolRules]) -> list[dict]:
    """GET /fapi/v1/leverageBracket: each symbol's brackets, as its instruments table holds them."""
    return [
        {"symbol": r.symbol, "notionalCoef": 1.0, "brackets": [b.to_json() for b in r.brackets or ()]} for r in rules
    ]


def open_engine(
    candles: pd.DataFrame,
    config: EngineConfig,
    api_keys: Iterable[str],
    clock_mode: str = "shifted",
    speed: float = 1.0,
    state_path: str | Path | None = None,
    history_ms: int = 0,
    instruments: InstrumentTable | None = None,
    funding: pd.DataFrame | None = None,
) -> Engine:
    """An engine on the candles; with a state file that exists, it resumes that state and its clock.
    The first ``history_ms`` of the candles are already closed when it starts (``MarketReplay``)."""
    state_path = Path(state_path) if state_path is not None else None
    state = None
    if state_path is not None and not state_path.parent.is_dir():
        raise ValueError(f"the folder of the state file {state_path} does not exist")
    if state_path is not None and state_path.exists():
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read the state file {state_path}: {error}") from None
    if state is None:
        first_open_ms = int(candles["bar_start"].min().value // 1_000_000)
        clock = ReplayClock.start(clock_mode, first_open_ms + history_ms, speed)
    else:
        clock = ReplayClock.from_state(state["clock"], wall_ms)
        if (clock.mode, clock.speed) != (clock_mode, speed):
            raise ValueError(
                f"the state file {state_path} runs a {clock.mode} clock at speed {clock.speed}, "
                f"not {clock_mode} at {speed}: use the same clock or another state file"
            )
    market = MarketReplay(candles, clock, history_ms)
    return Engine(market, config, api_keys, state_path, state, instruments, funding)
