"""History downloaded from the exchange (`dump-market-data --source exchange:URL`): paged klines against the
local exchange through the unmodified ccxt client, resumed after a kill without gaps or duplicates, rate
limits honoured, candles still open never written."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from prod_system.errors import DownloadInterrupted
from prod_system.exchange import LocalExchange
from prod_system.runs.download import Download, work_dir_for
from prod_system.trading.brokers.ccxt_client import binanceusdm_client
from prod_system_tests.kit.cli import REPO, cli
from prod_system_tests.kit.data import UNIVERSE
from prod_system_tests.kit.exchange import exchange_funding

START, END = pd.Timestamp("2023-07-21T00:00:00Z"), pd.Timestamp("2023-07-22T00:00:00Z")
NOW = pd.Timestamp("2023-07-21T23:30:30Z")  # the exchange's time: the window's last half hour is not closed yet
KLINES = "GET /fapi/v1/klines"


def window(candles: pd.DataFrame, until: pd.Timestamp) -> pd.DataFrame:
    """The candles the exchange has closed in [START, until), in a comparable order."""
    rows = candles[(candles["bar_start"] >= START) & (candles["bar_start"] < until)]
    return rows.sort_values(["asset", "bar_start"]).reset_index(drop=True)


def test_a_download_killed_midway_resumes_to_exactly_the_window(tmp_path, snapshot, candles):
    """Killed (SIGKILL) after a few pages, the same command run again fetches only what is missing and
    writes exactly the window's closed candles: none twice, none missed, none still open; known at their
    close + the knowledge delay; the work folder is gone once the snapshot is written."""
    out = tmp_path / "history.parquet"
    with LocalExchange(f"parquet:{snapshot}") as exchange:
        exchange.set_time(NOW)
        command = ["dump-market-data", "--source", f"exchange:{exchange.url}", "--universe", ",".join(UNIVERSE)]
        command += ["--start", START.isoformat(), "--end", END.isoformat(), "--knowledge-delay", "30s"]
        command += ["--out", str(out)]
        exchange.set_faults([{"endpoint": KLINES, "kind": "latency", "delay_ms": 150}])
        first = subprocess.Popen(
            [sys.executable, "-m", "prod_system.cli", *command],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while len(list(work_dir_for(out).glob("*/*.parquet"))) < 5:
            assert first.poll() is None and time.monotonic() < deadline, "the download ended before it was killed"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert not out.exists()
        exchange.set_faults([])
        done = cli(*command)
        requests = exchange.request_counts()[KLINES]
    assert done.returncode == 0, done.stderr
    resumed = int(done.stderr.split(" fetched by an earlier run")[0].rsplit("(", 1)[1].replace(",", ""))
    assert resumed >= 5 * 1000 // 2 and "download [" in done.stderr
    assert "warning: the exchange's time comes before --end" in done.stderr
    pages = len(UNIVERSE) * 2  # 1,410 candles an asset: pages of 1,000 and 410
    assert requests <= pages + 1  # a page written is never fetched again (one may have been in flight)
    got = pd.read_parquet(out).sort_values(["asset", "bar_start"]).reset_index(drop=True)
    expected = window(candles, NOW.floor("1min"))
    assert len(got) == len(expected) == len(UNIVERSE) * 1410
    assert not got.duplicated(["asset", "bar_start"]).any()
    columns = ["asset", "bar_start", "bar_end", "open", "high", "low", "close", "volume"]
    pd.testing.assert_frame_equal(got[columns], expected[columns], check_dtype=False)
    assert (got["knowledge_ts"] == got["bar_end"] + pd.Timedelta(seconds=30)).all()
    assert not work_dir_for(out).exists()


def _download(exchange: LocalExchange, out, sleeps: list[float], assets=("BTC", "ETH")) -> Download:
    client = binanceusdm_client(exchange.url)
    return Download(client, exchange.url, list(assets), START, END, work_dir_for(out), sleep=sleeps.append)


def test_rate_limits_are_honoured_and_a_ban_stops_the_download(tmp_path, snapshot, candles):
    """A 429 waits what its Retry-After says, then the download goes on; a 418 (banned) stops it at
    once with how long the ban lasts, without retrying; the next run fetches the whole window."""
    out = tmp_path / "history.parquet"
    with LocalExchange(f"parquet:{snapshot}") as exchange:
        exchange.set_time(END + pd.Timedelta(minutes=5))
        exchange.set_faults([{"endpoint": KLINES, "kind": "rate_limit", "retry_after": 3, "count": 2}])
        sleeps: list[float] = []
        download = _download(exchange, out, sleeps)
        report = download.run()
        assert sleeps == [3.0, 3.0] and report.retries == 2 and report.candles == 2 * 1440
        download.discard()

        exchange.set_faults([{"endpoint": KLINES, "kind": "ban", "retry_after": 120, "count": 1}])
        sleeps.clear()
        before = exchange.request_counts()[KLINES]
        with pytest.raises(DownloadInterrupted, match=r"banned this address for 120 s \(HTTP 418"):
            _download(exchange, out, sleeps).run()
        assert sleeps == [] and exchange.request_counts()[KLINES] == before + 1  # not retried
        again = _download(exchange, out, sleeps)
        report = again.run()
        got = again.candles(START, END, pd.Timedelta(seconds=10))
    assert report.resumed == 0 and report.candles == 2 * 1440
    expected = window(candles[candles["asset"].isin(["BTC", "ETH"])], END)
    assert got.sort_values(["asset", "bar_start"])["close"].tolist() == expected["close"].tolist()


def test_a_spent_weight_budget_waits_for_the_next_minute(tmp_path, snapshot):
    """The exchange's X-MBX-USED-WEIGHT-1M past the budget: the download waits until the next minute
    (here a budget of 10: two 1,000-candle pages of weight 5) instead of running into 429s."""
    with LocalExchange(f"parquet:{snapshot}") as exchange:
        exchange.set_time(END + pd.Timedelta(minutes=5))
        sleeps: list[float] = []
        client = binanceusdm_client(exchange.url)
        download = Download(client, exchange.url, ["BTC"], START, END, work_dir_for(tmp_path / "x.parquet"),
                            sleep=sleeps.append, weight_budget=10)  # fmt: skip
        report = download.run()
    assert report.pauses >= 1 and report.candles == 1440
    assert all(0 < seconds <= 60.5 for seconds in sleeps) and len(sleeps) == report.pauses


def test_an_asset_the_exchange_does_not_list_is_one_error_line(tmp_path, snapshot):
    with LocalExchange(f"parquet:{snapshot}") as exchange:
        exchange.set_time(END)
        done = cli(
            "dump-market-data", "--source", f"exchange:{exchange.url}", "--universe", "BTC,NOPE",
            "--start", START.isoformat(), "--end", END.isoformat(), "--out", str(tmp_path / "x.parquet"),
        )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("error: the exchange lists no USDT-M perpetual for NOPE"), done.stderr
    assert not (tmp_path / "x.parquet.partial").exists()


def test_the_windows_funding_rates_come_with_the_candles(tmp_path, snapshot):
    """The settlements of the window and the day before it, paged (here 3 a page), known the knowledge
    delay after their settlement's minute (they are history), with the exchange's mark prices."""
    from prod_system.runs.ingestion import page_funding

    table = exchange_funding()
    with LocalExchange(f"parquet:{snapshot}", funding=table) as exchange:
        exchange.set_time(END + pd.Timedelta(minutes=5))
        download = _download(exchange, tmp_path / "x.parquet", [])
        download.run()
        got = download.funding(pd.Timedelta(seconds=30))
        client = binanceusdm_client(exchange.url)
        client.load_markets()
        until = END.value // 10**6 + 59_999  # the settlement at END is stamped a few ms after it

        def fetch(since: int, limit: int) -> list[dict]:
            return client.fetch_funding_rate_history("BTC/USDT:USDT", since, limit, {"until": until})

        paged = page_funding(fetch, (START - pd.Timedelta(days=1)).value // 10**6, until, limit=3)
    expected = table
    assert len(got) == 2 * 7
    assert got["rate"].tolist() == expected["rate"].tolist()
    assert got["mark_price"].tolist() == expected["mark_price"].tolist()
    assert (got["funding_time"] == expected["funding_time"].dt.floor("min")).all()
    # known the delay after the settlement's minute (the exchange stamps it a few ms after), like a candle
    assert (got["knowledge_ts"] == expected["funding_time"].dt.floor("min") + pd.Timedelta(seconds=30)).all()
    assert [row["fundingRate"] for row in paged] == expected.loc[expected["asset"] == "BTC", "rate"].tolist()
