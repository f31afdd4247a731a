"""The live side in Dagster, on the real clock, with PostgreSQL: ingestion with its asset checks, the
bar sensors of paper_trading and prod, and their runs, bar after bar, against the local exchange
replaying real candles shifted to now (1-minute bars) — the daemon's loop, in process, with the
minute's ingestion in a thread (the schedule's runs are separate processes under the daemon).

The sensors pre-launch (30 s): a bar's run is requested before its close and waits for the close
and the candles. Paper's run is launched first each time, so paper shows the pre-launch and prod the
catch-up of a closed bar (its run is requested after paper's has traded)."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    FloatMetadataValue,
    MetadataValue,
    build_sensor_context,
    job,
    materialize,
    op,
)

from prod_system.common.clock import RealClock, SimulatedClock
from prod_system.data.market_db import MarketDatabase
from prod_system.definitions import build_definitions
from prod_system.defs.live import BarReporter, SessionBarReporter, bar_metadata, bar_partitions, build_live_assets
from prod_system.defs.metadata import usd
from prod_system.defs.resources import LogDirResource, SystemResource
from prod_system.defs.resources.live import LiveResource
from prod_system.exchange import LocalExchange
from prod_system.log_dir import LogDir
from prod_system.runs.ingestion import Ingestor
from prod_system.runs.live import BarOutcome, bar_key, parse_bar_key
from prod_system_tests.kit.data import UNIVERSE
from prod_system_tests.kit.live import T
from prod_system_tests.kit.live_dagster import run_session_job

BARS = 3
MODES = ("paper_trading", "prod")


@pytest.mark.wall_clock
def test_sensors_drive_paper_and_prod_bar_by_bar(candles, postgres_url, tmp_path, monkeypatch):
    # the first bar comes from the seeded history: start early enough in the minute for its data timeout
    while pd.Timestamp.now(tz="UTC").second > 40:
        time.sleep(0.5)
    with LocalExchange(candles[candles["bar_start"] >= T], clock="shifted") as exchange:
        monkeypatch.setenv("BINANCE_API_KEY", exchange.api_key)
        monkeypatch.setenv("BINANCE_API_SECRET", exchange.api_secret)
        db = MarketDatabase(postgres_url)
        exchange.seed_history(db, candles)
        resources = {
            "live": LiveResource(database=postgres_url, exchange_url=exchange.url, bar="1m", data_timeout_seconds=50),
            "system": SystemResource(profile_memory=False),
            "log_dir": LogDirResource(root=str(tmp_path / "runs")),
        }
        defs = build_definitions(["C1b"], resources=resources, investor_model="C1b")
        instance = DagsterInstance.ephemeral()
        ingestion = defs.resolve_job_def("market_data_ingestion_job")
        sensors = {mode: defs.resolve_sensor_def(f"C1b_{mode}_bar_sensor") for mode in MODES}
        cursors: dict[str, str | None] = dict.fromkeys(MODES)
        runs: dict[str, list] = {mode: [] for mode in MODES}
        checks = []
        writing, stop = threading.Lock(), threading.Event()

        # the ingestion schedule's work while a pre-launched run waits; one writer at a time (the store reads
        # then inserts: two writers racing on a new candle would collide on its key)
        def ingest_every_second():
            ingestor = Ingestor(MarketDatabase(postgres_url), UNIVERSE, RealClock(), exchange.url)
            try:
                while not stop.is_set():
                    with writing:
                        ingestor.ingest_once()
                    stop.wait(1)
            finally:
                ingestor.close()

        ingesting = threading.Thread(target=ingest_every_second, daemon=True)
        ingesting.start()
        deadline = time.monotonic() + (BARS + 2) * 60
        started = pd.Timestamp.now(tz="UTC")
        try:
            # the daemon's loop: the ingestion schedule (its checks), each sensor every few seconds
            while min(len(r) for r in runs.values()) < BARS and time.monotonic() < deadline:
                with writing:
                    result = ingestion.execute_in_process(instance=instance)
                checks.extend(result.get_asset_check_evaluations())
                for mode in MODES:
                    with build_sensor_context(instance=instance, resources=resources, cursor=cursors[mode]) as context:
                        tick = sensors[mode](context)
                    if not getattr(tick, "run_requests", None):
                        continue
                    requested = pd.Timestamp.now(tz="UTC")
                    (request,) = tick.run_requests
                    cursors[mode] = tick.cursor
                    instance.add_dynamic_partitions(bar_partitions("C1b", mode).name, [request.partition_key])
                    run = materialize(
                        [build_live_assets("C1b", mode)],
                        partition_key=request.partition_key,
                        instance=instance,
                        resources=resources,
                        tags=request.tags,
                    )
                    assert run.success
                    (event,) = run.get_asset_materialization_events()
                    runs[mode].append((parse_bar_key(request.partition_key), requested, event.materialization.metadata))
                time.sleep(2)
        finally:
            stop.set()
            ingesting.join(timeout=30)

    assert checks and all(c.passed for c in checks if c.check_name != "no_missing_bars")
    for mode in MODES:
        bars = [bar for bar, _, _ in runs[mode]]
        assert len(bars) >= BARS and bars == sorted(set(bars))  # once each, in order
        assert all(metadata["status"].value == "traded" for _, _, metadata in runs[mode])
        # within 30 s of the moment the system could see the bar close: its close, or the start of the
        # loop for the bar that had already closed when the test began
        for bar, _, metadata in runs[mode]:
            seen = max(bar, started)
            assert metadata["orders_submitted_seconds_after_close"].value < (seen - bar).total_seconds() + 30
    # paper's runs after the first were requested before their bar closed, waited for the close and
    # the candles, and traded it on complete data
    prelaunched = [(bar, meta) for bar, requested, meta in runs["paper_trading"] if requested < bar]
    assert len(prelaunched) >= BARS - 1
    assert all(meta["data_complete_seconds_after_close"].value >= 0 for _, meta in prelaunched)
    # one day's scheduled session per mode, with the bars the sensor drove
    logs = {}
    for mode in MODES:
        (log_dir,) = list((tmp_path / "runs" / "C1b" / mode / "scheduled").glob("*/system_log_dir"))
        logs[mode] = LogDir(log_dir)
        traded = list(logs[mode].read_table("portfolio/statistics")["bar_end"])
        assert traded == [bar for bar, _, _ in runs[mode]]
        assert (log_dir / "log.txt").exists() and (log_dir / "state.json").exists()
        assert (log_dir / "exchange_audit.jsonl").exists() == (mode == "prod")  # every prod request audited
    for mode in MODES:  # each bar's materialization has its figures: the asset's Plots chart them
        assert_figures_are_the_tables({bar: metadata for bar, _, metadata in runs[mode]}, logs[mode])
    latency = logs["paper_trading"].read_table("latency").set_index("bar_end")
    assert all(latency.loc[bar, "missing_assets"] == "" for bar, _ in prelaunched)  # every candle was in
    paper = logs["paper_trading"].read_table("target_positions")
    prod = logs["prod"].read_table("target_positions")
    common = set(paper["bar_end"]) & set(prod["bar_end"])
    assert len(common) >= BARS - 1
    pd.testing.assert_frame_equal(
        paper[paper["bar_end"].isin(common)].reset_index(drop=True),
        prod[prod["bar_end"].isin(common)].reset_index(drop=True),
    )
    assert db.missing(UNIVERSE, max(common)) == []
    db.close()


def test_the_ingestion_job_backfills_the_longest_warm_up_of_the_live_models(candles, tmp_path):
    """A first ingestion run on an empty database, against an exchange with a day of closed history,
    reaches back the live models' longest warm-up on the live bar (C3a on 1-minute bars: 204 minutes,
    more than the 2 hours a pass takes when no model says): a bar run's first bar decides on a full window."""
    database = f"sqlite:///{tmp_path / 'market.db'}"
    day = pd.Timedelta(days=1)
    with LocalExchange(candles[candles["bar_start"] >= T - day], clock="shifted", history=day) as exchange:
        resources = {
            "live": LiveResource(database=database, exchange_url=exchange.url, bar="1m"),
            "system": SystemResource(profile_memory=False),
            "log_dir": LogDirResource(root=str(tmp_path / "runs")),
        }
        defs = build_definitions(["C1b", "C3a"], resources=resources, investor_model="C1b")
        ingestion = defs.resolve_job_def("market_data_ingestion_job")
        result = ingestion.execute_in_process(instance=DagsterInstance.ephemeral())
        now = pd.Timestamp(exchange.engine.now_ms(), unit="ms", tz="UTC")
    assert result.success
    stored = MarketDatabase(database).snapshot(UNIVERSE, now - 2 * day, now)
    reach = now.floor("1min") - stored.groupby("asset")["bar_start"].min()
    assert len(reach) == len(UNIVERSE) and (reach >= pd.Timedelta(minutes=204)).all(), reach


