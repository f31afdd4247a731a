"""The exchange broker: a bar's orders to Binance USDT-M futures (or a compatible exchange) via ccxt.

What makes it safe to run unattended:
- **Never twice**: every (child) order has a deterministic client order id. After an error whose
  outcome is unknown (timeout, 5xx, connection lost) the order is looked up by that id before it
  is sent again, and the exchange's duplicate-id rejection (-4116) means "already placed".
- **Transient vs permanent**: timeouts, 5xx and 429 (honouring Retry-After) are retried with
  exponential backoff; bad keys, margin, invalid orders fail the bar with a clear error once every
  other order of the wave has been placed and recorded.
- **Exchange rules and risk first**: quantities to the exchange's precision, its minimums, then
  the config's risk limits and the kill switch, before anything is sent.
- **Fills from the exchange**: executed shares, VWAP and fees from its own trade list
  (fetch_my_trades), each trade counted once; an order is done only when all it filled is counted.
- **Reconciled start, checked in session**: positions and open orders on the exchange must agree
  with the portfolio, or be adopted, before the first order and at each in-session check (``check``,
  ``adopt``; our own orders in flight are not a mismatch).
- **Audited**: every request and response goes to a JSON-lines file, key and signatures redacted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from prod_system.common.clock import Clock
from prod_system.common.failpoints import failpoint
from prod_system.config import BrokerConfig, RiskConfig
from prod_system.errors import BrokerError
from prod_system.trading.brokers.base import (
    EXECUTION_COLUMNS,
    INCOME_COLUMNS,
    AccountStatement,
    Broker,
    ExchangeCheck,
    OnMismatch,
    margin_ratio,
)
from prod_system.trading.brokers.ccxt_client import binanceusdm_client, retry_delay, symbol_of
from prod_system.trading.brokers.kill_switch import KillSwitch
from prod_system.trading.portfolio import PortfolioState

if TYPE_CHECKING:
    import ccxt

logger = logging.getLogger("prod_system.broker")
INCOME_PAGE = 1000  # GET /fapi/v1/income: at most 1,000 rows a page

# Transient errors, after which an order may or may not have reached the exchange (look it up, then
# retry), are ccxt's OperationFailed: NetworkError (timeouts, 5xx, 429) and Binance's -1001 "internal
# error". ccxt is imported by the methods that call the exchange, not with this module: loading the
# Dagster definitions imports this module but needs no ccxt (~0.45 s). The backoff (and Retry-After)
# is ccxt_client.retry_delay, shared with the history download.


@dataclass
class _Child:
    """One order as sent to the exchange (the whole bar's order, or one TWAP wave of it)."""

    client_order_id: str
    parent: dict
    wave: int
    side: str
    requested: float
    sent: float = 0.0
    status: str = "new"
    exchange_order_id: str | None = None
    filled: float = 0.0  # as the exchange reported at placement or lookup
    counted: float = 0.0  # as counted from the trade list
    average_price: float | None = None
    attempts: int = 0
    sent_at: pd.Timestamp | None = None
    acknowledged_at: pd.Timestamp | None = None
    reason: str = ""
    trades: set[str] = field(default_factory=set)
    placed_ms: int | None = None  # the exchange's time of the order: its trades come at or after it

    @property
    def asset(self) -> str:
        return self.parent["asset"]

    def row(self) -> dict:
        return {
            "bar_end": self.parent["bar_end"],
            "asset": self.asset,
            "client_order_id": self.client_order_id,
            "parent_order_id": self.parent["client_order_id"],
            "wave": self.wave,
            "side": self.side,
            "requested": self.requested,
            "sent": self.sent,
            "status": self.status,
            "exchange_order_id": self.exchange_order_id,
            "filled": self.filled,
            "average_price": self.average_price,
            "attempts": self.attempts,
            "sent_at": self.sent_at,
            "acknowledged_at": self.acknowledged_at,
            "reason": self.reason,
        }


class ExchangeBroker(Broker):
    """Places each bar's orders on the exchange and reports the fills (the ``Broker`` interface)."""

    keeps_execution_log = True

    def __init__(
        self,
        config: BrokerConfig,
        risk: RiskConfig,
        assets: list[str],
        clock: Clock,
        bar: pd.Timedelta,
        credentials: tuple[str, str] | None = None,
        audit_path: str | Path | None = None,
        sleep: Callable[[float], None] = time.sleep,
        kill_switch: KillSwitch | None = None,
    ):
        self.config, self.risk, self.assets, self.clock, self.bar = config, risk, list(assets), clock, bar
        self.credentials = credentials or credentials_from_env(config)
        self.sleep = sleep
        self.kill_switch = kill_switch or KillSwitch(risk.kill_switch_file)
        self._audit = _AuditLog(audit_path) if audit_path else None
        self._local = threading.local()
        self._markets: dict | None = None
        self._pool = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="broker")
        self._children: dict[str, _Child] = {}  # by client order id, this session
        self._pending: list[_Child] = []  # placed, not fully counted in fills yet
        self._positions = pd.Series(0.0, index=self.assets)  # as the counted fills leave them
        self._prices: dict[str, float] = {}  # latest mark, decision or fill price per asset (gross-notional limit)
        self._exposure = pd.Series(0.0, index=self.assets)  # during submit: positions once the bar's orders fill
        self._executions: list[dict] = []
        self.requests = 0

    # -- the ccxt clients: one per thread, markets loaded once ------------------------------------

    def client(self) -> ccxt.binanceusdm:
        client = getattr(self._local, "client", None)
        if client is None:
            key, secret = self.credentials
            client = binanceusdm_client(self.config.exchange_url, key, secret, int(self.config.timeout_seconds * 1000))
            client.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
            client.fetch = self._audited(client, client.fetch)
            if self._markets is not None:
                client.set_markets(self._markets)
            self._local.client = client
        return client

    def _audited(self, client: ccxt.binanceusdm, fetch: Callable) -> Callable:
        def audited(url, method="GET", headers=None, body=None):
            began = time.perf_counter()
            self.requests += 1
            try:
                response = fetch(url, method, headers, body)
            except Exception as error:
                if self._audit:
                    self._audit.write(method, url, body, client, began, error)
                raise
            if self._audit:
                self._audit.write(method, url, body, client, began, None)
            return response

        return audited

    def markets(self) -> dict:
        if self._markets is None:
            self._markets = self._call(lambda c: c.load_markets(), "load markets")
            missing = [a for a in self.assets if symbol_of(a) not in self._markets]
            if missing:
                raise BrokerError(f"the exchange lists no USDT-M perpetual for {missing}")
        return self._markets

    # -- start: agree with the exchange before the first order --------------------------------------

    def reconcile(self, state: PortfolioState, on_mismatch: OnMismatch | None = None) -> list[dict]:
        """Check the exchange's positions and open orders against the portfolio (refuse or adopt).

        The orders the portfolio says were still executing (``state.open_orders``, from the end of the
        previous session or before a restart) are looked up by client id: what they filled is
        expected on the exchange and is reported by the first ``collect_fills``. The state is left
        alone: adopted at start, the exchange's positions come back as fills (``adopt``), which the
        session applies with its first traded bar like the fills counted after sending (the fills
        table records them, the cash pays for them); [] when the exchange agrees."""
        self.markets()
        self._resume(state.open_orders)
        held = state.shares.reindex(self.assets, fill_value=0.0)
        self._positions = held.fillna(0.0)  # the pending fills come with the first collect
        check = self.check(held)
        if check.agrees:
            logger.info("exchange agrees with the portfolio: %s", _positions_text(check.expected))
            return []
        if on_mismatch is not None:
            on_mismatch(check)
        if self.config.on_mismatch == "refuse":
            raise BrokerError(
                f"the exchange disagrees with the portfolio ({check.text()}): not trading; set broker.on_mismatch: "
                "adopt to take the exchange's positions, or flatten the account"
            )
        return self.adopt(check, state.bar_end if state.bar_end is not None else self.clock.now().floor(self.bar))

    def check(self, portfolio: pd.Series) -> ExchangeCheck:
        """The exchange's positions and open orders against ``portfolio`` (the portfolio's shares and
        the fills counted, not applied yet), at any time between bars.

        Our orders in flight are not a mismatch: what a placed order has filled and the trade list has
        not given yet (``collect_fills``) is expected on the exchange, and an order still open may have
        filled up to its size since it was last seen; our open orders are not stray ones. An asset
        agrees within half the exchange's step; a position that cannot be read never agrees."""
        self.markets()
        for child in self._pending:  # an order still open: what it has filled by now
            if child.status in ("open", "new"):
                self._lookup(child)
        symbols = [symbol_of(a) for a in self.assets]
        positions = self._call(lambda c: c.fetch_positions(symbols), "fetch positions")
        venue = pd.Series(0.0, index=self.assets)
        entry = pd.Series(np.nan, index=self.assets)
        marks = pd.Series(np.nan, index=self.assets)
        for position in positions:
            asset = position["symbol"].split("/")[0]
            if asset in venue.index:
                venue[asset] = float(position["info"].get("positionAmt", 0.0))
                entry[asset] = float(position.get("entryPrice") or np.nan)
                marks[asset] = float(position.get("markPrice") or np.nan)
        # the gross-notional limit values the positions it did not trade yet at the exchange's mark
        self._prices.update({a: float(m) for a, m in marks.items() if np.isfinite(m) and m > 0})
        open_orders = self._call(lambda c: c.fetch_open_orders(), "fetch open orders")
        ours = {c.exchange_order_id for c in self._pending}
        stray = [o for o in open_orders if o["symbol"] in symbols and str(o["id"]) not in ours]
        known, more = pd.Series(0.0, index=self.assets), pd.Series(0.0, index=self.assets)
        for child in self._pending:
            sign = 1 if child.side == "buy" else -1
            known[child.asset] += sign * max(child.filled - child.counted, 0.0)
            if child.status in ("open", "new"):  # may fill up to its size before the positions are read
                more[child.asset] += sign * max(child.sent - max(child.filled, child.counted), 0.0)
        held = portfolio.reindex(self.assets, fill_value=0.0)
        expected = held + known
        half = pd.Series({a: self._step(a) for a in self.assets}) / 2
        low, high = expected + more.clip(upper=0.0) - half, expected + more.clip(lower=0.0) + half
        differ = ~((venue >= low) & (venue <= high))  # fails closed: a NaN holding never agrees
        # the difference is bought or sold at the mark: Binance keeps a position's entry price when it is
        # reduced and blends it when it is added to; its entry price only for a position the portfolio did
        # not hold (or cannot tell); a symbol without position nor order is not listed: the last price known
        whole = expected.isna() | (expected == 0)
        prices = entry.where(whole & (entry > 0), marks)
        prices = prices.where(prices > 0, pd.Series(self._prices, dtype="float64").reindex(self.assets))
        return ExchangeCheck(
            portfolio=held,
            venue=venue,
            in_flight=known,
            expected=expected,
            differ=[a for a in self.assets if differ[a]],
            stray_orders=stray,
            prices=prices,
            marks=marks,
        )

    def adopt(self, check: ExchangeCheck, apply_at: pd.Timestamp) -> list[dict]:
        """Cancel the open orders the session did not place, then take the exchange's positions (read
        again once orders were cancelled: one may have filled meanwhile): one fill per differing asset,
        the difference at the exchange's mark (its entry price for a position the portfolio did not hold;
        the premium index's mark for a symbol the positions do not list), no fee, the client order id
        ``ps-adopt-<bar>-<asset>``. The broker's own positions move with them (the risk limits). Raises
        ``BrokerError`` (nothing adopted, the check made again) while one of the session's orders is open
        on a differing asset, or without a positive price for one."""
        for order in check.stray_orders:
            self._call(lambda c, o=order: c.cancel_order(o["id"], o["symbol"]), f"cancel {order['id']}")
        if check.stray_orders:
            check = self.check(check.portfolio)
        # one of our orders still open may fill while the difference is booked (twice): not now
        busy = sorted({c.asset for c in self._pending if c.status in ("open", "new") and c.asset in check.differ})
        if busy:
            raise BrokerError(f"not adopting {busy} while an order of this session is open there: next bar")
        unpriced = [a for a in check.differ if not check.prices[a] > 0]
        if unpriced:  # the mark of the premium index, or no adoption at all (never at 0)
            for asset in unpriced:
                mark = self._call(lambda c, a=asset: c.fetch_mark_price(symbol_of(a)), f"mark price of {asset}")
                check.prices[asset] = float(mark.get("markPrice") or np.nan)
            if not (check.prices[unpriced] > 0).all():
                raise BrokerError(f"no price to adopt {unpriced} at: next bar")
        logger.warning("adopting the exchange's positions (%s)", check.text() or "only open orders differed")
        now, stamp = self.clock.now(), apply_at.strftime("%y%m%d%H%M")
        fills = []
        for asset in check.differ:  # a holding the portfolio cannot tell (NaN) is taken whole
            held = check.portfolio[asset] if np.isfinite(check.portfolio[asset]) else 0.0
            shares = round(float(check.venue[asset] - check.in_flight[asset] - held), 12)
            price = float(check.prices[asset])
            fills.append(
                {
                    "bar_end": apply_at,
                    "asset": asset,
                    "client_order_id": f"ps-adopt-{stamp}-{asset}",
                    "order_bar_end": apply_at - self.bar,
                    "shares": shares,
                    "price": price,
                    "notional": shares * price,
                    "fee": 0.0,
                    "filled_at": now,
                }
            )
            self._positions[asset] = round(self._positions[asset] + shares, 12)
        return fills

    def _resume(self, orders: list[dict]) -> None:
        """Find the orders of an earlier session on the exchange; forget those it never received."""
        waves = self.config.twap_waves if self.config.execution == "twap" else 1
        for order in {o["client_order_id"]: o for o in orders}.values():
            parent = order["client_order_id"]
            ids = [parent] if waves == 1 else [f"{parent}-{wave}" for wave in range(waves)]
            side = "buy" if float(order["quantity"]) > 0 else "sell"
            for wave, cid in enumerate(ids):
                child = _Child(cid, order, wave, side, abs(float(order["quantity"])))
                if self._lookup(child) is None:  # (a TWAP wave too small to send has no order either)
                    logger.info("order %s is not on the exchange: not resent", cid)
                else:
                    self._children[cid] = child

    # -- orders --------------------------------------------------------------------------------------

    def submit(self, orders: list[dict]) -> None:
        """Send a bar's orders (market, or TWAP waves across the bar); returns once all are placed."""
        if not orders and self.kill_switch.state() != "flatten":
            return
        self.markets()
        orders = self._apply_kill_switch(orders)
        waves = self.config.twap_waves if self.config.execution == "twap" else 1
        # the risk limits see the positions as the earlier orders (of this bar, and those not counted
        # in the fills yet) will leave them, not only as the counted fills do
        self._exposure = self._positions + self._unsettled()
        plan = [self._children_of(order, waves) for order in orders]
        start = self.clock.now()
        failures: list[str] = []
        for wave in range(waves):
            if wave:
                self.clock.wait_until(start + self.bar * wave / waves)
            children = [children[wave] for children in plan if len(children) > wave and children[wave] is not None]
            for child, error in zip(children, self._pool.map(self._place, children), strict=True):
                if error:
                    failures.append(f"{child.client_order_id}: {error}")
        if failures:
            raise BrokerError(f"{len(failures)} orders failed: " + "; ".join(failures))

    def _apply_kill_switch(self, orders: list[dict]) -> list[dict]:
        state = self.kill_switch.state()
        if state is None:
            return orders
        if orders:
            logger.warning("kill switch (%s): %d orders of this bar not sent", state, len(orders))
        if state == "stop":
            return []
        now = self.clock.now()
        stamp = now.strftime("%y%m%d%H%M")
        flatten = []
        for asset, shares in self._positions.items():
            if shares != 0:
                flatten.append(
                    {
                        "bar_end": orders[0]["bar_end"] if orders else now.floor(self.bar),
                        "asset": asset,
                        "client_order_id": f"ps-kill-{stamp}-{asset}",
                        "side": "sell" if shares > 0 else "buy",
                        "quantity": -shares,
                        "decision_price": np.nan,
                        "reduce_only": True,
                    }
                )
        logger.warning("kill switch: flattening %s", _positions_text(self._positions[self._positions != 0]))
        return flatten

    def _children_of(self, order: dict, waves: int) -> list[_Child | None]:
        """The order as child orders: its quantity to the exchange's step, within the risk limits,
        split over the waves (a wave too small for the exchange's minimum joins the next one)."""
        asset, quantity = order["asset"], float(order["quantity"])
        side = "buy" if quantity > 0 else "sell"
        reduce_only = bool(order.get("reduce_only"))
        if np.isfinite(order.get("decision_price") or np.nan):
            self._prices[asset] = float(order["decision_price"])
        limited, reason = (abs(quantity), "") if reduce_only else self._risk_limited(order)
        step = self._step(asset)
        total = _floor_to(limited, step)
        minimum = step if reduce_only else self._minimum(asset, order.get("decision_price"))
        children: list[_Child | None] = []
        if total < minimum or total <= 0:
            child = _Child(order["client_order_id"], order, 0, side, abs(quantity), status="skipped")
            child.reason = reason or f"{total:g} is under the exchange's minimum {minimum:g} (quantity or notional)"
            self._record(child)
            return []
        self._exposure[asset] = round(self._exposure.get(asset, 0.0) + (total if side == "buy" else -total), 12)
        per_wave = _floor_to(total / waves, step)
        carried, sent = 0.0, 0.0
        for wave in range(waves):
            amount = total - sent if wave == waves - 1 else per_wave + carried
            amount = round(amount, 12)
            if wave < waves - 1 and amount < minimum:
                carried, children = amount, [*children, None]
                continue
            carried = 0.0
            sent += amount
            cid = order["client_order_id"] if waves == 1 else f"{order['client_order_id']}-{wave}"
            child = _Child(cid, {**order, "reduce_only": reduce_only}, wave, side, abs(quantity), sent=amount)
            child.reason = reason
            children.append(child)
        return children

    def _unsettled(self) -> pd.Series:
        """Shares of our placed orders that the counted fills do not hold yet (what filled, or what
        may still fill of an order the exchange has not closed)."""
        unsettled = pd.Series(0.0, index=self.assets)
        for child in self._pending:
            expected = max(child.sent, child.filled) if child.status in ("open", "new") else child.filled
            sign = 1 if child.side == "buy" else -1
            unsettled[child.asset] += sign * max(expected - child.counted, 0.0)
        return unsettled

    def _risk_limited(self, order: dict) -> tuple[float, str]:
        """The order's size after the risk limits, and why it was cut (empty if it was not).

        Fails closed: without a usable decision price (or, for the gross limit, a price of every
        other position held) nothing can be checked, and the order is not sent (size 0)."""
        asset, quantity = order["asset"], float(order["quantity"])
        price = float(order.get("decision_price") or np.nan)
        size, reasons = abs(quantity), []
        if not np.isfinite(price) or price <= 0:
            return self._refused(order, "no decision price: risk limits cannot be checked")
        current = float(self._exposure.get(asset, 0.0))
        direction = np.sign(quantity)
        if self.risk.max_order_notional is not None and size * price > self.risk.max_order_notional:
            size, reasons = self.risk.max_order_notional / price, [*reasons, "max_order_notional"]
        if self.risk.max_notional_per_asset is not None:
            room = self.risk.max_notional_per_asset / price - direction * current  # shares until the cap
            if size > max(room, 0.0) and abs(current + direction * size) > abs(current):
                size, reasons = max(room, 0.0), [*reasons, "max_notional_per_asset"]
        if self.risk.max_gross_notional is not None and abs(current + direction * size) > abs(current):
            held = {a: s for a, s in self._exposure.items() if a != asset and s != 0}
            unpriced = [a for a in held if a not in self._prices]
            if unpriced:
                return self._refused(
                    order, f"no price for the held {', '.join(unpriced)}: max_gross_notional cannot be checked"
                )
            others = sum(abs(s) * self._prices[a] for a, s in held.items())
            room = (self.risk.max_gross_notional - others) / price - direction * current
            if size > max(room, 0.0):
                size, reasons = max(room, 0.0), [*reasons, "max_gross_notional"]
        if reasons:
            logger.warning(
                "%s %s cut from %g to %g by %s", order["client_order_id"], asset, abs(quantity), size, reasons
            )
        return size, ", ".join(reasons)

    def _refused(self, order: dict, reason: str) -> tuple[float, str]:
        quantity = float(order["quantity"])
        logger.warning("%s %s %g not sent: %s", order["client_order_id"], order["asset"], quantity, reason)
        return 0.0, reason

    def _step(self, asset: str) -> float:
        market = self.markets()[symbol_of(asset)]
        precision = market["precision"]["amount"]
        return float(precision) if precision else 1.0

    def _minimum(self, asset: str, price: float | None) -> float:
        """The smallest quantity the exchange takes for a (non reduce-only) order of ``asset``."""
        limits = self.markets()[symbol_of(asset)]["limits"]
        minimum = float(limits["amount"]["min"] or 0.0)
        min_cost = float(limits.get("cost", {}).get("min") or 0.0)
        if price and np.isfinite(price) and price > 0:
            minimum = max(minimum, _ceil_to(min_cost / price, self._step(asset)))
        return minimum

    def _place(self, child: _Child) -> str | None:
        """Place one child order exactly once; return None, or the permanent error's message."""
        import ccxt

        symbol = symbol_of(child.asset)
        params = {"clientOrderId": child.client_order_id}
        if child.parent.get("reduce_only"):
            params["reduceOnly"] = True
        amount = float(self.client().amount_to_precision(symbol, child.sent))
        known = self._children.get(child.client_order_id)
        if known is not None and known.exchange_order_id is not None:  # sent already in this session
            child.status, child.reason = "duplicate", f"already placed as order {known.exchange_order_id}"
            self._record(child)
            return None
        child.sent_at = self.clock.now()
        self._children[child.client_order_id] = child
        error: str | None = None
        last: Exception | None = None
        for attempt in range(self.config.max_attempts):
            child.attempts = attempt + 1
            try:
                placed = self.client().create_order(symbol, "market", child.side, amount, None, params)
                failpoint("order_sent")  # on the exchange, not yet known here: a restart must find it
                self._acknowledge(child, placed)
                break
            except ccxt.InvalidOrder as rejected:
                if _duplicate(rejected) and self._lookup(child):
                    break  # an earlier attempt (or an earlier process) placed it
                error = f"rejected: {_message(rejected)}"
                break
            except ccxt.OperationFailed as transient:
                last = transient
                self.sleep(self._backoff(attempt, transient))
                if self._lookup(child):  # it reached the exchange before the error
                    break
            except ccxt.BaseError as permanent:
                error = f"{type(permanent).__name__}: {_message(permanent)}"
                break
        else:
            error = f"gave up after {self.config.max_attempts} attempts: {_message(last)}"
        if error:
            child.status, child.reason = "failed", error
            logger.error("order %s %s %g %s failed: %s", child.client_order_id, child.side, amount, child.asset, error)
        self._record(child)
        return error

    def _lookup(self, child: _Child) -> dict | None:
        """The order on the exchange by its client id, or None if the exchange has never seen it."""
        import ccxt

        for attempt in range(self.config.max_attempts):
            try:
                order = self.client().fetch_order(
                    None, symbol_of(child.asset), {"origClientOrderId": child.client_order_id}
                )
            except ccxt.OrderNotFound:
                return None
            except ccxt.OperationFailed as transient:
                self.sleep(self._backoff(attempt, transient))
                continue
            self._acknowledge(child, order)
            return order
        raise BrokerError(f"cannot tell whether {child.client_order_id} reached the exchange: it does not answer")

    def _acknowledge(self, child: _Child, order: dict) -> None:
        child.exchange_order_id = str(order["id"])
        child.status = order.get("status") or "open"
        child.filled = float(order.get("filled") or 0.0)
        child.average_price = order.get("average")
        child.acknowledged_at = self.clock.now()
        timestamp = order.get("timestamp")
        if timestamp and (child.placed_ms is None or timestamp < child.placed_ms):
            child.placed_ms = int(timestamp)
        if child not in self._pending:
            self._pending.append(child)

    def _backoff(self, attempt: int, error: Exception) -> float:
        delay = retry_delay(self.client(), error, attempt, self.config.backoff_seconds)
        logger.warning("transient error (%s); retrying in %.2f s", _message(error), delay)
        return delay

    def _record(self, child: _Child) -> None:
        self._executions.append(child.row())

    def executions(self) -> pd.DataFrame:
        """Every child order of the session as the exchange saw it (the log dir's broker/executions)."""
        return pd.DataFrame(self._executions, columns=EXECUTION_COLUMNS)

    def open_orders(self) -> list[dict]:
        return [child.parent for child in self._pending]

    # -- fills ---------------------------------------------------------------------------------------

    def collect_fills(self, bar_end: pd.Timestamp) -> list[dict]:
        """The fills of our orders since the last call, from the exchange's trade list (one row per
        child order: executed shares, VWAP price, fees)."""
        if not self._pending:
            return []
        by_id = {child.exchange_order_id: child for child in self._pending}
        symbols = sorted({symbol_of(child.asset) for child in self._pending})
        trades = [t for trades in self._pool.map(self._trades_of, symbols) for t in trades]
        fills: dict[str, dict] = {}
        now = self.clock.now()
        for trade in trades:
            child = by_id.get(str(trade["order"]))
            if child is None or trade["id"] in child.trades:
                continue
            child.trades.add(trade["id"])
            shares = float(trade["amount"]) * (1 if trade["side"] == "buy" else -1)
            fee = trade.get("fee") or {}
            if fee.get("currency") not in (None, "USDT"):
                raise BrokerError(f"trade {trade['id']} paid its fee in {fee['currency']}: only USDT fees are handled")
            row = fills.setdefault(
                child.client_order_id,
                {
                    "bar_end": bar_end,
                    "asset": child.asset,
                    "client_order_id": child.client_order_id,
                    "order_bar_end": child.parent["bar_end"],
                    "shares": 0.0,
                    "price": np.nan,
                    "notional": 0.0,
                    "fee": 0.0,
                    "filled_at": now,
                },
            )
            row["shares"] += shares
            row["notional"] += shares * float(trade["price"])
            row["fee"] += float(fee.get("cost") or 0.0)
            child.counted += abs(shares)
        for row in fills.values():
            row["shares"] = round(row["shares"], 12)
            row["price"] = row["notional"] / row["shares"] if row["shares"] else np.nan
            self._positions[row["asset"]] = round(self._positions[row["asset"]] + row["shares"], 12)
            if np.isfinite(row["price"]):
                self._prices[row["asset"]] = row["price"]
        self._pending = [c for c in self._pending if not self._done(c)]
        return list(fills.values())

    def collect_immediate_fills(self, apply_at: pd.Timestamp) -> list[dict]:
        """Market orders are filled at once: their fills, counted right after they are sent."""
        return self.collect_fills(apply_at)

    def _done(self, child: _Child) -> bool:
        """All the order filled is counted, and it will not fill more (closed, canceled, expired)."""
        if child.status in ("open", "new"):  # a market order closes at once: ask the exchange again
            self._lookup(child)
        return child.status not in ("open", "new") and child.counted + 1e-12 >= child.filled

    def _trades_of(self, symbol: str) -> list[dict]:
        # from the earliest order not fully counted, not from the session's first order: Binance lists at
        # most 7 days from a startTime (ccxt bounds an older since to them), a long session's newer trades
        # would never be read
        times = [child.placed_ms for child in self._pending if symbol_of(child.asset) == symbol]
        since = min(times) if times and None not in times else None
        what = f"fetch trades of {symbol}"
        trades = self._call(lambda c: c.fetch_my_trades(symbol, since, 1000), what)
        page = trades
        while len(page) == 1000:  # a full page: go on from the next trade id
            after = {"fromId": int(page[-1]["id"]) + 1}
            page = self._call(lambda c, params=after: c.fetch_my_trades(symbol, None, 1000, params), what)
            trades = trades + page
        return trades

    def _call(self, action: Callable[[ccxt.binanceusdm], object], what: str):
        """A read-only request, retried on transient errors; permanent errors fail with ``what``."""
        import ccxt

        for attempt in range(self.config.max_attempts):
            try:
                return action(self.client())
            except ccxt.OperationFailed as transient:
                if attempt == self.config.max_attempts - 1:
                    raise BrokerError(f"{what}: the exchange does not answer ({_message(transient)})") from None
                self.sleep(self._backoff(attempt, transient))
            except ccxt.BaseError as permanent:
                raise BrokerError(f"{what}: {type(permanent).__name__}: {_message(permanent)}") from None
        raise AssertionError("unreachable")

    # -- the exchange's statement -------------------------------------------------------------------

    def statement(self, since: pd.Timestamp, seen: set[tuple[str, str]]) -> AccountStatement:
        """The account's income history from ``since`` (GET /fapi/v1/income: startTime inclusive, pages
        of INCOME_PAGE rows up to a fixed endTime, so rows arriving meanwhile wait for the next pull),
        without the rows already ``seen`` (Binance: a tranId is unique within its incomeType), and the
        balances and maintenance margin (GET /fapi/v2/account; the margin ratio is totalMaintMargin /
        totalMarginBalance, as Binance shows it), read first: the rows then pulled up to the time it
        answered are all in its wallet, and none it lacks."""
        account = self._call(lambda c: c.fapiPrivateV2GetAccount(), "fetch account")
        fetched_at = self.clock.now()
        start_ms = int(since.value // 1_000_000)
        end_ms = int(fetched_at.value // 1_000_000)
        rows, page = [], 1
        while True:
            params = {"startTime": start_ms, "endTime": end_ms, "limit": INCOME_PAGE, "page": page}
            answer = self._call(lambda c, p=params: c.fapiPrivateGetIncome(p), "fetch income history")
            rows += answer
            if len(answer) < INCOME_PAGE:
                break
            page += 1
        fresh = []
        for row in rows:
            key = (str(row["incomeType"]), str(row["tranId"]))
            if key in seen or row.get("asset", "USDT") != "USDT":
                continue
            seen.add(key)
            fresh.append(
                {
                    "asset": str(row.get("symbol") or "").removesuffix("USDT"),
                    "income_type": key[0],
                    "income": float(row["income"]),
                    "tran_id": key[1],
                    "trade_id": str(row.get("tradeId") or ""),
                    "income_at": pd.Timestamp(int(row["time"]), unit="ms", tz="UTC"),
                }
            )
        margin_balance, maint_margin = float(account["totalMarginBalance"]), float(account["totalMaintMargin"])
        return AccountStatement(
            income=pd.DataFrame(fresh, columns=INCOME_COLUMNS),
            account={
                "wallet_balance": float(account["totalWalletBalance"]),
                "margin_balance": margin_balance,
                "unrealized_pnl": float(account["totalUnrealizedProfit"]),
                "maint_margin": maint_margin,
                "margin_ratio": margin_ratio(maint_margin, margin_balance),
                "fetched_at": fetched_at,
            },
        )

    def force_kill_switch(self, state: str) -> None:
        """The orchestrator's stop (a Dagster run tag): 'stop' or 'flatten', whatever the file says."""
        self.kill_switch.forced = state

    def kill_switch_state(self) -> str | None:
        """The kill switch as the next bar's orders will meet it (``KillSwitch.state``)."""
        return self.kill_switch.state()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._audit:
            self._audit.close()


def credentials_from_env(config: BrokerConfig) -> tuple[str, str]:
    """The API key and secret from the environment variables the config names (never from a file)."""
    key, secret = os.environ.get(config.api_key_env), os.environ.get(config.api_secret_env)
    missing = [name for name, value in ((config.api_key_env, key), (config.api_secret_env, secret)) if not value]
    if missing:
        raise BrokerError(f"set the environment variables {', '.join(missing)} (the exchange's API key and secret)")
    return key, secret


def _duplicate(error: Exception) -> bool:
    text = str(error)
    return "-4116" in text or "duplicate" in text.lower()


_SIGNATURE = re.compile(r"(signature=)[0-9a-fA-F]+")


def _message(error: Exception) -> str:
    """An exchange error in one line (ccxt prefixes the exchange id and the raw JSON)."""
    text = str(error)
    match = re.search(r'"msg"\s*:\s*"([^"]*)"', text)
    code = re.search(r'"code"\s*:\s*(-?\d+)', text)
    if match:
        return f"{match.group(1)} (code {code.group(1)})" if code else match.group(1)
    return _SIGNATURE.sub(r"\1<redacted>", text)[:300]


def _floor_to(value: float, step: float) -> float:
    return round(np.floor(value / step + 1e-9) * step, 12)


def _ceil_to(value: float, step: float) -> float:
    return round(np.ceil(value / step - 1e-9) * step, 12)


def _positions_text(positions: pd.Series) -> str:
    held = {a: s for a, s in positions.items() if s}
    return ", ".join(f"{a} {s:g}" for a, s in held.items()) or "flat"


class _AuditLog:
    """Every request and response, one JSON line each; the API key and signatures never written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a")
        self._lock = threading.Lock()

    def write(self, method, url, body, client, began, error) -> None:
        response = client.last_http_response
        record = {
            "at": pd.Timestamp.now(tz="UTC").isoformat(),
            "method": method,
            "url": _SIGNATURE.sub(r"\1<redacted>", url),
            "body": _SIGNATURE.sub(r"\1<redacted>", body) if isinstance(body, str) else body,
            "ms": round((time.perf_counter() - began) * 1e3, 3),
            "response": (response or "")[:20_000] if error is None or response else None,
            "error": f"{type(error).__name__}: {_message(error)}" if error else None,
        }
        line = json.dumps(record, default=str)
        if client.apiKey:
            line = line.replace(client.apiKey, "<api-key>")
        if client.secret:
            line = line.replace(client.secret, "<secret>")
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()
