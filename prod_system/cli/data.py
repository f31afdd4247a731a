"""``prod-system dump-market-data``: raw candles into a replayable snapshot."""

from __future__ import annotations

from pathlib import Path

import click
import pandas as pd

from prod_system.cli.common import check_writable, duration_option, timestamp_option
from prod_system.cli.errors import EXIT_INTERRUPTED, EXIT_UNREACHABLE, fail
from prod_system.cli.progress import Progress
from prod_system.common.files import write_atomically
from prod_system.config import ARCHIVE_SOURCE, DEFAULT_UNIVERSE, is_database
from prod_system.data import BUNDLED_CANDLES
from prod_system.data.funding import LOOK_BEHIND
from prod_system.data.instruments import SNAPSHOT_KEY, known_instruments, missing_rules_message
from prod_system.data.market_data import (
    month_windows,
    replaceable_snapshot,
    same_interval,
    screen_for_snapshot,
    select_window,
    snapshot_funding_path,
    write_snapshot,
    write_snapshot_months,
)
from prod_system.data.sources import load_funding, load_source, reads_by_window
from prod_system.data.universe import file_assets
from prod_system.errors import DownloadInterrupted, InstrumentsError, MarketDataError

EXCHANGE_SOURCE = "exchange"  # 'exchange' (Binance's USDT-M futures) or 'exchange:URL' (a compatible one)
ARCHIVE_HINT = (
    "download the file again from data.binance.vision (with its .CHECKSUM), keep the name Binance gives it "
    "(SYMBOL-INTERVAL-YYYY-MM[-DD].zip), one interval per folder"
)
EXCHANGE_HINT = "--source exchange (Binance) or exchange:URL (e.g. exchange:http://127.0.0.1:8765), and --universe"


def dropped_report_path(out: Path) -> Path:
    """Where --drop-bad lists the candles it left out: beside the snapshot, ``NAME.dropped.csv``."""
    return out.with_suffix(".dropped.csv")


def describe_dropped(dropped: pd.DataFrame, source: str) -> str:
    """One line: how many candles the data guard would drop, by issue and by file (a csv source's
    files) or asset, and the first of them."""
    by_issue = ", ".join(f"{count} {issue}" for issue, count in dropped["issue"].value_counts().sort_index().items())
    named = (lambda asset: f"{asset}_USDT.csv.gz") if source.startswith("csv:") else str
    by_file = ", ".join(
        f"{named(asset)} {count}" for asset, count in dropped["asset"].value_counts().sort_index().items()
    )
    first = dropped.iloc[0]
    return (
        f"{len(dropped)} candles the data guard would drop ({by_issue}; {by_file}) in {source}, "
        f"e.g. {first['asset']} {first['bar_start']:%Y-%m-%d %H:%M}: {first['issue']} ({first['detail']})"
    )


def _instruments_metadata(assets: list[str], source: str, instruments: str | None) -> dict[str, str] | None:
    """The exchange rules the snapshot carries (metadata ``instruments``): of the assets some table has;
    a warning names the others and the command that fetches them."""
    try:
        table, missing = known_instruments(assets, source, instruments)
    except InstrumentsError as error:
        fail(str(error), "--instruments takes a file from `prod-system instruments` or Binance's exchangeInfo JSON")
    if missing:
        click.echo(f"warning: {missing_rules_message(missing)}; the snapshot carries no rules for them", err=True)
    return {SNAPSHOT_KEY: table.to_json()} if table.rules else None


