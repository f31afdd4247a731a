"""The exchange's statement in a prod session: the session records the local exchange's income
history and balances every bar, and the portfolio's realized PnL, fees and funding agree with them to
the cent across a funding settlement; an exchange charging another fee than the config's fails loudly."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from prod_system.analysis.statement import check_log_dir
from prod_system.exchange import EngineConfig
from prod_system.log_dir import LogDir
from prod_system.runs.exchange_statement import StatementRecorder
from prod_system.runs.live import LiveSession
from prod_system.trading.brokers.exchange import ExchangeBroker
from prod_system_tests.kit.cli import cli
from prod_system_tests.kit.live import KEY_ENV, SECRET_ENV, Market, live_config

SETTLEMENT = pd.Timestamp("2023-07-21T08:00:00Z")  # the assumed funding's 08:00 UTC settlement
SPEED = 30.0  # two real seconds a bar: a loaded machine's bar still ends before the next one closes
OPENS = SETTLEMENT - pd.Timedelta(minutes=6)  # minutes of slack for the market's start-up (seconds here)
START = SETTLEMENT - pd.Timedelta(minutes=3)  # bars 07:58 to 08:01: positions are held at 08:00
BARS = 4


def prod_session(candles, tmp_path, monkeypatch, engine: EngineConfig | None = None) -> tuple[LiveSession, Market]:
    market = Market(candles, f"sqlite:///{tmp_path / 'market.db'}", SPEED, opens=OPENS, engine=engine)
    monkeypatch.setenv(KEY_ENV, market.exchange.api_key)
    monkeypatch.setenv(SECRET_ENV, market.exchange.api_secret)
    try:
        assert market.clock.now() < START, "the market took too long to start"
        market.clock.wait_until(START)
        session = LiveSession(live_config(market, tmp_path, "prod", bars=BARS), market.clock)
        outcomes = session.run()
    except BaseException:
        market.close()
        raise
    assert [o.status for o in outcomes] == ["traded"] * BARS, [(o.status, o.reason) for o in outcomes]
    return session, market


def test_an_honest_prod_session_agrees_with_the_exchange_to_the_cent(candles, tmp_path, monkeypatch):
    session, market = prod_session(candles, tmp_path, monkeypatch)
    try:
        config = session.config
        assert config.start < SETTLEMENT < config.end
        logs = LogDir(session.log_dir.path)
        income = logs.read_table("broker/income")
        account = logs.read_table("broker/account")
        check = check_log_dir(logs.path, config.costs.fees.taker, config.bar_delta)
        # pulled again, as a restarted session does: no row recorded twice
        broker = ExchangeBroker(config.broker, config.risk, config.universe, market.clock, config.bar_delta)
        try:
            again = StatementRecorder(logs, config, session.statement.logger)
            again.pull(broker, session.bars[-1])
        finally:
            broker.close()
        repulled = logs.read_table("broker/income")
    finally:
        market.close()
    assert set(account["bar_end"]) == {config.start, *session.bars}
    assert {"REALIZED_PNL", "COMMISSION", "FUNDING_FEE"} <= set(income["income_type"])
    assert (income[income["income_type"] == "FUNDING_FEE"]["income_at"] == SETTLEMENT).all()
    assert check.available and check.divergence is None, (check.verdict(), check.notes)
    totals = check.to_dict()["totals"]
    assert totals["funding"]["exchange"] != 0 and totals["fees"]["exchange"] > 0
    for component in ("realized_pnl", "fees", "funding", "wallet"):
        assert abs(totals[component]["portfolio"] - totals[component]["exchange"]) <= 0.01, (component, totals)
    assert len(repulled) == len(income) and not repulled.duplicated(["income_type", "tran_id"]).any()


def test_an_exchange_charging_another_fee_fails_loudly(candles, tmp_path, monkeypatch):
    """The exchange charges 0.07% per fill, the config expects Binance's 0.05%: the fees the portfolio
    booked follow the exchange (its trade list), but the statement says the fee is not the config's."""
    session, market = prod_session(candles, tmp_path, monkeypatch, EngineConfig(taker_fee=Decimal("0.0007")))
    market.close()
    config = session.config
    check = check_log_dir(session.log_dir.path, config.costs.fees.taker, config.bar_delta)
    assert check.divergence is not None and check.divergence["component"] == "fees", check.verdict()
    assert "DIVERGE" in check.verdict() and "fee model" in check.verdict()
    assert check.divergence["exchange"] == pytest.approx(check.divergence["portfolio"] * 7 / 5, rel=1e-6)
    # the reconciliation says so: its line, summary.json and report, and exit code 3
    done = cli("reconcile", "--model", "C1b", "--root", str(tmp_path), "--market-data", market.database_url)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "portfolio vs exchange: PORTFOLIO AND EXCHANGE DIVERGE" in done.stdout, done.stdout
    (report,) = [line.split("report:", 1)[1].strip() for line in done.stdout.splitlines() if "report:" in line]
    summary = json.loads((Path(report).parent / "summary.json").read_text())["exchange_statement"]
    assert summary["first_divergence"]["component"] == "fees" and not summary["agrees"]
    assert "Portfolio vs exchange" in Path(report).read_text()
    # and in Dagster: the prod reconciliation asset's matches_exchange check fails (matches_research need not)
    from dagster import materialize

    from prod_system.defs.reconciliation import reconciliation_definitions, reconciliation_key
    from prod_system.defs.resources import LogDirResource

    defs = reconciliation_definitions(["C1b"])
    key = reconciliation_key("C1b", "prod")
    result = materialize(
        [
            *(asset for asset in defs.assets if asset.key == key),
            *(check for check in defs.asset_checks if {k.asset_key for k in check.check_keys} == {key}),
        ],
        selection=[key],
        resources={"log_dir": LogDirResource(root=str(tmp_path))},
        raise_on_error=False,
    )
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["matches_exchange"].passed and "fee model" in checks["matches_exchange"].description
    (event,) = result.get_asset_materialization_events()
    assert "DIVERGE" in event.materialization.metadata["exchange_statement"].value
