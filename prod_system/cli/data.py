"""``prod-system dump-market-data``: raw candles into a replayable snapshot."""

from __future__ import annotations

from pathlib import Path

import click
import pandas as pd

from prod_system.cli.common import check_writable, duration_option, timestamp_option
from prod_system.cli.errors import fail
from prod_system.cli.progress import Progress
from prod_system.config import DEFAULT_UNIVERSE, is_database
from prod_system.data import BUNDLED_CANDLES
from prod_system.data.market_data import select_window, write_snapshot
from prod_system.data.sources import load_source
from prod_system.errors import MarketDataError


@click.command(
    "dump-market-data",
    short_help="Turn candles (CSV, Parquet, database) into a snapshot.",
)
@click.option(
    "--source",
    default=f"csv:{BUNDLED_CANDLES}",
    show_default="bundled candles",
    help="'csv:DIR' with {ASSET}_USDT.csv.gz files, 'parquet:FILE' (or FILE.parquet), or the real-time "
    "market database (sqlite:///FILE or postgresql://user@host/db).",
)
@click.option(
    "--universe",
    default=",".join(DEFAULT_UNIVERSE),
    show_default=True,
    help="Comma-separated assets (without the USDT quote).",
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
    type=click.Path(dir_okay=False),
    help="Snapshot file to write (.parquet); replaced if it exists, its folder created.",
)
def dump_market_data(source: str, universe: str, start: str, end: str, knowledge_delay: str, out: str) -> None:
    """Turn raw 1-minute candles into a replayable market-data snapshot.

    The snapshot has one row per candle and asset, with the time the system could first know it
    (knowledge_ts), so a replay never peeks. simulate, historical-pnl and exchange-sim read it.

    \b
    Examples:
      prod-system dump-market-data --start 2023-07-20T00:00:00Z \\
        --end 2023-07-22T00:00:00Z --out snapshot.parquet
      prod-system dump-market-data --universe BTC,ETH --start 2023-07-21T00:00:00Z \\
        --end 2023-07-21T06:00:00Z --out btc_eth.parquet
    """
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
    progress = Progress(unit="assets")
    try:
        if is_database(source) or source.startswith("csv:"):  # one read per asset: progress on long dumps
            frames = []
            for i, asset in enumerate(assets):
                frames.append(load_source(source, [asset], delay, (begin, finish)))
                progress("load", i + 1, len(assets))
            candles = pd.concat(frames, ignore_index=True)
        else:
            candles = load_source(source, assets, delay, (begin, finish))
            candles = candles[candles["asset"].isin(assets)]
        candles = select_window(candles, begin, finish)
    except (MarketDataError, ValueError) as error:
        fail(str(error), "check --source (csv:DIR, parquet:FILE or a database URL) and --universe")
    if candles.empty:
        fail(f"no candles between {begin} and {finish} in {source}", "check --start and --end (and --universe)")
    missing = sorted(set(assets) - set(candles["asset"]))
    if missing:
        click.echo(f"warning: no candles for {','.join(missing)} in the window", err=True)
    path = write_snapshot(candles, out)
    counts = candles.groupby("asset").size()
    click.echo(
        f"wrote {len(candles):,} candles of {len(counts)} assets "
        f"({candles['bar_start'].min()} to {candles['bar_end'].max()}) to {path}"
    )
