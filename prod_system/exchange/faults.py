"""Fault injection: rules that make chosen endpoints slow, time out, fail, throttle, reject or fill partially.

A rule is a JSON object (a list of them in a file, or posted to ``/_control/faults``)::

    {"endpoint": "POST /fapi/v1/order",  # or "*" for every endpoint (never the /_control/ ones)
     "kind": "latency" | "timeout" | "server_error" | "rate_limit" | "ban" | "reject" | "partial_fill",
     "delay_ms": 200,        # latency: added delay; timeout: how long the answer hangs (default 30000)
     "after": true,          # timeout/server_error: process the request first, then hang or fail the
                             # answer (the order IS placed, the client sees an error)
     "status": 503,          # server_error: HTTP status (5xx, default 503)
     "body": "json",         # server_error: "json" = Binance's -1001 error, "text" = a gateway's plain page
     "retry_after": 1,       # rate_limit: seconds in the Retry-After header of the 429 (code -1003);
                             # ban: of the 418 (an IP banned for going on after 429s, code -1003)
     "code": -2019, "msg": "Margin is insufficient.",  # reject: the Binance error to answer
     "fraction": 0.5,        # partial_fill: share of an order's quantity that fills at placement
     "count": 3,             # fire on the next 3 matching calls only (default: no limit)
     "probability": 0.2, "seed": 7}  # fire at random, reproducibly (default: always)
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field, fields
from typing import Any

from prod_system.errors import FaultRuleError

KINDS = ("latency", "timeout", "server_error", "rate_limit", "ban", "reject", "partial_fill")
DEFAULT_TIMEOUT_MS = 30_000


@dataclass
class FaultRule:
    endpoint: str
    kind: str
    delay_ms: int | None = None
    after: bool = False
    status: int = 503
    body: str = "json"
    retry_after: int = 1
    code: int = -2019
    msg: str = "Margin is insufficient."
    fraction: float = 0.5
    count: int | None = None
    probability: float = 1.0
    seed: int | None = None
    _random: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    @property
    def sleep_ms(self) -> int:
        """How long the rule holds the answer: its delay, or a timeout's default."""
        if self.delay_ms is not None:
            return self.delay_ms
        return DEFAULT_TIMEOUT_MS if self.kind == "timeout" else 0

    def matches(self, endpoint: str) -> bool:
        return self.endpoint in ("*", endpoint)

    def fire(self) -> bool:
        """Whether the rule applies to this call; uses up one of its ``count``."""
        if self.count is not None and self.count <= 0:
            return False
        if self.probability < 1 and self._random.random() >= self.probability:
            return False
        if self.count is not None:
            self.count -= 1
        return True

    def to_json(self) -> dict:
        return {item.name: getattr(self, item.name) for item in fields(self) if item.init}


_FIELD_TYPES = {
    "endpoint": str,
    "kind": str,
    "delay_ms": int,
    "after": bool,
    "status": int,
    "body": str,
    "retry_after": int,
    "code": int,
    "msg": str,
    "fraction": float,
    "count": int,
    "probability": float,
    "seed": int,
}


def _has_type(value: Any, expected: type) -> bool:
    """JSON types: a bool is no number, an int is a fine float."""
    if isinstance(value, bool):
        return expected is bool
    if expected is float:
        return isinstance(value, int | float)
    return isinstance(value, expected)


def parse_rule(data: Any, position: int = 0) -> FaultRule:
    where = f"fault rule {position}"
    if not isinstance(data, dict):
        raise FaultRuleError(f"{where}: expected an object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_FIELD_TYPES))
    if unknown:
        raise FaultRuleError(f"{where}: unknown fields {unknown}")
    for name in ("endpoint", "kind"):
        if name not in data:
            raise FaultRuleError(f"{where}: '{name}' is required")
    for name, value in data.items():
        expected = _FIELD_TYPES[name]
        if not _has_type(value, expected):
            raise FaultRuleError(f"{where}: '{name}' must be {expected.__name__}, got {value!r}")
    rule = FaultRule(**data)
    endpoint_method = rule.endpoint.split(" ")[0]
    if rule.endpoint != "*" and (endpoint_method not in ("GET", "POST", "PUT", "DELETE") or " /" not in rule.endpoint):
        raise FaultRuleError(f"{where}: endpoint must be '*' or 'METHOD /path', got {rule.endpoint!r}")
    if rule.kind not in KINDS:
        raise FaultRuleError(f"{where}: kind must be one of {', '.join(KINDS)}, got {rule.kind!r}")
    if rule.delay_ms is not None and rule.delay_ms < 0:
        raise FaultRuleError(f"{where}: 'delay_ms' must not be negative")
    if rule.after and rule.kind not in ("timeout", "server_error"):
        raise FaultRuleError(f"{where}: 'after' applies to timeout and server_error rules only")
    if not 500 <= rule.status <= 599:
        raise FaultRuleError(f"{where}: 'status' must be a 5xx HTTP status, got {rule.status}")
    if rule.body not in ("json", "text"):
        raise FaultRuleError(f"{where}: 'body' must be 'json' or 'text', got {rule.body!r}")
    if not 0 < rule.fraction <= 1:
        raise FaultRuleError(f"{where}: 'fraction' must be in (0, 1], got {rule.fraction}")
    if not 0 <= rule.probability <= 1:
        raise FaultRuleError(f"{where}: 'probability' must be in [0, 1], got {rule.probability}")
    if rule.count is not None and rule.count < 0:
        raise FaultRuleError(f"{where}: 'count' must not be negative")
    if rule.retry_after < 0:
        raise FaultRuleError(f"{where}: 'retry_after' must not be negative")
    return rule


def parse_rules(data: Any) -> list[FaultRule]:
    if not isinstance(data, list):
        raise FaultRuleError(f"fault rules must be a JSON list of objects, got {type(data).__name__}")
    return [parse_rule(item, position) for position, item in enumerate(data)]


class FaultInjector:
    """The active rules; replaced as a whole, read by the server on every call (thread-safe)."""

    def __init__(self, rules: list[FaultRule] | None = None):
        self._lock = threading.Lock()
        self._rules = list(rules or [])

    def replace(self, rules: list[FaultRule]) -> None:
        with self._lock:
            self._rules = list(rules)

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def fired(self, endpoint: str) -> list[FaultRule]:
        """The rules that apply to this call of ``endpoint``, in the order they were given."""
        if endpoint.split(" ", 1)[-1].startswith("/_control/"):
            return []
        with self._lock:
            return [rule for rule in self._rules if rule.matches(endpoint) and rule.fire()]