@click.command(
    "dump-market-data",
    short_help="Turn candles (CSV, Binance archive, Parquet, database) into a snapshot.",
)
@click.option(
    "--source",
    default=f"csv:{BUNDLED_CANDLES}",
    show_default="bundled candles",
    help="'csv:DIR' with {ASSET}_USDT.csv.gz files, 'binance-archive:DIR' with Binance's public data "
    "archive's USDT-M kline zips (monthly or daily, as downloaded, nested or flat), 'parquet:FILE' (or "
    "FILE.parquet), the real-time market database (sqlite:///FILE or postgresql://user@host/db), or "
    "'exchange' to download 1-minute klines from Binance USDT-M futures ('exchange:URL': a compatible "
    "exchange, e.g. exchange:http://127.0.0.1:8765 for exchange-sim); an interrupted download resumes.",
)
@click.option(
    "--universe",
    default=",".join(DEFAULT_UNIVERSE),
    show_default=True,
    help="Comma-separated assets (without the USDT quote), or 'all': every asset of the file source.",
)
@click.option("--start", required=True, help="Open of the first candle, UTC, e.g. 2023-07-20T00:00:00Z.")
@click.option("--end", required=True, help="Window end (exclusive), UTC, e.g. 2023-07-22T00:00:00Z.")
@click.option(
    "--knowledge-delay",
    default="10s",
    show_default=True,
    help="Files carry no knowledge time: a candle is known at its close + this delay (30s, 1m...). "
    "The database keeps its own.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(),
    help="Snapshot to write (.parquet): one file, or for a window over several calendar months a folder "
    "of one file per month (month=YYYY-MM/part.parquet); replaced if it exists, its folder created.",
)
@click.option(
    "--instruments",
    type=click.Path(dir_okay=False),
    help="The exchange's rules of the assets (from `prod-system instruments`), saved in the snapshot  "
    "[default: the source snapshot's, else the rules bundled for the shipped assets].",
)
@click.option(
    "--drop-bad",
    is_flag=True,
    help="Write the candles the data guard would keep and list the others in OUT's .dropped.csv "
    "(by default such candles refuse the dump).",
)
def dump_market_data(
    source: str,
    universe: str,
    start: str,
    end: str,
    knowledge_delay: str,
    out: str,
    instruments: str | None,
    drop_bad: bool,
) -> None:
    """Turn raw candles (one interval: 1m, 3m, 5m, 15m, 30m or 1h) into a replayable market-data snapshot.

    The snapshot has one row per candle and asset, with the time the system could first know it
    (knowledge_ts), so a replay never peeks. simulate, historical-pnl and exchange-sim read it.
    A file's candles end at their open plus the interval detected from their opens.

    From the exchange (--source exchange[:URL]) the klines are paged from --start, each page kept in
    OUT.partial/ as it comes: run the same command again after an interruption and it goes on from
    there, without gaps or duplicates. Rate limits are honoured (429 and Retry-After; a 418 ban
    stops it). Candles still open at the exchange's time are never written.

    The window's funding rates go with the candles (OUT.funding.parquet beside a one-file snapshot,
    _funding.parquet inside a partitioned one): the exchange's (fetched through ccxt), the archive's
    fundingRate zips, the database's funding table, a snapshot's, or a CSV folder's funding/ JSON
    files. A source without any gives none: runs then use the config's assumed rate.

    A snapshot is strict: a candle the data guard would drop (non-positive or non-finite prices,
    high < low, open or close outside [low, high], conflicting duplicates) refuses the dump, unless
    --drop-bad: the rest is written and the dropped candles listed in OUT with .dropped.csv for
    .parquet (asset, bar_start, bar_end, issue, detail).

    \b
    Examples:
      prod-system dump-market-data --start 2023-07-20T00:00:00Z \\
        --end 2023-07-22T00:00:00Z --out snapshot.parquet
      prod-system dump-market-data --universe BTC,ETH --start 2023-07-21T00:00:00Z \\
        --end 2023-07-21T06:00:00Z --out btc_eth.parquet
      prod-system dump-market-data --source exchange --universe BTC,ETH \\
        --start 2024-01-01T00:00:00Z --end 2024-01-31T00:00:00Z --out january.parquet
    """
    if universe.strip().lower() == "all":
        assets = _every_asset(source)
    else:
        assets = [a.strip().upper() for a in universe.split(",") if a.strip()]
    if not assets or not all(asset.isalnum() for asset in assets):
        fail(f"--universe {universe!r}: asset names must be alphanumeric", "e.g. --universe BTC,ETH")
    begin, finish = timestamp_option(start, "start"), timestamp_option(end, "end")
    if finish <= begin:
        fail(f"--end ({end}) must be after --start ({start})", "--end is exclusive: give a later time")
    delay = duration_option(knowledge_delay, "knowledge-delay")
    if Path(out).suffix != ".parquet":
        fail(f"--out {out}: a snapshot is a .parquet file", f"e.g. --out {Path(out).with_suffix('.parquet').name}")
    check_writable(Path(out).parent, "--out")
    try:
        replaceable_snapshot(out)
    except MarketDataError as error:
        fail(str(error), "give --out a new path, or that of a snapshot to replace")
    download = _download(source, assets, begin, finish, Path(out)) if _from_exchange(source) else None
    metadata = _instruments_metadata(assets, source, instruments)
    progress = Progress(unit="assets")
    report = dropped_report_path(Path(out))
    dropped_parts, kept_parts = [], []  # what each piece dropped; per piece and asset: rows, first open, last close
    intervals = {}  # the candle interval of the pieces -> a row of it

    def load(lo: pd.Timestamp, hi: pd.Timestamp, per_asset: bool = True) -> pd.DataFrame:
        """The candles of [lo, hi) from the source (``fail`` on bad input)."""
        try:
            if download is not None:
                return download.candles(lo, hi, delay)
            if is_database(source) or source.startswith("csv:"):  # one read per asset: progress on long dumps
                frames = []
                for i, asset in enumerate(assets):
                    frames.append(load_source(source, [asset], delay, (lo, hi)))
                    if per_asset:
                        progress("load", i + 1, len(assets))
                candles = pd.concat(frames, ignore_index=True)
            else:
                candles = load_source(source, assets, delay, (lo, hi))
                candles = candles[candles["asset"].isin(assets)]
            return select_window(candles, lo, hi)
        except (MarketDataError, ValueError) as error:
            if source.startswith(f"{ARCHIVE_SOURCE}:"):
                fail(str(error), ARCHIVE_HINT)
            fail(
                str(error),
                f"check --source (csv:DIR, {ARCHIVE_SOURCE}:DIR, parquet:FILE or a database URL) and --universe",
            )

    def screened(candles: pd.DataFrame) -> pd.DataFrame:
        """What a strict snapshot keeps of ``candles``; the dropped ones refuse the dump unless --drop-bad."""
        try:
            candles, dropped = screen_for_snapshot(candles, source)
            same_interval(intervals, candles, source)  # one interval, whatever month each piece is
        except MarketDataError as error:
            fail(str(error), "a snapshot has one candle interval (1m, 3m, 5m, 15m, 30m or 1h): dump each apart")
        if len(dropped) and not drop_bad:
            fail(
                describe_dropped(dropped, source),
                f"fix the data, or pass --drop-bad to write the rest and list these in {report.name}",
            )
        dropped_parts.append(dropped)
        kept_parts.append(
            candles.groupby("asset").agg(rows=("asset", "size"), first=("bar_start", "min"), last=("bar_end", "max"))
        )
        return candles

    def by_month():
        """The window's usable candles month by month, one month in memory at a time."""
        months = month_windows(begin, finish)
        for i, (lo, hi) in enumerate(months):
            candles = load(lo, hi, per_asset=False)
            candles = screened(candles) if len(candles) else candles
            if len(candles):
                yield candles
            progress("dump", i + 1, len(months))

    funding = _funding(source, assets, begin, finish, delay, download)  # checked before anything is written
    path = None
    by_window = reads_by_window(source) or download is not None
    if len(month_windows(begin, finish)) > 1 and by_window:  # a long dump: month by month
        progress = Progress(unit="months")
        try:
            path = write_snapshot_months(by_month(), out, metadata, funding)
        except MarketDataError as error:
            if any(len(part) for part in kept_parts):  # not just an empty window: say what went wrong
                fail(str(error), "check --source, --start and --end")
    else:
        candles = load(begin, finish)
        candles = screened(candles) if len(candles) else candles
        path = write_snapshot(candles, out, metadata, funding) if len(candles) else None
    dropped = pd.concat(dropped_parts, ignore_index=True) if dropped_parts else pd.DataFrame()
    if path is None:
        if dropped.empty:
            fail(f"no candles between {begin} and {finish} in {source}", "check --start and --end (and --universe)")
        fail(f"no usable candle: {describe_dropped(dropped, source)}", "check --source, --start and --end")
    kept = pd.concat(kept_parts).groupby(level=0).agg({"rows": "sum", "first": "min", "last": "max"})
    missing = sorted(set(assets) - set(kept.index))
    if missing:
        click.echo(f"warning: no candles for {','.join(missing)} in the window", err=True)
    if drop_bad:  # always written, so that no report of an earlier dump stays beside this snapshot
        write_atomically(report, lambda tmp: dropped.to_csv(tmp, index=False))
        if len(dropped):
            click.echo(f"warning: left out {describe_dropped(dropped, source)}; listed in {report}", err=True)
    click.echo(
        f"wrote {int(kept['rows'].sum()):,} candles of {len(kept)} assets "
        f"({kept['first'].min()} to {kept['last'].max()}) to {path}"
    )
    if len(funding):
        click.echo(
            f"wrote {len(funding):,} funding rates of {funding['asset'].nunique()} assets "
            f"({funding['funding_time'].min()} to {funding['funding_time'].max()}) to {snapshot_funding_path(path)}"
        )
    else:
        click.echo(f"note: no funding rates in {source} for the window: runs use the assumed rate", err=True)
    if download is not None:
        download.discard()  # the snapshot is whole: its pages are not needed any more