def assert_figures_are_the_tables(reported: dict[pd.Timestamp, dict], log_dir: LogDir) -> None:
    """Each bar's figures in its materialization are typed and are the log dir's: bar PnL the statistics
    row's pnl, session PnL their sum since the session's first bar (fees and funding likewise), net
    wealth, GMV, leverage, the positions and the largest one from the bar's holdings; a skipped bar has
    the session's figures so far and says so."""
    stats = log_dir.read_table("portfolio/statistics").set_index("bar_end")
    holdings = log_dir.read_table("portfolio/holdings_notional")
    for bar_end, metadata in reported.items():
        so_far = stats[stats.index <= bar_end]
        assert metadata["session_pnl"] == MetadataValue.float(usd(so_far["pnl"].sum())), bar_end
        assert metadata["session_fees"] == MetadataValue.float(usd(so_far["fees"].sum()))
        assert metadata["session_funding"] == MetadataValue.float(usd(so_far["funding"].sum()))
        assert metadata["traded_bars"] == MetadataValue.int(len(so_far))
        if bar_end not in stats.index:
            assert metadata["status"].value == "skipped" and "bar_pnl" not in metadata
            assert isinstance(metadata["net_wealth"], FloatMetadataValue)  # the session's start, or its last bar
            continue
        row = stats.loc[bar_end]
        for key, column in (("bar_pnl", "pnl"), ("net_wealth", "net_wealth"), ("gmv", "gmv")):
            assert metadata[key] == MetadataValue.float(usd(row[column])), (bar_end, key)
        assert metadata["bar_fees"] == MetadataValue.float(usd(row["fees"]))
        assert metadata["bar_funding"] == MetadataValue.float(usd(row["funding"]))
        assert metadata["leverage"] == MetadataValue.float(round(row["leverage"], 4))
        held = holdings[(holdings["bar_end"] == bar_end) & (holdings["notional"] != 0)].set_index("asset")["notional"]
        assert metadata["positions"] == MetadataValue.int(len(held))
        largest = held.abs().idxmax() if len(held) else "none"
        assert metadata["largest_position_asset"] == MetadataValue.text(largest)
        assert metadata["largest_position_usdt"] == MetadataValue.float(usd(held.get(largest, 0.0)))


