"""Alerts that reach a person: one short message per event, through apprise (Slack, Telegram, Discord,
e-mail, webhooks), to the URLs an environment variable holds (``alerts.urls_env``; never the config
file: they carry tokens).

Every alert is logged; it is sent when URLs are set and its cause has not been sent within
``alerts.repeat_after_minutes`` (the observer runs every 5 minutes and a session every bar: one
divergence or one dead exchange must not page someone 288 times a day). The rate limit is shared by
every process writing under one log root (CLI sessions, Dagster runs, sensors) through a small SQLite
file there, claimed atomically, so two processes never both send the same cause.

Messages are scrubbed of secrets before they leave: the values of environment variables whose names
say they hold one (``*KEY*``, ``*SECRET*``, ``*TOKEN*``, ``*PASSWORD*``, the alert URLs), and the
password of any URL.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from prod_system.config import AlertsConfig

logger = logging.getLogger(__name__)

STATE_FILE = ".alerts.sqlite"  # under the log root: the rate limit shared by its processes
SECRET_NAMES = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|ALERT_URL", re.IGNORECASE)
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


def redact(text: str, environ: dict[str, str] | None = None) -> str:
    """``text`` without the secrets of the environment (values of variables named like secrets, at
    least 6 characters) and without URL passwords."""
    environ = os.environ if environ is None else environ
    for name, value in environ.items():
        if len(value) >= 6 and SECRET_NAMES.search(name):
            for part in {value, *re.split(r"[\s,]+", value)}:
                if len(part) >= 6:
                    text = text.replace(part, "***")
    return URL_PASSWORD.sub(r"\g<head>***@", text)


def alert_urls(config: AlertsConfig, environ: dict[str, str] | None = None) -> list[str]:
    """The apprise URLs in the configured environment variable (spaces or commas between them)."""
    environ = os.environ if environ is None else environ
    return [url for url in re.split(r"[\s,]+", environ.get(config.urls_env, "")) if url]


class Notifier:
    """Sends alerts to the configured URLs, at most once per cause per repeat window."""

    def __init__(self, config: AlertsConfig, state_dir: str | Path | None):
        self.config = config
        self.state = Path(state_dir) / STATE_FILE if state_dir is not None else None
        self.sent: list[Alert] = []  # what this notifier sent (tests, summaries)

    def send(self, alert: Alert) -> bool:
        """Log the alert and send it unless rate-limited or no URL is set; True when a message went out.
        A failure to deliver is logged, never raised: an alert must not stop trading."""
        title, body = redact(alert.title), redact(alert.message)[:MAX_BODY]
        logger.warning("ALERT %s: %s", title, body)
        urls = alert_urls(self.config)
        if not urls or not self._claim(alert.key):
            return False
        try:
            import apprise  # ~0.2 s: loaded by the first alert, not by every process that may send one

            notifier = apprise.Apprise()
            for url in urls:
                notifier.add(url)
            delivered = bool(notifier.notify(title=title, body=body))
        except Exception as error:  # a broken alert channel must not fail the bar
            logger.error("alert not delivered (%s): %s", type(error).__name__, redact(str(error)))
            return False
        if not delivered:
            logger.error("alert not delivered to every URL of %s: %s", self.config.urls_env, title)
        self.sent.append(alert)
        return delivered

    def _claim(self, key: str) -> bool:
        """Take the right to send ``key`` now: False when it was sent within the repeat window (by any
        process sharing the state file). One statement: two processes cannot both claim it."""
        if self.state is None:
            return True
        now = time.time()
        window = self.config.repeat_after_minutes * 60
        try:
            self.state.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.state, timeout=10)
            try:
                with db:  # one transaction
                    db.execute("CREATE TABLE IF NOT EXISTS sent (cause TEXT PRIMARY KEY, sent_at REAL NOT NULL)")
                    claimed = db.execute(
                        "INSERT INTO sent (cause, sent_at) VALUES (?, ?) ON CONFLICT (cause) DO UPDATE "
                        "SET sent_at = excluded.sent_at WHERE sent.sent_at <= ?",
                        (key, now, now - window),
                    ).rowcount
            finally:
                db.close()
            return claimed == 1
        except sqlite3.Error as error:  # a broken state file: send (a repeat beats a missed alert)
            logger.error("alert rate limit unavailable (%s): sending", error)
            return True
