"""The CLI's Dagster instance: a log root made by an earlier version stays usable."""

from __future__ import annotations

import yaml

from prod_system.cli.launch import INSTANCE_SETTINGS, OLD_EVENT_LOG_MODULE, instance_for


def test_an_instance_made_before_the_layers_is_pointed_to_the_event_logs_new_module(tmp_path, monkeypatch):
    """Its dagster.yaml named prod_system.instance.sqlite_event_log, which the reshaping moved to
    prod_system.defs.instance: loading it would fail with 'No module named prod_system.instance'."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    home = tmp_path / "dagster_home"
    home.mkdir()
    old = {
        **INSTANCE_SETTINGS,
        "event_log_storage": {"module": OLD_EVENT_LOG_MODULE, "class": "FastSqliteEventLogStorage"},
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    instance = instance_for(tmp_path)
    assert type(instance.event_log_storage).__name__ == "FastSqliteEventLogStorage"
    assert yaml.safe_load((home / "dagster.yaml").read_text()) == INSTANCE_SETTINGS
    instance.dispose()