def test_the_session_job_reports_each_bar_with_its_figures(candles, tmp_path, monkeypatch):
    """The daily session job on a market 60 times faster than real time, stopped after a few minutes:
    each bar of the session (the first skipped: the job was not running at its close) is a
    materialization of the bar's partition, with its figures."""
    instance = DagsterInstance.ephemeral()
    result, log_dir = run_session_job(candles, tmp_path, instance, monkeypatch)
    assert result.success
    events = [e.materialization for e in result.get_asset_materialization_events()]
    reported = {parse_bar_key(e.partition): e.metadata for e in events}
    assert len(reported) == len(events)
    assert {e.asset_key for e in events} == {AssetKey(["C1b", "paper_trading", "bar"])}
    statuses = [metadata["status"].value for metadata in reported.values()]
    assert statuses[0] == "skipped" and statuses.count("traded") >= 2, statuses
    partitions = instance.get_dynamic_partitions(bar_partitions("C1b", "paper_trading").name)
    assert set(map(bar_key, reported)) <= set(partitions)
    assert_figures_are_the_tables(reported, log_dir)


def test_the_session_job_s_reports_wait_while_the_session_catches_up(tmp_path):
    """A session job started late goes through the day's closed bars at once (skipping them): their
    reports wait until the session waits for a close, then go out in order, none lost (a backlog of
    reports, ~30 ms each, would otherwise make the first bar it can still trade late)."""
    start = pd.Timestamp("2023-07-21T00:00:00Z")
    clock = SimulatedClock(start + pd.Timedelta(minutes=10, seconds=20))  # bar 00:10 closed 20 s ago
    bars = [start + pd.Timedelta(minutes=i) for i in range(1, 11)]
    waiting = []

    @op
    def catch_up(context):
        report = SessionBarReporter(context, "C1b", "paper_trading", tmp_path, clock, pd.Timedelta(minutes=1))
        for bar_end in bars[:-1]:  # closed, past their deadline: the next bar's close has passed too
            report(BarOutcome(bar_end, "skipped", "the process was not running at the bar's close"))
            waiting.append(len(report.waiting))
        report(BarOutcome(bars[-1], "traded", orders=3))  # the session now waits for 00:11
        waiting.append(len(report.waiting))

    @job
    def catch_up_job():
        catch_up()

    result = catch_up_job.execute_in_process(instance=DagsterInstance.ephemeral())
    assert waiting == [*range(1, 10), 0]
    reported = [e.materialization for e in result.get_asset_materialization_events()]
    assert [parse_bar_key(m.partition) for m in reported] == bars
    assert [m.metadata["status"].value for m in reported] == ["skipped"] * 9 + ["traded"]


