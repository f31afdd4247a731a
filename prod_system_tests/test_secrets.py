"""Secrets: the exchange's API key and secret never reach an output. A prod session through the CLI
against the local exchange, its reconciliation report, and one prod bar materialized in Dagster (a
DAGSTER_HOME with the repository's instance settings): every file written, every subprocess's
stdout/stderr, the test process's own output and every Dagster event are searched for the key and
the secret, raw and URL-encoded. Also: the Dagster UI listens on loopback unless told otherwise."""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote, quote_plus

import pandas as pd
import pytest
from dagster import DagsterInstance, materialize

import prod_system.defs.live
from prod_system.defs.live import bar_partitions, build_live_assets
from prod_system.defs.resources import LogDirResource, SystemResource
from prod_system.defs.resources.live import LiveResource
from prod_system.exchange import LocalExchange
from prod_system.runs.live import bar_key
from prod_system_tests.kit import live as live_kit
from prod_system_tests.kit.live import KEY_ENV, SECRET_ENV, Market, live_config

REPO = Path(__file__).resolve().parents[1]
KEY_CORE, SECRET_CORE = uuid.uuid4().hex, uuid.uuid4().hex
API_KEY = f"key-{KEY_CORE}"
API_SECRET = f"{SECRET_CORE}/+= secret"  # characters that URL-encoding changes
BARS = 3


def forbidden() -> list[bytes]:
    """The key and the secret as they could be written: raw, URL-encoded, and their random cores
    (any encoding that keeps the hex digits together)."""
    forms = {KEY_CORE, SECRET_CORE}
    for value in (API_KEY, API_SECRET):
        forms |= {value, quote(value, safe=""), quote_plus(value), value.replace("/", "\\/")}
    return sorted(form.encode() for form in forms)


def leaks(data: bytes) -> list[str]:
    return [form.decode() for form in forbidden() if form in data]


def contents(path: Path) -> bytes:
    """The file's bytes, and a parquet table's values too (its pages may be compressed)."""
    data = path.read_bytes()
    if path.suffix == ".parquet":
        data += pd.read_parquet(path).to_csv().encode()
    return data