def _funding(
    source: str, assets: list[str], begin: pd.Timestamp, finish: pd.Timestamp, delay: pd.Timedelta, download
) -> pd.DataFrame:
    """The window's funding rates from the source (``fail`` on bad input, before anything is written)."""
    try:
        if download is None:
            return load_funding(source, assets, delay, (begin, finish))
        funding = download.funding(delay)
    except DownloadInterrupted as error:
        fail(str(error), f"run the same command again (later): it goes on from what {download.work_dir} holds")
    except (MarketDataError, ValueError) as error:
        fail(str(error), ARCHIVE_HINT if source.startswith(f"{ARCHIVE_SOURCE}:") else "check --source")
    return funding[(funding["funding_time"] >= begin - LOOK_BEHIND) & (funding["funding_time"] <= finish)]


def _from_exchange(source: str) -> bool:
    return source == EXCHANGE_SOURCE or source.startswith(f"{EXCHANGE_SOURCE}:")


def _every_asset(source: str) -> list[str]:
    """--universe all: every asset of a file source (the exchange and a database have no list of theirs)."""
    if _from_exchange(source) or is_database(source):
        fail(f"--universe all: {source} has no list of assets to take", "give a list, e.g. --universe BTC,ETH")
    try:
        return file_assets(source)
    except MarketDataError as error:
        fail(str(error), f"check --source (csv:DIR, {ARCHIVE_SOURCE}:DIR or parquet:FILE)")


