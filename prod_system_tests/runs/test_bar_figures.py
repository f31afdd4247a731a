"""A live bar's figures (``runs.bar_figures``) against the log dir's tables they come from: a session's
log dir written as a live session writes it (one part per bar, from a real ``Portfolio``), with a bar
skipped in the middle; the running totals' cache never changes a figure, even behind a bar recorded
late."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from prod_system.common.files import write_atomically
from prod_system.config import build_config
from prod_system.log_dir import LogDir
from prod_system.runs.bar_figures import TOTALS_FILE, bar_figures
from prod_system.trading.portfolio import Portfolio, PortfolioState

ASSETS = ["BTC", "ETH", "SOL"]
START = pd.Timestamp("2023-07-21T00:00:00Z")
BARS = pd.date_range(START + pd.Timedelta(minutes=1), periods=6, freq="1min", tz="UTC")
SKIPPED = BARS[3]  # no tables: the session skipped it
TABLES = ("portfolio/statistics", "portfolio/holdings_notional")


@pytest.fixture
def session(tmp_path) -> LogDir:
    """Five traded bars of 1 minute (one skipped) with fills, fees and a funding payment, from 1,000 USDT;
    a state.json (1,234 USDT of cash and no holdings), as a live session leaves them."""
    logs = LogDir(tmp_path / "system_log_dir")
    # a cash of its own: the session's start before a bar reported late is the first bar's, not the state's
    logs.write_text("state.json", json.dumps({"cash": 1_234.0, "notional": dict.fromkeys(ASSETS, 0.0)}))
    portfolio = Portfolio(PortfolioState.empty(ASSETS, 1_000.0))
    rng = np.random.default_rng(1)
    for i, bar_end in enumerate(BARS):
        if bar_end == SKIPPED:
            continue
        prices = np.array([30_000.0, 1_900.0, 25.0]) * (1 + rng.normal(0, 1e-3, 3))
        fills = [{"asset": "ETH", "shares": 0.1, "notional": 0.1 * prices[1], "fee": 0.1 * prices[1] * 5e-4}]
        fills += [{"asset": "SOL", "shares": -20.0, "notional": -20.0 * prices[2], "fee": 0.02}] if i == 0 else []
        settlements = None
        if i == 2:  # a funding settlement on the SOL short
            settlements = pd.DataFrame(
                {"asset": ["SOL"], "funding_time": [bar_end], "mark_price": [np.nan], "rate": [1e-4], "assumed": [0]}
            )
        portfolio.update(bar_end, fills, prices, settlements)
        for name, frame in portfolio.tables(last_bar_only=True).items():
            if name in TABLES:
                logs.write_table(name, frame, bar_end)
    return logs


def test_each_bar_s_figures_are_its_tables(session):
    stats = session.read_table("portfolio/statistics").set_index("bar_end")
    holdings = session.read_table("portfolio/holdings_notional")
    assert stats["funding"].abs().sum() > 0 and stats["fees"].sum() > 0  # the costs are there to sum
    for bar_end in BARS:
        figures = bar_figures(session, bar_end)
        so_far = stats[stats.index <= bar_end]
        assert figures.session_pnl == pytest.approx(so_far["pnl"].sum(), abs=1e-9)
        assert figures.session_fees == pytest.approx(so_far["fees"].sum(), abs=1e-9)
        assert figures.session_funding == pytest.approx(so_far["funding"].sum(), abs=1e-9)
        assert figures.traded_bars == len(so_far)
        assert figures.net_wealth == so_far["net_wealth"].iloc[-1]
        if bar_end == SKIPPED:  # what the session knows: its sums so far, the last traded bar's wealth
            assert not figures.traded and figures.bar_pnl is None and figures.gmv is None
            assert figures.as_of == so_far.index[-1]
            continue
        row = stats.loc[bar_end]
        assert figures.traded and figures.as_of == bar_end
        assert (figures.bar_pnl, figures.gmv, figures.leverage) == (row["pnl"], row["gmv"], row["leverage"])
        assert (figures.bar_fees, figures.bar_funding) == (row["fees"], row["funding"])
        held = holdings[(holdings["bar_end"] == bar_end) & (holdings["notional"] != 0)].set_index("asset")["notional"]
        assert figures.positions == len(held) == 2
        assert figures.largest_asset == held.abs().idxmax()
        assert figures.largest_notional == held[held.abs().idxmax()]  # signed: a short is negative
    assert bar_figures(session, BARS[0]).largest_asset == "SOL" and bar_figures(session, BARS[0]).largest_notional < 0


def test_before_any_traded_bar_the_session_s_start(session, tmp_path):
    """What the session started with: the first traded bar's wealth before its PnL (a bar reported
    late), else the state's (carried over), else the config's initial cash (a fresh session)."""
    first = bar_figures(session, BARS[0] - pd.Timedelta(minutes=1))
    assert not first.traded and first.session_pnl == 0 and first.traded_bars == 0
    assert first.net_wealth == pytest.approx(1_000.0, abs=1e-9) and first.as_of is None
    carried = LogDir(tmp_path / "carried")
    carried.write_text("state.json", json.dumps({"cash": 900.0, "notional": {"BTC": 150.0, "ETH": -50.0}}))
    assert bar_figures(carried, BARS[0]).net_wealth == 1_000.0
    fresh = LogDir(tmp_path / "fresh")
    config = build_config(
        {
            "model": "C1b",
            "universe": ASSETS,
            "start": START.isoformat(),
            "end": (START + pd.Timedelta(days=1)).isoformat(),
            "market_data": {"source": "sqlite:///unused.db"},
            "portfolio": {"initial_cash": 5_000.0},
        }
    )
    fresh.prepare(config)
    assert bar_figures(fresh, BARS[0]).net_wealth == 5_000.0


def test_the_running_totals_never_change_a_figure(session):
    """The cache summed up to a bar is caught up, rebuilt when a part appears before what it covers
    (a bar recorded late), and the same as no cache at all."""
    late = session.path / "portfolio" / "statistics" / f"part-{BARS[1]:%Y%m%d_%H%M%S}.parquet"
    aside = late.with_name("aside")
    late.rename(aside)  # bar 2 not recorded yet when bar 3 is reported
    bar_figures(session, BARS[2])
    aside.rename(late)
    with_cache = bar_figures(session, BARS[-1])
    (session.path / TOTALS_FILE).unlink()
    without = bar_figures(session, BARS[-1])
    stats = session.read_table("portfolio/statistics")
    assert with_cache == without
    assert with_cache.session_pnl == pytest.approx(stats["pnl"].sum(), abs=1e-9)
    # a bar before the cached ones (a report of an earlier bar) sums only its own bars
    assert bar_figures(session, BARS[1]).session_pnl == pytest.approx(stats["pnl"].iloc[:2].sum(), abs=1e-9)


def test_two_writers_of_the_running_totals_at_once_each_publish_a_whole_file(session):
    """Overlapping runs write ``session_totals.json`` at once: each writes a temporary file of its own,
    so neither fails nor publishes the other's file while it is written; a writer killed midway leaves
    its temporary file, which is never read."""
    figures = bar_figures(session, BARS[-1])
    path = session.path / TOTALS_FILE
    whole = path.read_text()

    def slow_writer(tmp):  # an earlier run, midway through writing the totals when the next one writes them
        with tmp.open("w") as file:
            file.write(whole[:20])
            file.flush()
            path.unlink()  # the next run finds no cache: it rebuilds it and writes its own
            assert bar_figures(session, BARS[-1]) == figures
            assert json.loads(path.read_text()) == json.loads(whole)
            file.write(whole[20:])

    write_atomically(path, slow_writer)
    assert json.loads(path.read_text()) == json.loads(whole)
    assert [p.name for p in session.path.iterdir() if p.name.endswith(".tmp")] == []
    (session.path / f".{TOTALS_FILE}.4242.0badc0ffee00.tmp").write_text('{"pnl": 1e9, "par')  # killed midway
    path.unlink()
    assert bar_figures(session, BARS[-1]) == figures
