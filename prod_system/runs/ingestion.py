"""Candle ingestion: the latest closed 1-minute candles of the universe, from the exchange to the database.

Every minute (a couple of seconds after it closes) each asset's recent candles are fetched through
ccxt (from the last recorded one, two minutes back to catch revisions) and upserted with the time
they were written as their knowledge time. A candle still open is never written; re-ingesting is
idempotent; a revised candle becomes a new revision (``MarketDatabase.upsert``).

A pass never reaches further back than its backfill: an asset with no candle in it starts there
(a live session passes its warm-up, the model's lookback, so that its first bar has its history),
paging through the exchange's klines (at most ``PAGE`` candles a request) up to now.

With ``funding``, a pass also records the settled funding rates (``fetch_funding_rate_history``,
Binance's /fapi/v1/fundingRate) with the time they were written as their knowledge time. It asks
once an hour (Binance settles on whole hours) and, once the next settlement an asset's last two
suggest has passed, at every pass until it is there (for ``FUNDING_GRACE``); each ask goes back
``FUNDING_REFETCH`` from the last recorded settlement (a revised rate is caught, a re-fetched one
changes nothing). The predicted rate of the next settlement (``fetch_funding_rate``) is not a
settled rate and is never recorded as one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from prod_system.common.clock import Clock
from prod_system.data.funding import LOOK_BEHIND, empty_funding, known_after, normalize_funding
from prod_system.data.market_data import CANDLE
from prod_system.data.market_db import MarketDatabase, UpsertResult
from prod_system.trading.brokers.ccxt_client import binanceusdm_client, symbol_of

if TYPE_CHECKING:
    import ccxt

logger = logging.getLogger("prod_system.ingestion")
MINUTE_MS = 60_000
REFETCH = pd.Timedelta(minutes=2)  # candles before the last recorded one fetched again (revisions)
BACKFILL = pd.Timedelta(hours=2)  # the backfill when no model says (a live session passes its warm-up)
PAGE = 1000  # klines per request: ccxt's cap for binanceusdm, and Binance's most candles per weight unit (5)
AFTER_CLOSE = pd.Timedelta(seconds=1)  # a pass runs this long after each minute's close
FUNDING_PAGE = 1000  # settlements per fundingRate request: Binance's most
FUNDING_REFETCH = pd.Timedelta(days=1)  # settlements before the last recorded one fetched again
FUNDING_GRACE = pd.Timedelta(minutes=10)  # a settlement the exchange has not published yet is asked for this long


def page_funding(
    fetch: Callable[[int, int], list[dict]], since_ms: int, until_ms: int, limit: int = FUNDING_PAGE
) -> list[dict]:
    """Every settlement in [since_ms, until_ms] (ms), oldest first, from ``fetch(since_ms, limit)``
    (ccxt's funding rate history: dicts with 'timestamp' and 'fundingRate', oldest first, at most
    ``limit``), paging on from the last one's time while pages come full."""
    rows: list[dict] = []
    while since_ms <= until_ms:
        page = fetch(since_ms, limit)
        kept = [row for row in page if since_ms <= row["timestamp"] <= until_ms]
        rows += kept
        if len(page) < limit or not kept:
            break
        since_ms = kept[-1]["timestamp"] + 1
    return rows


def funding_frame(asset: str, rows: list[dict], knowledge: pd.Timestamp | pd.Timedelta) -> pd.DataFrame:
    """``data.funding``'s table of ccxt's funding rate history of ``asset``: known at ``knowledge`` (a
    time: when they were fetched) or at their settlement + ``knowledge`` (a delay: history). The mark
    price is the exchange's (Binance's 'markPrice'), NaN where it has none."""
    if not rows:
        return empty_funding()
    settled = pd.to_datetime([row["timestamp"] for row in rows], unit="ms", utc=True)
    marks = [(row.get("info") or {}).get("markPrice") for row in rows]
    frame = pd.DataFrame(
        {
            "asset": asset,
            "funding_time": settled,
            "rate": [row.get("fundingRate") for row in rows],
            "mark_price": pd.to_numeric(pd.Series(marks, dtype=object).replace("", np.nan), errors="coerce"),
            "knowledge_ts": known_after(settled, knowledge) if isinstance(knowledge, pd.Timedelta) else knowledge,
        }
    )
    return normalize_funding(frame, f"funding rates of {asset} from the exchange")


