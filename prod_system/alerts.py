"""Alerts that reach a person: one short message per event, through apprise (Slack, Telegram, Discord,
e-mail, webhooks), to the URLs an environment variable holds (``alerts.urls_env``; never the config
file: they carry tokens).

Every alert is logged; it is sent when URLs are set and its cause has not been sent within
``alerts.repeat_after_minutes`` (the observer runs every 5 minutes and a session every bar: one
divergence or one dead exchange must not page someone 288 times a day). The rate limit is shared by
every process writing under one log root (CLI sessions, Dagster runs, sensors) through a small SQLite
file there, claimed atomically, so two processes never both send the same cause.

Messages are scrubbed of secrets before they leave: the values of environment variables whose names
say they hold one (``*KEY*``, ``*SECRET*``, ``*TOKEN*``, ``*PASSWORD*``), or that the run's config names
(the alert URLs, the broker's API key and secret, whatever their names), and the password of any URL.
A cause key is scrubbed before its numbers are made steady (a secret with digits would no longer match)
and again before the rate limit's file keeps it.

A message that is not delivered does not hold its cause: the claim is released (and a state recorded by
``changed`` just before it is rolled back), so the next try sends.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd

from prod_system.config import AlertsConfig, SystemConfig

logger = logging.getLogger(__name__)

STATE_FILE = ".alerts.sqlite"  # under the log root: the rate limit shared by its processes
SECRET_NAMES = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|ALERT_URL", re.IGNORECASE)
HOST_NAME = re.compile(  # an URL's host kept in a message: a dotted lowercase name, an IP or localhost
    r"localhost|(?:[a-z0-9-]+\.)+[a-z]{2,63}|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]"
)
URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/:@\s]*:)[^@\s/]+@", re.IGNORECASE)
MAX_BODY = 1500  # characters: a chat message, not a log


class AlertKind:
    """The events that alert (the first word of a message's title)."""

    RUN_FAILED = "run failed"
    BAR_SKIPPED = "bar skipped"
    DIVERGENCE = "divergence"
    KILL_SWITCH = "kill switch"
    THRESHOLD = "threshold"
    EXCHANGE_MISMATCH = "exchange mismatch"
    MARGIN = "margin"


@dataclass(frozen=True)
class Alert:
    """One event. ``cause`` keys the rate limit: two alerts of the same cause within the repeat window
    send one message (name the cause by what would be fixed, e.g. the model, mode and reason, not the bar)."""

    kind: str  # an AlertKind
    subject: str  # what it is about: "C1b prod", a Dagster job name...
    message: str  # one or two sentences: what happened, and the reason
    cause: str = ""  # default: kind + subject + message

    @property
    def title(self) -> str:
        return f"prod_system {self.kind}: {self.subject}"

    @property
    def key(self) -> str:
        return self.cause or f"{self.kind}|{self.subject}|{self.message}"


NUMBERS = re.compile(r"\d+")


def steady(text: str) -> str:
    """``text`` with its numbers (times, bars, order ids) replaced: the part of a reason that stays the
    same from one bar to the next, so that a cause key built on it rate-limits a recurring event."""
    return NUMBERS.sub("#", text)


def secret_names(config: SystemConfig) -> tuple[str, ...]:
    """The environment variables a run's config names as holding secrets, whatever their names: the
    alert URLs, the broker's API key and secret."""
    return (config.alerts.urls_env, config.broker.api_key_env, config.broker.api_secret_env)


def cause_of(kind: str, config: SystemConfig, reason: str = "") -> str:
    """The cause key of an event of a run: its kind, model, mode and steady reason (never the bar), the
    reason scrubbed of secrets before its numbers are replaced (after, a secret with digits no longer
    matches)."""
    reason = steady(redact(reason, also=secret_names(config)))
    return "|".join((kind, config.model_name, str(config.run_mode), reason))


def run_subject(config: SystemConfig) -> str:
    """What an alert of a run is about: "C1b paper_trading"."""
    return f"{config.model_name} {config.run_mode}"


def skipped_alert(config: SystemConfig, bars: list[pd.Timestamp], reason: str) -> Alert:
    """Bars of a live session not traded (one alert for a batch of them), keyed by the steady reason."""
    when = f"bar {bars[0].isoformat()}" if len(bars) == 1 else f"{len(bars)} bars {bars[0]} to {bars[-1]}"
    return Alert(
        AlertKind.BAR_SKIPPED,
        run_subject(config),
        f"{when} skipped: {reason}",
        cause_of(AlertKind.BAR_SKIPPED, config, reason),
    )


def kill_switch_alert(config: SystemConfig, state: str, bar_end: pd.Timestamp) -> Alert:
    """The kill switch engaged ('stop' or 'flatten'), seen after ``bar_end``: one per engagement (the
    cause names the bar where it was first seen, so an engagement after a release sends again)."""
    what = "no new orders" if state == "stop" else "every position closed"
    mocked = config.broker.kind == "mocked"
    paper = " (a paper session: its mocked broker trades on as the model says)" if mocked else ""
    where = f" (file {config.risk.kill_switch_file})" if config.risk.kill_switch_file else ""
    return Alert(
        AlertKind.KILL_SWITCH,
        run_subject(config),
        f"kill switch engaged: {state}, {what}, from bar {bar_end.isoformat()}{where}{paper}",
        f"{cause_of(AlertKind.KILL_SWITCH, config, state)}|{bar_end.isoformat()}",
    )


def failure_alert(subject: str, cause: str, what: str, error: BaseException | str, also: tuple[str, ...] = ()) -> Alert:
    """A run or session that failed: ``what`` failed, and the error's first line (keyed by ``cause`` and the
    error's steady first line, scrubbed of secrets first: ``also`` names more secret variables)."""
    first = first_line(error)
    return Alert(
        AlertKind.RUN_FAILED, subject, f"{what} failed: {first}", f"{cause}|{steady(redact(first, also=also))}"
    )


def first_line(error: BaseException | str) -> str:
    """An error's first non-empty line, with its class ("BrokerError: ...") for an exception."""
    text = str(error).strip()
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if isinstance(error, BaseException):
        line = f"{type(error).__name__}: {line}" if line else type(error).__name__
    return line[:300]


def redact(text: str, environ: dict[str, str] | None = None, also: tuple[str, ...] = ()) -> str:
    """``text`` without the secrets of the environment (values of variables named like secrets, or named
    in ``also``, at least 6 characters; of a URL among them, each part but its scheme and host: apprise
    URLs carry their tokens in the path, e.g. slack://TokenA/TokenB/TokenC, and the host too unless it
    is a dotted lowercase name, an IP or localhost: pbul://o.AccessToken, pover://user@apptoken) and
    without URL passwords."""
    environ = os.environ if environ is None else environ
    secrets: set[str] = set()
    for name, value in environ.items():
        if len(value) >= 6 and (SECRET_NAMES.search(name) or name in also):
            secrets.add(value)
            for part in re.split(r"[\s,]+", value):  # each URL of a list on its own (its own host)
                secrets.add(part)
                if "://" in part:
                    rest = part.partition("://")[2]
                    host = _host(part)
                    kept = host if HOST_NAME.fullmatch(host) else None
                    secrets.update(p for p in re.split(r"[/:@?&=#]+", rest) if p != kept)
    for secret in sorted((s for s in secrets if len(s) >= 6), key=len, reverse=True):
        text = text.replace(secret, "***")
    return URL_PASSWORD.sub(r"\g<head>***@", text)


def _host(url: str) -> str:
    """The host of ``url`` as written (``urlsplit``'s hostname is lowercased: a token's case is a clue)."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return ""
    host = netloc.rpartition("@")[2]
    return host[: host.index("]") + 1] if host.startswith("[") and "]" in host else host.partition(":")[0]


def alert_urls(config: AlertsConfig, environ: dict[str, str] | None = None) -> list[str]:
    """The apprise URLs in the configured environment variable (spaces or commas between them)."""
    environ = os.environ if environ is None else environ
    return [url for url in re.split(r"[\s,]+", environ.get(config.urls_env, "")) if url]


class Notifier:
    """Sends alerts to the configured URLs, at most once per cause per repeat window. ``also``: more
    environment variables holding secrets (``secret_names`` of a run's config), scrubbed like the URLs."""

    def __init__(self, config: AlertsConfig, state_dir: str | Path | None, also: tuple[str, ...] = ()):
        self.config = config
        self.state = Path(state_dir) / STATE_FILE if state_dir is not None else None
        self.also = (config.urls_env, *also)
        self.sent: list[Alert] = []  # what this notifier sent (tests, summaries)
        self._states: dict[str, str | None] = {}  # ``changed`` without a state file
        self._change: tuple[str, str | None, str] | None = None  # the last change, until the next send

    @classmethod
    def for_run(cls, config: SystemConfig) -> Notifier:
        """The notifier of a run: its alerts config, the rate limit under its log root, its secret names."""
        return cls(config.alerts, config.log_root, secret_names(config))

    def send_all(self, alerts: Iterable[Alert]) -> int:
        """Send each alert (``send``); how many messages went out."""
        return sum(self.send(alert) for alert in alerts)

    def changed(self, key: str, value: str | None) -> bool:
        """Record ``value`` as the state of ``key`` (None: no row), True when it differs from the state
        recorded before, by any process sharing the state file (a switch seen by the run of each bar
        alerts once, not at every run). Without a state file, the notifier's own memory. A change to a
        value is rolled back when the next ``send`` of this notifier is not delivered: the next look
        sees it changed again and sends."""
        self._change = None
        before = self._swap(key, value)
        if before is _BROKEN:  # a broken state file: say it changed (a repeat beats a missed alert)
            return value is not None
        if before != value and value is not None:
            self._change = (key, before, value)
        return before != value

    def _swap(self, key: str, value: str | None, only_if: str | None = None) -> object:
        """Set the state of ``key`` to ``value`` (when ``only_if`` is given: only while it is ``only_if``);
        the state before, or ``_BROKEN``."""
        if self.state is None:
            before = self._states.get(key)
            if only_if is None or before == only_if:
                self._states[key] = value
            return before
        if value is None and not self.state.exists():  # nothing recorded yet: no file for it
            return None
        try:
            with self._locked() as db:
                row = db.execute("SELECT value FROM states WHERE key = ?", (key,)).fetchone()
                before = row[0] if row else None
                if only_if is not None and before != only_if:
                    pass
                elif value is None:
                    db.execute("DELETE FROM states WHERE key = ?", (key,))
                elif value != before:
                    db.execute("INSERT OR REPLACE INTO states (key, value) VALUES (?, ?)", (key, value))
            return before
        except sqlite3.Error as error:
            logger.error("alert state unavailable (%s)", error)
            return _BROKEN

    def send(self, alert: Alert) -> bool:
        """Log the alert and send it unless rate-limited or no URL is set; True when a message went out.
        A failure to deliver is logged, never raised: an alert must not stop trading; it releases the
        cause's claim (and rolls back the state ``changed`` recorded just before), so the next try sends."""
        change, self._change = self._change, None
        title, body = redact(alert.title, also=self.also), redact(alert.message, also=self.also)[:MAX_BODY]
        # INFO: the event itself is already logged where it happened (a skipped bar, an error line); this
        # records that it alerted, in log.txt, without a second warning on the operator's console
        logger.info("alert %s: %s", title, body)
        urls = alert_urls(self.config)
        key = redact(alert.key, also=self.also)  # the state file holds no secret either
        claim = self._claim(key) if urls else None
        if claim is None:
            return False
        try:
            import apprise  # ~0.2 s: loaded by the first alert, not by every process that may send one

            notifier = apprise.Apprise()
            for url in urls:
                notifier.add(url)
            kind = apprise.NotifyType.FAILURE if alert.kind == AlertKind.RUN_FAILED else apprise.NotifyType.WARNING
            delivered = bool(notifier.notify(title=title, body=body, notify_type=kind))
        except Exception as error:  # a broken alert channel must not fail the bar
            logger.error("alert not delivered (%s): %s", type(error).__name__, redact(str(error), also=self.also))
            delivered = False
        else:
            self.sent.append(alert)
            if not delivered:
                logger.error("alert not delivered to every URL of %s: %s", self.config.urls_env, title)
        if not delivered:
            self._release(key, *claim)
            if change is not None:
                self._swap(change[0], change[1], only_if=change[2])
        return delivered

    def _claim(self, key: str) -> tuple[float, float | None] | None:
        """Take the right to send ``key`` now: None when it was sent within the repeat window (by any
        process sharing the state file), else the claim's time and the time it was sent before (None:
        never), to ``_release`` it. One transaction: two processes cannot both claim it."""
        now = time.time()
        if self.state is None:
            return now, None
        window = self.config.repeat_after_minutes * 60
        try:
            with self._locked() as db:
                row = db.execute("SELECT sent_at FROM sent WHERE cause = ?", (key,)).fetchone()
                claimed = db.execute(
                    "INSERT INTO sent (cause, sent_at) VALUES (?, ?) ON CONFLICT (cause) DO UPDATE "
                    "SET sent_at = excluded.sent_at WHERE sent.sent_at <= ?",
                    (key, now, now - window),
                ).rowcount
            return (now, row[0] if row else None) if claimed == 1 else None
        except sqlite3.Error as error:  # a broken state file: send (a repeat beats a missed alert)
            logger.error("alert rate limit unavailable (%s): sending", error)
            return now, None

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The state file in one transaction, locked from its first statement (BEGIN IMMEDIATE): a read and
        the write it decides are one step for every process sharing the file."""
        self.state.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.state, timeout=10)
        try:
            with db:  # commits at the end, rolls back on an error
                db.execute("BEGIN IMMEDIATE")
                db.execute("CREATE TABLE IF NOT EXISTS sent (cause TEXT PRIMARY KEY, sent_at REAL NOT NULL)")
                db.execute("CREATE TABLE IF NOT EXISTS states (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                yield db
        finally:
            db.close()

    def _release(self, key: str, claimed_at: float, before: float | None) -> None:
        """Give back a claim whose message was not delivered: the cause as it was before (unless another
        process claimed it since)."""
        if self.state is None or not self.state.exists():
            return
        try:
            with self._locked() as db:
                if before is None:
                    db.execute("DELETE FROM sent WHERE cause = ? AND sent_at = ?", (key, claimed_at))
                else:
                    db.execute("UPDATE sent SET sent_at = ? WHERE cause = ? AND sent_at = ?", (before, key, claimed_at))
        except sqlite3.Error as error:
            logger.error("alert rate limit unavailable (%s): the claim stays", error)


_BROKEN = object()  # a state file that could not be read
