"""The observer's alerts from its summary (no network): each threshold alerts below its floor and not at
or above it, each under its own cause; the balance is the portfolio's net wealth on paper and the
exchange's wallet balance, as recorded, through an exchange; a run that reconciles does not alert."""

from __future__ import annotations

import pandas as pd

from prod_system.alerts import AlertKind
from prod_system.analysis.alerting import observer_alerts
from prod_system.analysis.observer_views import ObservedRun, account_now
from prod_system.config import build_config
from prod_system.log_dir import LogDir, columns

BAR = pd.Timestamp("2023-07-21T10:00:00Z")
FLOORS = {"min_balance": 1_000.0, "min_cumulative_pnl": -100.0, "min_pnl_over_gmv": -0.01}


def config_of(root, mode: str = "paper_trading", floors: dict = FLOORS):
    data = {
        "model": "C1b",
        "run_mode": mode,
        "start": "2023-07-21T09:00:00Z",
        "end": "2023-07-21T11:00:00Z",
        "market_data": {"source": f"sqlite:///{root / 'market.db'}"},
        "log_root": str(root),
        "observer": {"notebook": False, **floors},
    }
    if mode == "prod":
        data["broker"] = {"kind": "ccxt", "exchange_url": "http://127.0.0.1:9"}
    return build_config(data)


def record(logs: LogDir, name: str, **values) -> None:
    row = {column: float("nan") for column in columns(name)} | {"bar_end": BAR, **values}
    logs.write_table(name, pd.DataFrame([row]), BAR)


def test_thresholds_alert_below_their_floors_each_under_its_own_cause(tmp_path):
    paper, prod = config_of(tmp_path), config_of(tmp_path, "prod")
    for config in (paper, prod):
        logs = LogDir(config.log_dir())
        record(logs, "portfolio/statistics", net_wealth=900.0)  # below min_balance
        record(logs, "broker/account", wallet_balance=2_000.0, fetched_at=BAR)  # prod: the exchange's, above

    def alerts(config, pnl: float, mean_gmv: float = 10_000.0):
        summary = {"reconciled": True, "cumulative_pnl_prod": pnl, "performance": {"mean_gmv": mean_gmv}}
        return observer_alerts({**summary, "log_dir": str(config.log_dir())}, config)

    below = alerts(paper, -150.0)  # -150 < -100, and -150 / 10,000 = -0.015 < -0.01
    assert [a.kind for a in below] == [AlertKind.THRESHOLD] * 3
    assert [a.message.split(" below ")[1].split()[0] for a in below] == list(FLOORS)
    assert "the portfolio's net wealth, USDT) 900.00 below min_balance 1,000.00" in below[0].message
    assert len({a.key for a in below}) == 3 and all("#" not in a.key for a in below)
    assert alerts(paper, -100.0, mean_gmv=10_000.0 / 0.99)[1:] == []  # at the floors: no alert
    # through an exchange, the balance is its wallet's (2,000: above), not the portfolio's net wealth
    assert [a.message.split(" below ")[1].split()[0] for a in alerts(prod, -150.0)] == list(FLOORS)[1:]
    assert alerts(prod, 0.0, mean_gmv=0.0) == []  # nothing held: no PnL / GMV ratio


def test_a_divergence_alerts_with_the_first_divergence_once_per_run_and_bar(tmp_path):
    config = config_of(tmp_path, floors={})  # no threshold
    first = {"bar_end": "2023-07-21T10:15:00+00:00", "asset": "BTC", "what": "target"}
    summary = {"reconciled": False, "first_divergence": first, "verdict": "NOT reconciled: gap 12.00 USDT"}
    (alert,) = observer_alerts(summary, config)
    assert alert.kind == AlertKind.DIVERGENCE
    assert "first divergence at 2023-07-21T10:15:00+00:00 on BTC (target); NOT reconciled" in alert.message
    later = {**summary, "verdict": "NOT reconciled: gap 15.00 USDT"}  # the run went on: same first divergence
    assert observer_alerts(later, config)[0].key == alert.key
    assert observer_alerts({**summary, "reconciled": True}, config) == []


def test_the_balance_alerted_on_is_the_last_fetch_the_notebook_shows(tmp_path):
    """One home for the balance now (statement.balance_now): two fetches booked at the same bar, the later
    one written first: the alert and the notebook's account section both take the later fetch, and the
    section labels each figure with its source and time (the fetch's, the last bar's)."""
    config = config_of(tmp_path, "prod")
    logs = LogDir(config.log_dir())
    later, earlier = BAR + pd.Timedelta(seconds=40), BAR + pd.Timedelta(seconds=5)
    rows = [
        {c: float("nan") for c in columns("broker/account")} | {"bar_end": BAR, "fetched_at": t, "wallet_balance": w}
        for t, w in ((later, 2_000.0), (earlier, 900.0))
    ]
    logs.write_table("broker/account", pd.DataFrame(rows), BAR)
    record(logs, "portfolio/statistics", net_wealth=950.0, cash=950.0, gmv=0.0, nmv=0.0, leverage=0.0)
    record(logs, "portfolio/holdings_shares", asset="BTC", shares=0.0)
    record(logs, "portfolio/holdings_notional", asset="BTC", notional=0.0)
    summary = {"reconciled": True, "cumulative_pnl_prod": 0.0, "log_dir": str(config.log_dir())}
    assert observer_alerts(summary, config) == []  # 2,000 (the later fetch) is above min_balance
    balances, _ = account_now(ObservedRun(tmp_path, summary, config, logs))
    shown = balances.set_index("figure")
    assert shown.loc["wallet balance (USDT)", "value"] == "2,000.00"
    assert shown.loc["wallet balance (USDT)", "as of"] == f"fetched {later:%Y-%m-%d %H:%M:%S} UTC"
    assert shown.loc["net wealth (USDT)", ["source", "as of"]].tolist() == [
        "portfolio",
        "last bar, ending 2023-07-21 10:00 UTC",
    ]
    assert set(balances["source"]) == {"exchange", "portfolio"}