@pytest.mark.wall_clock
def test_api_keys_reach_no_output(candles, tmp_path, monkeypatch, capfd, caplog, reliability):
    caplog.set_level(logging.INFO)
    # the exchange knows only our key; the system reads it from the variables its config names
    exchange = functools.partial(LocalExchange, api_key=API_KEY, api_secret=API_SECRET)
    monkeypatch.setattr(live_kit, "LocalExchange", exchange)  # what Market starts
    monkeypatch.setenv(KEY_ENV, API_KEY)
    monkeypatch.setenv(SECRET_ENV, API_SECRET)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    outputs: dict[str, bytes] = {}  # what is not a file: subprocess output, Dagster events, our own output

    def cli(name: str, *args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "prod_system.cli", *args], cwd=tmp_path, capture_output=True, timeout=120
        )
        outputs[f"{name} stdout"], outputs[f"{name} stderr"] = done.stdout, done.stderr
        return done

    # 1. a prod session of 3 one-minute bars through the CLI, on a clock 60 times faster
    market = Market(candles, f"sqlite:///{tmp_path / 'market.db'}")
    assert market.exchange.api_key == API_KEY
    root = tmp_path / "runs"
    config_file = tmp_path / "prod.yaml"
    live = {
        "data_timeout_seconds": live_kit.data_timeout(),
        "poll_seconds": 0.01,
    }  # real-time slack for a busy machine
    config_file.write_text(live_config(market, root, "prod", bars=BARS, live=live).to_yaml())
    try:
        done = cli(
            "run",
            *("run", "--config", str(config_file), "--mode", "prod", "--duration", f"{BARS}m", "--bar", "1m"),
            *("--root", str(root), "--database", market.database_url, "--exchange-url", market.exchange.url),
            *("--speed", str(live_kit.SPEED), "--no-ingest"),
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        (log_dir,) = root.glob("C1b/prod/manual/*/system_log_dir")
        # 2. its reconciliation: the executed observer notebook (.ipynb, HTML: the account as the session
        # recorded it, ...) and summary.json next to the log dir
        # (exit 3, "diverges from research", is a verdict in the report: three bars of fees and delays
        # on the exchange against research's fills may not be within 1 USDT; only the report matters here)
        done = cli("reconcile", "reconcile", "--model", "C1b", "--root", str(root))
        assert done.returncode in (0, 3) and b"report: " in done.stdout, done.stderr.decode()[-2000:]
    finally:
        market.close()

    # 3. one prod bar in Dagster, in process, on its own market (a fresh exchange account) whose clock
    # runs 30 times faster: the asset reads that clock instead of the wall clock
    market = Market(candles, f"sqlite:///{tmp_path / 'dagster_market.db'}", speed=30.0)
    monkeypatch.setattr(prod_system.defs.live, "RealClock", lambda: market.clock)
    resources = {
        "live": LiveResource(
            database=market.database_url,
            exchange_url=market.exchange.url,
            bar="1m",
            data_timeout_seconds=300,  # 10 s of real time to start the run
            api_key_env=KEY_ENV,
            api_secret_env=SECRET_ENV,
        ),
        "system": SystemResource(profile_memory=False),
        "log_dir": LogDirResource(root=str(tmp_path / "dagster_runs")),
    }
    key = bar_key(market.clock.now().floor("1min") + pd.Timedelta(minutes=2))
    try:
        with DagsterInstance.get() as instance:
            instance.add_dynamic_partitions(bar_partitions("C1b", "prod").name, [key])
            run = materialize(
                [build_live_assets("C1b", "prod")], partition_key=key, instance=instance, resources=resources
            )
            assert run.success
            (materialization,) = run.get_asset_materialization_events()
            metadata = materialization.materialization.metadata
            assert metadata["status"].value == "traded" and metadata["orders"].value > 0, metadata
            events = []
            for record in instance.get_runs():
                events.append(str(record))
                events.extend(str(event) for event in instance.all_logs(record.run_id))
    finally:
        market.close()
    outputs["dagster events"] = "\n".join(events).encode()
    assert "orders_submitted_seconds_after_close" in outputs["dagster events"].decode()  # the metadata
    captured = capfd.readouterr()
    outputs["test stdout"], outputs["test stderr"] = captured.out.encode(), captured.err.encode()
    outputs["test log records"] = caplog.text.encode()

    # 4. nothing holds the key or the secret: no file under the test's folder, no output
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    found = {str(path.relative_to(tmp_path)): leaks(contents(path)) for path in files}
    found |= {name: leaks(data) for name, data in outputs.items()}
    assert not {name: forms for name, forms in found.items() if forms}
    # ... and the search did look at what matters
    names = {path.name for path in files}
    notebook = {"pnl_realtime_observer.ipynb", "pnl_realtime_observer.html"}
    assert {*notebook, "summary.json", "system_config.yaml", "log.txt", "exchange_audit.jsonl"} <= names
    assert {"state.json", "event_log.db"} <= names
    assert KEY_ENV in (log_dir / "system_config.yaml").read_text()  # the config names the variable only
    assert b"POST" in (log_dir / "exchange_audit.jsonl").read_bytes()  # orders were signed with the secret

    # 5. the Dagster UI listens on loopback unless told otherwise (`dagster dev` passes no --host to
    # the webserver unless given one: the webserver's default applies)
    webserver = shutil.which("dagster-webserver", path=os.path.dirname(sys.executable)) or "dagster-webserver"
    done = subprocess.run([webserver, "--help"], capture_output=True, text=True, timeout=60, check=True)
    option = re.search(r"--host TEXT(.*?)\n\s+-", done.stdout, re.S)
    assert option is not None, done.stdout
    assert re.findall(r"\[default:\s*([^\]\s]+)\s*\]", option.group(1)) == ["127.0.0.1"]
    reliability(
        "secrets",
        "API key and secret searched in every output",
        injected=len(files) + len(outputs),
        occurrences=sum(len(forms) for forms in found.values()),
        outcome=f"{len(files)} files (config, logs, audit, report, Dagster storage) and {len(outputs)} outputs",
    )
