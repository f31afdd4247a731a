"""A real endpoint for alerts: a tiny threaded HTTP server on loopback that keeps every JSON body posted
to it (apprise's ``json://`` posts {"title", "message", "type", ...}), with the request's headers, and
the apprise URL that reaches it (with a user and token of its own, to check they never leak)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

URLS_ENV = "PROD_SYSTEM_ALERT_URLS"  # AlertsConfig's default


class AlertEndpoint:
    """``with AlertEndpoint() as endpoint``: ``endpoint.url(token)`` for the environment variable,
    ``endpoint.messages`` the JSON bodies received (each with ``_headers``, ``_received_at``)."""

    def __init__(self):
        self.messages: list[dict] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                message = json.loads(body or b"{}")
                message["_headers"] = dict(self.headers)
                message["_path"] = self.path
                message["_received_at"] = time.time()
                with outer._lock:
                    outer.messages.append(message)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="alert-endpoint")

    def url(self, token: str = "") -> str:
        """The apprise URL posting JSON here (``token``: the URL's own password, sent as basic auth)."""
        auth = f"ops:{token}@" if token else ""  # (every part of the URL but its host is scrubbed from
        return f"json://{auth}127.0.0.1:{self.port}/hook"  # messages: no common word in it)

    def titles(self) -> list[str]:
        with self._lock:
            return [m["title"] for m in self.messages]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict]:
        """The messages once ``count`` have come (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    break
            time.sleep(0.01)
        with self._lock:
            return list(self.messages)

    def __enter__(self) -> AlertEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