@dataclass
class _FundingSeen:
    """What the last ask of an asset's funding found: when it asked, its latest settlement and the
    interval between its last two (None until known)."""

    asked: pd.Timestamp
    last: pd.Timestamp | None
    interval: pd.Timedelta | None


@dataclass
class IngestReport:
    at: pd.Timestamp
    result: UpsertResult
    failed: dict[str, str]  # asset -> error, for the assets whose fetch failed this time
    seconds: float
    funding: UpsertResult = field(default_factory=UpsertResult)  # settled funding rates (with ``funding``)


class Ingestor:
    """Fetches the universe's closed candles through ccxt and records them in the database."""

    def __init__(
        self,
        database: MarketDatabase,
        assets: list[str],
        clock: Clock,
        exchange_url: str | None = None,
        backfill: pd.Timedelta = BACKFILL,
        client_factory: Callable[[], ccxt.binanceusdm] | None = None,
        funding: bool = False,
    ):
        self.database, self.assets, self.clock, self.backfill = database, list(assets), clock, backfill
        self.funding = funding
        self._funding_seen: dict[str, _FundingSeen] = {}
        self._client_factory = client_factory or (lambda: binanceusdm_client(exchange_url, timeout_ms=5_000))
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=min(8, len(self.assets)), thread_name_prefix="ingest")

    def _client(self) -> ccxt.binanceusdm:
        if getattr(self._local, "client", None) is None:
            self._local.client = self._client_factory()
        return self._local.client

    def ingest_once(self, backfill: pd.Timedelta | None = None) -> IngestReport:
        """One pass: fetch every asset's new candles, write the closed ones; an asset that fails is
        reported and retried next time (the others are written). ``backfill`` (default: the
        ingestor's) bounds how far back the pass reaches: older gaps are no one's warm-up."""
        import ccxt  # here, not at import (see exchange_client)

        began = self.clock.now()
        last = self.database.last_bar_ends(self.assets)
        earliest = began - (self.backfill if backfill is None else backfill)
        now_ms = int(began.value // 1_000_000)

        def fetch(asset: str) -> pd.DataFrame | str:
            since = earliest if last[asset] is None else max(earliest, last[asset] - CANDLE - REFETCH)
            since_ms = int(since.floor(CANDLE).value // 1_000_000)
            rows: list[list] = []
            try:
                while True:  # page until now (a backfill is longer than a page)
                    page = self._client().fetch_ohlcv(symbol_of(asset), "1m", since_ms, PAGE)
                    rows += page
                    if len(page) < PAGE or page[-1][0] + MINUTE_MS >= now_ms:
                        break
                    since_ms = page[-1][0] + MINUTE_MS
            except ccxt.BaseError as error:
                return f"{type(error).__name__}: {str(error)[:200]}"
            frame = pd.DataFrame(rows, columns=["open_ms", "open", "high", "low", "close", "volume"])
            frame["asset"] = asset
            frame["bar_start"] = pd.to_datetime(frame["open_ms"], unit="ms", utc=True)
            return frame

        fetched = dict(zip(self.assets, self._pool.map(fetch, self.assets), strict=True))
        failed = {asset: result for asset, result in fetched.items() if isinstance(result, str)}
        frames = [result for result in fetched.values() if not isinstance(result, str)]
        now = self.clock.now()
        rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if len(rows):
            rows = rows[rows["bar_start"] + CANDLE <= now]  # never a candle still open
        result = self.database.upsert(rows, now) if len(rows) else UpsertResult()
        funding = UpsertResult()
        if self.funding:
            funding, funding_failed = self._ingest_funding(began)
            failed.update({asset: error for asset, error in funding_failed.items() if asset not in failed})
        for asset, error in failed.items():
            logger.warning("ingestion of %s failed (retried next minute): %s", asset, error)
        if result.revised:
            logger.warning("%d candles were revised by the exchange (old versions kept)", result.revised)
        if funding.new or funding.revised:
            logger.info("funding rates: %d new, %d revised by the exchange", funding.new, funding.revised)
        report = IngestReport(now, result, failed, (self.clock.now() - began).total_seconds(), funding)
        logger.info(
            "ingested at %s: %d new, %d revised, %d unchanged, %d failed in %.3f s",
            now.isoformat(),
            result.new,
            result.revised,
            result.unchanged,
            len(failed),
            report.seconds,
        )
        return report

    def _funding_due(self, asset: str, now: pd.Timestamp) -> bool:
        """Whether to ask for ``asset``'s funding now: in an hour not asked yet, or while the settlement
        its last two suggest is due and not there (for ``FUNDING_GRACE``)."""
        seen = self._funding_seen.get(asset)
        if seen is None or now.floor("h") > seen.asked.floor("h"):
            return True
        if seen.last is None or seen.interval is None:
            return False
        expected = seen.last + seen.interval
        return expected <= now < expected + FUNDING_GRACE

    def _ingest_funding(self, began: pd.Timestamp) -> tuple[UpsertResult, dict[str, str]]:
        """Fetch and record the settled funding rates of the assets due (``_funding_due``), known now."""
        import ccxt

        due = [asset for asset in self.assets if self._funding_due(asset, began)]
        if not due:
            return UpsertResult(), {}
        last = self.database.last_funding_times(due)
        earliest = began - max(self.backfill, LOOK_BEHIND)
        now_ms = int(began.value // 1_000_000)

        def fetch(asset: str) -> list[dict] | str:
            since = earliest if last[asset] is None else max(earliest, last[asset] - FUNDING_REFETCH)
            try:
                return page_funding(
                    lambda since_ms, limit: self._client().fetch_funding_rate_history(
                        symbol_of(asset), since_ms, limit, {"until": now_ms}
                    ),
                    int(since.value // 1_000_000),
                    now_ms,
                )
            except ccxt.BaseError as error:
                return f"funding: {type(error).__name__}: {str(error)[:200]}"

        fetched = dict(zip(due, self._pool.map(fetch, due), strict=True))
        now = self.clock.now()
        failed = {asset: rows for asset, rows in fetched.items() if isinstance(rows, str)}
        frames = []
        for asset, rows in fetched.items():
            if isinstance(rows, str):
                continue
            frame = funding_frame(asset, rows, now)
            times = frame["funding_time"]
            interval = times.iloc[-1] - times.iloc[-2] if len(times) > 1 else None
            seen = self._funding_seen.get(asset)
            if interval is None and seen is not None:
                interval = seen.interval
            self._funding_seen[asset] = _FundingSeen(began, times.iloc[-1] if len(times) else last[asset], interval)
            frames.append(frame)
        rows = pd.concat(frames, ignore_index=True) if frames else empty_funding()
        return (self.database.upsert_funding(rows) if len(rows) else UpsertResult()), failed

    def run(self, stop: threading.Event, offset: pd.Timedelta = AFTER_CLOSE, at_once: bool = True) -> None:
        """Ingest once now (unless not ``at_once``: a backfill just ran), then ``offset`` after every
        minute's close, until ``stop`` is set."""
        first = at_once
        while not stop.is_set():
            try:
                if first:
                    self.ingest_once()
            except Exception:  # the loop must survive a bad minute (database down, ...); it is logged
                logger.exception("ingestion pass failed; retrying at the next minute")
            first = True
            next_minute = self.clock.now().floor(CANDLE) + CANDLE + offset
            while not stop.is_set() and self.clock.now() < next_minute:
                stop.wait(0.02)  # short real-time naps: the clock may run faster than real time

    def close(self) -> None:
        self._pool.shutdown(wait=True)
