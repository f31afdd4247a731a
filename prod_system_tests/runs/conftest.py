"""Fixtures of the live-session tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prod_system_tests.kit.live import KEY_ENV, SECRET_ENV, Market


@pytest.fixture
def market(candles, tmp_path, monkeypatch) -> Iterator[Market]:
    """The replayed market of the live tests (a market database and the local exchange), with the
    exchange's API key and secret in the environment variables the live configs name."""
    running = Market(candles, f"sqlite:///{tmp_path / 'market.db'}")
    monkeypatch.setenv(KEY_ENV, running.exchange.api_key)
    monkeypatch.setenv(SECRET_ENV, running.exchange.api_secret)
    yield running
    running.close()
