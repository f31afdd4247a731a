"""The tripwire that keeps the suite off real hosts does catch them, in process and in subprocesses."""

from __future__ import annotations

import socket
import subprocess
import sys

import ccxt
import pytest

from prod_system_tests.kit.offline import RealHostContacted, is_loopback


def test_loopback_names():
    assert all(map(is_loopback, ["127.0.0.1", "::1", "[::1]", "localhost", b"127.0.0.2", None]))
    assert not any(map(is_loopback, ["fapi.binance.com", "8.8.8.8", "10.0.0.1", "s3.amazonaws.com"]))


def test_a_ccxt_client_left_on_binance_is_caught(tripwire):
    """ccxt's default URLs would go to Binance: the call fails here and the test would be failed."""
    exchange = ccxt.binanceusdm({"timeout": 2000})
    with pytest.raises(ccxt.NetworkError):
        exchange.fetch_time()
    assert any("fapi.binance.com" in caught for caught in tripwire.take())


def test_a_socket_to_a_real_address_is_refused(tripwire):
    with pytest.raises(RealHostContacted), socket.socket() as sock:
        sock.connect(("203.0.113.7", 443))  # TEST-NET-3: never routed
    with pytest.raises(RealHostContacted):
        socket.getaddrinfo("api.binance.com", 443)
    assert tripwire.take() == ["socket.connect '203.0.113.7'", "socket.getaddrinfo 'api.binance.com'"]


def test_a_subprocess_reaching_binance_is_caught(tripwire):
    """Subprocesses (the CLI, Dagster) go through the refusing proxy, which records the target."""
    code = "import requests; requests.get('https://fapi.binance.com/fapi/v1/time', timeout=5)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "ProxyError" in done.stderr
    assert tripwire.take() == ["proxy CONNECT fapi.binance.com:443"]
