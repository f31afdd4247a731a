"""The notifier's guarantees, against a real HTTP endpoint on loopback: secrets the config names (whatever
their names, digits and all) reach neither a message nor the rate limit's file; an apprise URL's token in
its host position is scrubbed, a real host kept; an alert not delivered holds neither its cause nor the
state recorded before it (the next try sends); `prod-system run` alerts when its start fails."""

from __future__ import annotations

import json
import logging

from click.testing import CliRunner

from prod_system.alerts import STATE_FILE, Alert, AlertKind, Notifier, cause_of, failure_alert, redact, secret_names
from prod_system.cli import main as cli_main
from prod_system.cli.errors import EXIT_UNREACHABLE
from prod_system.config import AlertsConfig, build_config
from prod_system_tests.kit.alerts import URLS_ENV, AlertEndpoint

KEY = "k3y9051-renamed"  # under a variable whose name says nothing (KEY, SECRET...)
HOOKS = "OPS_HOOKS"  # the alert URLs, under a renamed variable


def config_of(root):
    return build_config(
        {
            "model": "C1b",
            "run_mode": "prod",
            "start": "2023-07-21T09:00:00Z",
            "end": "2023-07-21T11:00:00Z",
            "market_data": {"source": f"sqlite:///{root / 'market.db'}"},
            "broker": {"kind": "ccxt", "exchange_url": "http://127.0.0.1:9", "api_key_env": "EXCH_ID"},
            "alerts": {"urls_env": HOOKS},
            "log_root": str(root),
        }
    )


def test_secrets_named_by_the_config_reach_no_message_and_no_state_file(tmp_path, monkeypatch, caplog):
    config = config_of(tmp_path)
    monkeypatch.setenv("EXCH_ID", KEY)
    assert "EXCH_ID" in secret_names(config) and HOOKS in secret_names(config)
    reason = f"order 42 refused: bad key {KEY}"  # an error quoting the key, digits and all
    alerts = [
        Alert(AlertKind.BAR_SKIPPED, "C1b prod", reason, cause_of(AlertKind.BAR_SKIPPED, config, reason)),
        failure_alert("C1b prod", "run failed|C1b", "the session", RuntimeError(reason), also=secret_names(config)),
    ]
    assert all(KEY not in alert.key and "k#y#" not in alert.key for alert in alerts)
    with AlertEndpoint() as endpoint:
        monkeypatch.setenv(HOOKS, endpoint.url("hook-tok3n-1"))
        assert Notifier.for_run(config).send_all(alerts) == 2
        messages = endpoint.wait_for(2)
    bodies = json.dumps([{k: v for k, v in m.items() if not k.startswith("_")} for m in messages])
    assert "bad key ***" in bodies and KEY not in bodies and "hook-tok3n-1" not in bodies
    state = (tmp_path / STATE_FILE).read_bytes()
    assert b"bad key ***" in state and KEY.encode() not in state and b"k#y#" not in state
    # not delivered (nothing listens there): the log line names no secret either
    monkeypatch.setenv(HOOKS, "json://127.0.0.1:9/hook")
    with caplog.at_level(logging.INFO, logger="prod_system.alerts"):
        Notifier.for_run(config).send(Alert(AlertKind.RUN_FAILED, "C1b prod", reason))
    assert "bad key ***" in caplog.text and KEY not in caplog.text


def test_a_token_in_an_alert_urls_host_is_scrubbed_a_real_host_kept():
    urls = "pbul://o.AccessTok3nA1 pover://someuser@apptok3nB2 json://ops:pw7777777@alerts.example.com/hook"
    environ = {"OPS_HOOKS": urls + " json://10.1.2.3:8080/h"}
    text = "o.AccessTok3nA1 apptok3nB2 someuser pw7777777 alerts.example.com 10.1.2.3"
    assert redact(text, environ, also=("OPS_HOOKS",)) == "*** *** *** *** alerts.example.com 10.1.2.3"


def test_an_undelivered_alert_holds_neither_its_cause_nor_the_state_before_it(tmp_path, monkeypatch):
    config = AlertsConfig(repeat_after_minutes=60)
    alert = Alert(AlertKind.KILL_SWITCH, "C1b prod", "kill switch engaged: stop")
    monkeypatch.setenv(URLS_ENV, "json://127.0.0.1:9/hook")  # nothing listens: not delivered
    down = Notifier(config, tmp_path)
    assert down.changed("kill switch state|C1b|prod", "stop")
    assert not down.send(alert)
    with AlertEndpoint() as endpoint:
        monkeypatch.setenv(URLS_ENV, endpoint.url())
        up = Notifier(config, tmp_path)  # the next bar's run: a new process
        assert up.changed("kill switch state|C1b|prod", "stop")  # rolled back: still a change
        assert up.send(alert)  # the cause was released: sent now, not in an hour
        again = Notifier(config, tmp_path)
        assert not again.changed("kill switch state|C1b|prod", "stop") and not again.send(alert)
        assert len(endpoint.wait_for(2, timeout=0.5)) == 1


def test_a_session_whose_start_fails_alerts_run_failed(tmp_path, monkeypatch):
    """`prod-system run` with the exchange unreachable at start (exit 4): one RUN_FAILED message naming
    the session's model and mode, with the error line the command printed."""
    monkeypatch.chdir(tmp_path)
    with AlertEndpoint() as endpoint:
        monkeypatch.setenv(URLS_ENV, endpoint.url())
        args = ["run", "--model", "C1b", "--duration", "2m", "--bar", "1m", "--root", "runs"]
        done = CliRunner().invoke(cli_main, [*args, "--exchange-url", "http://127.0.0.1:9"])
        assert done.exit_code == EXIT_UNREACHABLE, done.output
        (message,) = endpoint.wait_for(1)
    assert message["title"] == "prod_system run failed: C1b paper_trading"
    assert message["message"].startswith("the start of the paper_trading session of C1b failed: ")
    assert "http://127.0.0.1:9" in message["message"]  # the exchange it could not reach
