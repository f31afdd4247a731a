"""Tests never reach a real host (an exchange, S3, anything): every connection stays on loopback.

Two tripwires, both recording what they caught so that the test that caused it fails even when the
code under test swallows the error (ccxt retries, a broker that records a failed bar):

- in the test process, an audit hook refuses to resolve or connect to any host that is not
  loopback (Python's ``socket.getaddrinfo`` / ``socket.connect`` audit events);
- in subprocesses (the CLI, ``dagster dev``, the daemon), ``HTTP(S)_PROXY`` points at a local proxy
  that answers 403 to every request and records its target; ``NO_PROXY`` lets loopback through.
"""

from __future__ import annotations

import ipaddress
import socket
import socketserver
import sys
import threading

LOCAL_NAMES = {"localhost", "localhost.localdomain", ""}


class RealHostContacted(ConnectionRefusedError):
    """A test tried to reach a host that is not this machine's loopback."""


def is_loopback(host: object) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    name = str(host).strip("[]").lower()
    if name in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.split("%")[0]).is_loopback
    except ValueError:
        return False


class Tripwire:
    """What the two tripwires caught, and the proxy subprocesses are pointed at."""

    def __init__(self, allowed_hosts: set[str] | None = None) -> None:
        self.allowed = {h.lower() for h in (allowed_hosts or set())}
        self.caught: list[str] = []
        self._lock = threading.Lock()
        self._proxy: socketserver.ThreadingTCPServer | None = None

    def record(self, what: str) -> None:
        with self._lock:
            self.caught.append(what)

    def take(self) -> list[str]:
        with self._lock:
            caught, self.caught = self.caught, []
        return caught

    def _allowed(self, host: object) -> bool:
        return is_loopback(host) or str(host).lower() in self.allowed

    def _audit(self, event: str, args: tuple) -> None:
        if event == "socket.getaddrinfo":
            host = args[0]
        elif event == "socket.connect":
            sock, address = args
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                return  # unix sockets and the like
            host = address[0]
        else:
            return
        if not self._allowed(host):
            what = f"{event} {host!r}"
            self.record(what)
            raise RealHostContacted(f"tests must not reach real hosts: {what}")

    def arm(self) -> None:
        """Make this tripwire the one the process's audit hook reports to (until ``stop``)."""
        global _armed, _hooked
        if not _hooked:  # audit hooks cannot be removed: one for the process
            sys.addaudithook(_audit)
            _hooked = True
        _armed = self

    def start_proxy(self) -> str:
        """A proxy on loopback that refuses and records every request: ``http://127.0.0.1:PORT``."""
        tripwire = self

        class Refuse(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                method, target, *_ = [*self.rfile.readline(8192).decode("latin-1").split(), "?", "?"]
                tripwire.record(f"proxy {method} {target}")
                self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

        self._proxy = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Refuse)
        self._proxy.daemon_threads = True
        threading.Thread(target=self._proxy.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._proxy.server_address[1]}"

    def stop(self) -> None:
        global _armed
        if _armed is self:
            _armed = None
        if self._proxy is not None:
            self._proxy.shutdown()
            self._proxy.server_close()


_armed: Tripwire | None = None
_hooked = False


def _audit(event: str, args: tuple) -> None:
    if _armed is not None:
        _armed._audit(event, args)
