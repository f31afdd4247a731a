"""Candle history from the exchange: 1-minute klines paged through ccxt, resumable after an interruption.

Each asset is fetched from the window's start in pages of ``PAGE`` candles (Binance's most candles per
unit of request weight), each page written at once to a work folder beside the snapshot, atomically
(a page file is whole or absent). Run again after an interruption (a kill, a lost connection, a ban),
the download goes on after each asset's last page: no candle fetched twice, none missed. Candles still
open at the exchange's time are never written: the window stops at the last closed minute.

Transient errors (timeouts, 5xx, 429) are retried with the broker's delay (``retry_delay``: backoff,
or Retry-After); a 418 (this address banned) stops at once, saying when to run again. Against Binance
ccxt's own rate limiter paces the requests by their weight (a 1,000-candle page weighs 5 of the
2,400 a minute), and an answer whose ``X-MBX-USED-WEIGHT-1M`` passes ``WEIGHT_BUDGET`` (other
processes on the same address count too) waits for the next minute.

The caller builds the client (``binanceusdm_client``), reads the candles by window (``Download.candles``:
a long dump goes month by month), fetches the window's funding rates (``Download.funding``: a few
requests an asset, kept in the work folder too), writes the snapshot and then ``discard``s the work folder.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from prod_system.common.files import write_atomically
from prod_system.data.funding import FUNDING_COLUMNS, LOOK_BEHIND, empty_funding, normalize_funding
from prod_system.data.market_data import CANDLE
from prod_system.errors import DownloadInterrupted, MarketDataError
from prod_system.runs.ingestion import MINUTE_MS, PAGE, funding_frame, page_funding
from prod_system.trading.brokers.ccxt_client import banned, retry_delay, symbol_of

if TYPE_CHECKING:
    import ccxt

WEIGHT_BUDGET = 2_000  # of Binance's 2,400 request weight a minute per IP: above it, wait for the next minute
MAX_ATTEMPTS = 8  # per request: ~40 s of backoff, or longer when the exchange says Retry-After
BACKOFF_SECONDS = 0.5
MANIFEST = "download.json"
FUNDING_DIR = "_funding"  # in the work folder, beside the assets' page folders (an asset is alphanumeric)
PAGE_COLUMNS = ["open_ms", "open", "high", "low", "close", "volume"]


@dataclass
class DownloadReport:
    """What a download did: candles in the window, of which some were on disk from an earlier run."""

    candles: int
    resumed: int
    requests: int
    retries: int
    pauses: int  # waits for the next minute, the weight budget spent
    seconds: float
    until: pd.Timestamp  # the window's effective end: the last closed minute if the exchange's now came first


def work_dir_for(out: str | Path) -> Path:
    """The folder of a download's pages: beside the snapshot, named after it."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