def test_a_bar_s_report_that_fails_is_dropped_alone(tmp_path):
    """One bar whose report fails (here its event) is dropped with a warning that names it; the
    backlog's other bars still go out, in order."""
    start = pd.Timestamp("2023-07-21T00:00:00Z")
    clock = SimulatedClock(start + pd.Timedelta(minutes=5, seconds=20))
    bars = [start + pd.Timedelta(minutes=i) for i in range(1, 6)]
    instance, warnings = DagsterInstance.ephemeral(), []

    def emit(event):
        if event.partition == bar_key(bars[1]):
            raise RuntimeError("the event log refused it")
        instance.report_runless_asset_event(event)

    report = BarReporter(
        "C1b", "paper_trading", tmp_path, clock, pd.Timedelta(minutes=1), emit, lambda: instance, warnings.append
    )
    for bar_end in bars[:-1]:  # the backlog of a resumed session
        report(BarOutcome(bar_end, "skipped", "the process was not running at the bar's close"))
    report(BarOutcome(bars[-1], "traded", orders=3))
    records = instance.fetch_materializations(AssetKey(["C1b", "paper_trading", "bar"]), limit=10).records
    reported = sorted(parse_bar_key(r.asset_materialization.partition) for r in records)
    assert reported == [bars[0], *bars[2:]] and report.waiting == []
    assert len(warnings) == 1 and bar_key(bars[1]) in warnings[0] and "refused" in warnings[0], warnings


def test_figures_that_cannot_be_read_never_fail_a_traded_bar(tmp_path):
    """A statistics part pyarrow cannot cast (a list where a number belongs: ArrowNotImplementedError,
    neither OSError nor ValueError): the bar's metadata has its status and says why its figures are
    missing, and no exception fails the bar's run after it traded."""
    bar_end = pd.Timestamp("2023-07-21T00:01:00Z")
    folder = tmp_path / "portfolio" / "statistics"
    folder.mkdir(parents=True)
    table = pa.table({"bar_end": [bar_end], "pnl": [[1.0]], "net_wealth": [1_000.0]})
    pq.write_table(table, folder / "part-20230721_000100.parquet")
    metadata = bar_metadata(BarOutcome(bar_end, "traded", orders=2), tmp_path)
    assert metadata["status"] == "traded" and metadata["orders"] == 2 and "session_pnl" not in metadata
    assert metadata["figures"].value.startswith("unavailable: ArrowNotImplementedError"), metadata["figures"]