def _download(source: str, assets: list[str], begin: pd.Timestamp, finish: pd.Timestamp, out: Path):
    """Download the window's klines from the exchange into OUT.partial/ (resuming what an earlier run
    fetched); the download, to read its candles by window. Failures are one line."""
    from prod_system.runs.download import Download, work_dir_for
    from prod_system.trading.brokers.ccxt_client import BINANCE_FUTURES_URL, binanceusdm_client

    url = source.partition(":")[2] or None
    if url is not None and not url.startswith(("http://", "https://")):
        fail(f"--source {source}: the exchange's URL must start with http:// or https://", EXCHANGE_HINT)
    work_dir = work_dir_for(out)
    download = Download(
        binanceusdm_client(url, timeout_ms=10_000),
        url or BINANCE_FUTURES_URL,
        assets,
        begin,
        finish,
        work_dir,
        progress=Progress(unit="candles"),
        note=lambda message: click.echo(f"note: {message}", err=True),
    )
    try:
        report = download.run()
    except DownloadInterrupted as error:
        fail(str(error), f"run the same command again (later): it goes on from what {work_dir} holds", EXIT_UNREACHABLE)
    except MarketDataError as error:
        fail(str(error), EXCHANGE_HINT)
    except KeyboardInterrupt:
        fail("interrupted", f"run the same command again: it goes on from what {work_dir} holds", EXIT_INTERRUPTED)
    if report.until < finish:
        click.echo(
            f"warning: the exchange's time comes before --end: the snapshot ends at {report.until}, "
            "its last closed minute",
            err=True,
        )
    rate = report.requests / report.seconds if report.seconds else 0.0
    click.echo(
        f"downloaded {report.candles - report.resumed:,} candles ({report.resumed:,} fetched by an earlier run) "
        f"in {report.requests} requests, {report.seconds:.1f} s ({rate:.0f} requests/s, {report.retries} retried, "
        f"{report.pauses} waits for the next minute's request weight)",
        err=True,
    )
    return download