class Download:
    """One download of ``assets`` over [start, end) from the exchange behind ``client`` into ``work_dir``."""

    def __init__(
        self,
        client: ccxt.binanceusdm,
        source: str,
        assets: list[str],
        start: pd.Timestamp,
        end: pd.Timestamp,
        work_dir: str | Path,
        progress: Callable[[str, int, int], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        note: Callable[[str], None] | None = None,
        weight_budget: int = WEIGHT_BUDGET,
    ):
        self.client, self.source, self.assets = client, source, list(assets)
        self.start, self.end = start, end
        self.work_dir = Path(work_dir)
        self.progress = progress or (lambda stage, done, total: None)
        self.sleep = sleep
        self.note = note or (lambda message: None)
        self.requests = self.retries = self.pauses = 0
        self.weight_budget = weight_budget
        self.until = end

    def run(self) -> DownloadReport:
        """Fetch what the work folder lacks of the window (up to the exchange's last closed minute)."""
        began = time.perf_counter()
        now_ms = self._call(lambda c: c.fetch_time(), "the exchange's time", attempts=1)  # unreachable: say so now
        until = min(self.end, pd.Timestamp(now_ms, unit="ms", tz="UTC").floor(CANDLE))
        if until <= self.start:
            raise MarketDataError(
                f"the exchange has no closed candle in the window yet: its time is "
                f"{pd.Timestamp(now_ms, unit='ms', tz='UTC').isoformat()}"
            )
        markets = self._call(lambda c: c.load_markets(), "the exchange's markets")
        unlisted = [a for a in self.assets if symbol_of(a) not in markets]
        if unlisted:
            raise MarketDataError(f"the exchange lists no USDT-M perpetual for {', '.join(unlisted)}")
        self._open_work_dir()
        start_ms, until_ms = _ms(self.start), _ms(until)
        total = len(self.assets) * (until_ms - start_ms) // MINUTE_MS
        resumed = 0
        nexts = {}
        for asset in self.assets:  # each asset goes on after its last page on disk
            count, last_ms = self._on_disk(asset, start_ms, until_ms)
            resumed += count
            nexts[asset] = start_ms if last_ms is None else last_ms + MINUTE_MS
        done = resumed
        self.progress("download", done, total)
        for asset in self.assets:
            since = nexts[asset]
            while since < until_ms:
                rows = self._call(
                    lambda c, a=asset, s=since: c.fetch_ohlcv(symbol_of(a), "1m", s, PAGE, {"until": until_ms - 1}),
                    f"the klines of {asset}",
                )
                page = pd.DataFrame(rows, columns=PAGE_COLUMNS)
                page = page[(page["open_ms"] >= since) & (page["open_ms"] < until_ms)]  # closed: until <= now
                if len(page):
                    self._write_page(asset, page)
                    done += len(page)
                    self.progress("download", min(done, total), total)
                if len(rows) < PAGE or not len(page):  # the exchange has no more in the window
                    break
                since = int(page["open_ms"].iloc[-1]) + MINUTE_MS
        self.progress("download", total, total)
        self.until = until
        seconds = time.perf_counter() - began
        return DownloadReport(done, resumed, self.requests, self.retries, self.pauses, seconds, until)

    def candles(self, lo: pd.Timestamp, hi: pd.Timestamp, delay: pd.Timedelta) -> pd.DataFrame:
        """The downloaded candles of [lo, hi) in the snapshot's columns, known at their close +
        ``delay`` (they are history); only the pages that overlap the window are read."""
        lo_ms, hi_ms = _ms(lo), _ms(min(hi, self.until))
        frames = []
        for asset in self.assets:
            pages = [
                pd.read_parquet(path)
                for path in self._page_files(asset)
                if lo_ms - PAGE * MINUTE_MS < int(path.stem) < hi_ms
            ]
            if pages:
                frames.append(pd.concat(pages, ignore_index=True).assign(asset=asset))
        columns = ["asset", "bar_start", "bar_end", "knowledge_ts", *PAGE_COLUMNS[1:]]
        if not frames:
            return pd.DataFrame(columns=columns)
        rows = pd.concat(frames, ignore_index=True)
        rows = rows[(rows["open_ms"] >= lo_ms) & (rows["open_ms"] < hi_ms)]
        rows["bar_start"] = pd.to_datetime(rows.pop("open_ms"), unit="ms", utc=True)
        rows["bar_end"] = rows["bar_start"] + CANDLE
        rows["knowledge_ts"] = rows["bar_end"] + delay
        for column in PAGE_COLUMNS[1:]:
            rows[column] = rows[column].astype(np.float64)
        return rows[columns].reset_index(drop=True)

    def funding(self, delay: pd.Timedelta) -> pd.DataFrame:
        """The settled funding rates of the window (and ``LOOK_BEHIND`` before it) up to its effective
        end (after ``run``), known at their settlement + ``delay`` (they are history); each asset's are
        fetched once and kept in the work folder (a resumed download does not ask again)."""
        folder = self.work_dir / FUNDING_DIR
        folder.mkdir(exist_ok=True)
        # a settlement is stamped a few ms after its minute: the one at the window's end is the minute's
        lo_ms, hi_ms = _ms(self.start - LOOK_BEHIND), _ms(self.until) + MINUTE_MS - 1
        frames = []
        for asset in self.assets:
            path = folder / f"{asset}.parquet"
            if not path.exists():
                rows = page_funding(
                    lambda since, limit, a=asset: self._call(
                        lambda c: c.fetch_funding_rate_history(symbol_of(a), since, limit, {"until": hi_ms}),
                        f"the funding rates of {a}",
                    ),
                    lo_ms,
                    hi_ms,
                )
                frame = funding_frame(asset, rows, delay)
                write_atomically(path, lambda tmp, f=frame: f.to_parquet(tmp, index=False))
            frames.append(pd.read_parquet(path, columns=FUNDING_COLUMNS))
        frames = [frame for frame in frames if len(frame)]
        if not frames:
            return empty_funding()
        return normalize_funding(pd.concat(frames, ignore_index=True), f"funding rates from {self.source}")

    def discard(self) -> None:
        """Remove the work folder (once the snapshot is written)."""
        shutil.rmtree(self.work_dir, ignore_errors=True)

    # -- the work folder ---------------------------------------------------------------------------

    def _open_work_dir(self) -> None:
        """Resume the pages of the same download (same exchange and start); start afresh otherwise."""
        manifest = {"source": self.source, "start": self.start.isoformat()}
        path = self.work_dir / MANIFEST
        if path.exists():
            try:
                earlier = json.loads(path.read_text())
            except ValueError:
                earlier = None
            if earlier == manifest:
                return
            self.note(f"{self.work_dir} holds another download ({earlier}): starting afresh")
            shutil.rmtree(self.work_dir)
        elif self.work_dir.exists():
            raise MarketDataError(f"{self.work_dir} exists and is not a download's work folder: move it away")
        self.work_dir.mkdir(parents=True)
        write_atomically(path, lambda tmp: tmp.write_text(json.dumps(manifest)))

    def _page_files(self, asset: str) -> list[Path]:
        """The page files of ``asset``, oldest first (a page is named after its first open, in ms)."""
        folder = self.work_dir / asset
        return sorted(folder.glob("*.parquet"), key=lambda path: int(path.stem)) if folder.exists() else []

    def _on_disk(self, asset: str, start_ms: int, until_ms: int) -> tuple[int, int | None]:
        """How many of the window's candles of ``asset`` earlier runs fetched, and the last one's open."""
        files = self._page_files(asset)
        if not files:
            return 0, None
        opens = pd.concat([pd.read_parquet(path, columns=["open_ms"]) for path in files])["open_ms"]
        return int(((opens >= start_ms) & (opens < until_ms)).sum()), int(opens.max())

    def _write_page(self, asset: str, page: pd.DataFrame) -> None:
        folder = self.work_dir / asset
        folder.mkdir(exist_ok=True)
        path = folder / f"{int(page['open_ms'].iloc[0])}.parquet"
        write_atomically(path, lambda tmp: page.to_parquet(tmp, index=False))

    # -- requests ----------------------------------------------------------------------------------

    def _pace(self) -> None:
        """Past the weight budget of this minute (another process may share the address), wait for the
        next minute rather than be answered 429 (and, going on, banned)."""
        used = _used_weight(self.client)
        if used is not None and used >= self.weight_budget:
            self.pauses += 1
            self.sleep(60.5 - time.time() % 60)

    def _call(self, action: Callable[[ccxt.binanceusdm], object], what: str, attempts: int = MAX_ATTEMPTS):
        """A request, retried on transient errors; a ban or too many attempts interrupt the download
        (what it fetched stays for the next run), a permanent error (a bad symbol...) fails it."""
        import ccxt  # here, not at import: its error classes

        for attempt in range(attempts):
            self.requests += 1
            try:
                result = action(self.client)
                self._pace()
                return result
            except ccxt.OperationFailed as error:
                if banned(error):
                    seconds = (self.client.last_response_headers or {}).get("Retry-After", "?")
                    raise DownloadInterrupted(
                        f"{what}: the exchange banned this address for {seconds} s (HTTP 418, too many requests)"
                    ) from None
                if attempt == attempts - 1:
                    tries = f" after {attempts} attempts" if attempts > 1 else ""
                    raise DownloadInterrupted(
                        f"{what}: the exchange at {self.source} does not answer{tries} ({_message(error)})"
                    ) from None
                self.retries += 1
                self.sleep(retry_delay(self.client, error, attempt, BACKOFF_SECONDS))
            except ccxt.BaseError as error:
                raise MarketDataError(f"{what}: {type(error).__name__}: {_message(error)}") from None
        raise AssertionError("unreachable")


def _used_weight(client: ccxt.binanceusdm) -> int | None:
    """The request weight this address used in the current minute, as the exchange's last answer says."""
    used = (client.last_response_headers or {}).get("X-MBX-USED-WEIGHT-1M")
    return int(used) if used and str(used).isdigit() else None


def _ms(ts: pd.Timestamp) -> int:
    return int(ts.value // 1_000_000)


def _message(error: Exception) -> str:
    return " ".join(str(error).split())[:300]
