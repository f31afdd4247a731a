"""What trading costs, pinned down by hand on small numbers: slippage, fees, the sign of funding, the
portfolio's settlements (whose shares, which mark, when a late one is paid, never twice), which
settlements a bar may apply, and which settlements a run has."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prod_system.config import CostsConfig, FundingConfig
from prod_system.data.funding import FundingSchedule, funding_schedule, normalize_funding
from prod_system.trading.costs import funding_payments, slipped_prices, taker_fees
from prod_system.trading.portfolio import Portfolio, PortfolioState

SLIPPAGE = CostsConfig(slippage={"half_spread_bps": 2.0, "impact_bps_per_million": 10.0})
ASSETS = ["A", "B", "C"]
DAY = pd.Timestamp("2023-07-21T00:00:00Z")


def at(hhmm: str) -> pd.Timestamp:
    return pd.Timestamp(f"2023-07-21T{hhmm}:00Z")


# -- slippage, fees, funding's sign ---------------------------------------------------------------


def test_slippage_moves_the_price_against_the_order_by_the_formula():
    price = 100.0
    bought, sold = slipped_prices(price, 1.0, SLIPPAGE), slipped_prices(price, -1.0, SLIPPAGE)
    bps = 2.0 + 10.0 * 100.0 / 1e6  # half spread + impact on 100 USDT
    assert bought == pytest.approx(price * (1 + bps * 1e-4), rel=1e-15)
    assert sold == pytest.approx(price * (1 - bps * 1e-4), rel=1e-15)
    assert bought > price > sold
    # impact grows with |notional|, alike for buys and sells: 1,000,000 USDT adds 10 bps
    big_buy, big_sell = slipped_prices(price, 10_000.0, SLIPPAGE), slipped_prices(price, -10_000.0, SLIPPAGE)
    assert big_buy == pytest.approx(price * (1 + (2.0 + 10.0) * 1e-4), rel=1e-15)
    assert big_buy - price == pytest.approx(price - big_sell, rel=1e-12) and big_buy > bought
    assert slipped_prices(price, 0.0, SLIPPAGE) == price  # nothing traded, nothing moved


def test_slippage_of_arrays_is_the_slippage_of_each_fill_and_off_changes_nothing():
    prices = np.array([[100.0, 2.5, 30_000.0], [101.0, 2.4, 29_000.0]])
    quantities = np.array([[1.0, -400.0, 0.0], [-3.0, 1_000_000.0, 2.0]])
    slipped = slipped_prices(prices, quantities, SLIPPAGE)
    each = [
        [slipped_prices(p, q, SLIPPAGE) for p, q in zip(*row, strict=True)]
        for row in zip(prices, quantities, strict=True)
    ]
    np.testing.assert_allclose(slipped, each, rtol=1e-15)
    off = CostsConfig()  # the default: no slippage
    np.testing.assert_array_equal(slipped_prices(prices, quantities, off), prices)
    assert slipped_prices(100.0, 5.0, off) == 100.0
    only_spread = CostsConfig(slippage={"half_spread_bps": 1.0})
    assert slipped_prices(100.0, -1e9, only_spread) == pytest.approx(100.0 * (1 - 1e-4), rel=1e-15)


def test_taker_fees_are_the_rate_on_the_absolute_notional():
    costs = CostsConfig()
    assert costs.fees.taker == 0.0005 and costs.fees.maker == 0.0002  # Binance USDT-M, standard tier
    np.testing.assert_allclose(taker_fees(np.array([1_000.0, -2_000.0, 0.0]), costs), [0.5, 1.0, 0.0], rtol=1e-15)
    assert taker_fees(-300.0, CostsConfig(fees={"taker": 0.001})) == pytest.approx(0.3, rel=1e-15)
    assert taker_fees(300.0, CostsConfig(fees={"taker": 0.0})) == 0.0


def test_funding_a_long_pays_a_positive_rate_and_a_short_receives_it():
    paid = funding_payments(
        np.array([2.0, -2.0, 2.0, -2.0]), np.array([100.0] * 4), np.array([1e-4, 1e-4, -1e-4, -1e-4])
    )
    np.testing.assert_allclose(paid, [-0.02, 0.02, 0.02, -0.02], rtol=1e-12)
    assert funding_payments(np.array([0.0]), np.array([100.0]), np.array([0.01]))[0] == 0.0


# -- the portfolio's settlements -----------------------------------------------------------------


def settlement_rows(*rows) -> pd.DataFrame:
    """Settlements as ``FundingSchedule.due`` hands them out: (asset, time, rate, mark or NaN, known at,
    assumed)."""
    frame = pd.DataFrame(rows, columns=["asset", "funding_time", "rate", "mark_price", "knowledge_ts", "assumed"])
    return frame.astype({"funding_time": "datetime64[ns, UTC]", "knowledge_ts": "datetime64[ns, UTC]"})


def fill(asset: str, shares: float, price: float, fee: float = 0.0) -> dict:
    return {"asset": asset, "shares": shares, "notional": shares * price, "fee": fee}


def three_asset_portfolio() -> Portfolio:
    """Bar 00:05: A long 2 at 10, B short 3 at 20, C long 1 at 5, marked at 10.5, 19, 5."""
    portfolio = Portfolio(PortfolioState.empty(ASSETS, 1_000.0))
    portfolio.update(at("00:05"), [fill("A", 2, 10), fill("B", -3, 20), fill("C", 1, 5)], np.array([10.5, 19, 5]))
    return portfolio


def test_a_settlement_in_its_bar_uses_the_shares_after_the_bars_fills_and_the_datas_mark_else_the_close():
    portfolio = three_asset_portfolio()
    due = settlement_rows(
        ("A", at("00:08"), 0.001, np.nan, at("00:08"), False),  # no mark: the bar's close, 11
        ("B", at("00:10"), 0.002, 17.5, at("00:10"), False),  # the data's mark, not the close 18
        ("C", at("00:10"), 0.0001, np.nan, at("00:10"), True),
    )
    # bar 00:10 (00:05, 00:10] holds both settlement times: A 2 -> 3, B -3 -> -2 by its fills
    stats = portfolio.update(
        at("00:10"), [fill("A", 1, 10.8, fee=0.01), fill("B", 1, 18.2)], np.array([11, 18, 6]), due
    )
    expected = {"A": -3 * 11 * 0.001, "B": 2 * 17.5 * 0.002, "C": -1 * 6 * 0.0001}
    funding = portfolio.tables()["portfolio/funding"].query("bar_end == @at('00:10')").set_index("asset")["funding"]
    np.testing.assert_allclose(funding.reindex(ASSETS), [expected[a] for a in ASSETS], rtol=1e-12)
    assert stats["funding"] == pytest.approx(sum(expected.values()), rel=1e-12)
    assert stats["funding_assumed"] == 1  # C's row only
    assert stats["pnl"] == pytest.approx(stats["trading_pnl"] - stats["fees"] + stats["funding"], abs=1e-12)
    assert portfolio.funded_until == {"A": at("00:08"), "B": at("00:10"), "C": at("00:10")}


def test_a_settlement_paid_a_bar_late_uses_the_shares_and_close_held_at_its_time():
    portfolio = three_asset_portfolio()
    portfolio.update(at("00:10"), [fill("A", 1, 10.8), fill("B", 1, 18.2)], np.array([11, 18, 6]))  # A 3, B -2, C 1
    late = settlement_rows(
        ("A", at("00:10"), 0.001, np.nan, at("00:12"), False),  # held at 00:10: 3 at 11 (now 7 at 12)
        ("B", at("00:08"), 0.002, 17.5, at("00:12"), False),  # held at 00:08: -2 (now 0), the data's mark
        ("C", at("00:10"), 0.0001, np.nan, at("00:10"), True),  # held at 00:10: 1 at 6 (now 0 at 7)
    )
    stats = portfolio.update(
        at("00:15"), [fill("A", 4, 12), fill("B", 2, 18), fill("C", -1, 7)], np.array([12, 18.5, 7]), late
    )
    expected = -3 * 11 * 0.001 + 2 * 17.5 * 0.002 - 1 * 6 * 0.0001
    assert stats["funding"] == pytest.approx(expected, rel=1e-12)
    assert stats["funding_assumed"] == 1
    # cash moves by the funding (and the trades), so net wealth follows the identity
    wealth = portfolio.tables()["portfolio/statistics"]["net_wealth"]
    assert wealth.iloc[-1] - wealth.iloc[-2] == pytest.approx(stats["trading_pnl"] - stats["fees"] + expected, abs=1e-9)


def test_each_settlement_is_paid_once_across_bars_and_a_resumed_portfolio():
    schedule = FundingSchedule(
        settlement_rows(
            ("A", at("00:08"), 0.001, np.nan, at("00:08"), False),
            ("B", at("00:08"), 0.001, np.nan, at("00:14"), False),  # known late
            ("C", at("00:10"), 0.0001, np.nan, at("00:10"), True),
        )
    )
    portfolio = three_asset_portfolio()
    paid = []
    for hhmm in ("00:10", "00:15", "00:20"):
        bar_end = at(hhmm)
        due = schedule.due(bar_end + pd.Timedelta(seconds=10), bar_end, portfolio.funded_until)
        paid.append(sorted(due["asset"]))
        portfolio.update(bar_end, [], np.array([11, 18, 6]), due)
    assert paid == [["A", "C"], ["B"], []]
    assert portfolio.funded_until == {"A": at("00:08"), "B": at("00:08"), "C": at("00:10")}
    # a session resumed from the state never pays them again
    state = portfolio.state([], at("00:20"))
    assert state.funded_until == portfolio.funded_until
    resumed = Portfolio(state)
    assert schedule.due(at("00:25"), at("00:25"), resumed.funded_until).empty
    funding = portfolio.tables()["portfolio/statistics"]["funding"].to_numpy()
    np.testing.assert_allclose(funding, [0, -2 * 11 * 0.001 - 1 * 6 * 0.0001, 3 * 18 * 0.001, 0], rtol=1e-12)


# -- which settlements a bar may apply -----------------------------------------------------------


def test_due_never_hands_out_a_settlement_before_it_is_known_and_waits_for_the_first_unknown():
    schedule = FundingSchedule(
        settlement_rows(
            ("X", at("08:00"), 0.001, np.nan, at("08:30"), False),  # published half an hour late
            ("X", at("08:05"), 0.002, np.nan, at("08:05"), False),  # known at once, but after the late one
            ("Y", at("08:00"), 0.003, np.nan, at("08:00") + pd.Timedelta(seconds=10), False),
        )
    )
    rows = schedule.schedule
    for minutes in range(0, 60, 5):
        bar_end = at("07:55") + pd.Timedelta(minutes=minutes)
        for now in (bar_end, bar_end + pd.Timedelta(seconds=10)):
            due = schedule.due(now, bar_end, {})
            assert (due["knowledge_ts"] <= now).all() and (due["funding_time"] <= bar_end).all()
    # Y's 08:00 is not known at 08:00; X's 08:05, known, waits for X's 08:00; Y goes on
    assert schedule.due(at("08:00"), at("08:00"), {}).empty
    assert schedule.due(at("08:05"), at("08:05"), {})["asset"].tolist() == ["Y"]
    due = schedule.due(at("08:30"), at("08:30"), {"Y": at("08:00")})
    assert list(zip(due["asset"], due["funding_time"], strict=True)) == [("X", at("08:00")), ("X", at("08:05"))]
    # a nanosecond before it is known, it is not due
    just_before = rows.loc[0, "knowledge_ts"] - pd.Timedelta(1, "ns")
    assert "X" not in set(schedule.due(just_before, at("08:30"), {})["asset"])


# -- a run's settlements -------------------------------------------------------------------------


def funding_data() -> pd.DataFrame:
    """A has data every 4 hours (and one row before the window), E a row within the day before the
    window only, D is not one of the run's assets."""
    times = [DAY - pd.Timedelta(hours=4), *(DAY + pd.Timedelta(hours=h) for h in (4, 8, 12, 16, 20, 24))]
    rows = [("A", t, 0.0002, 30.0) for t in times]
    rows += [("D", DAY + pd.Timedelta(hours=8), 0.0005, np.nan), ("E", DAY - pd.Timedelta(hours=16), 0.0003, np.nan)]
    frame = pd.DataFrame(rows, columns=["asset", "funding_time", "rate", "mark_price"])
    return normalize_funding(frame.assign(knowledge_ts=frame["funding_time"] + pd.Timedelta(seconds=10)))


def test_funding_schedule_data_for_assets_with_data_assumed_every_interval_for_the_others():
    end = DAY + pd.Timedelta(days=1)
    schedule = funding_schedule(funding_data(), ["A", "B", "E"], DAY, end, FundingConfig(assumed_rate=0.0003))
    a, b = schedule[schedule["asset"] == "A"], schedule[schedule["asset"] == "B"]
    # A: its data rows in (start, end], none assumed, none before the start
    assert list(a["funding_time"]) == [DAY + pd.Timedelta(hours=h) for h in (4, 8, 12, 16, 20, 24)]
    assert not a["assumed"].any() and (a["rate"] == 0.0002).all() and (a["mark_price"] == 30.0).all()
    # B: the assumed rate at 08:00, 16:00, 00:00, known when it settles, the close as its mark
    assert list(b["funding_time"]) == [DAY + pd.Timedelta(hours=h) for h in (8, 16, 24)]
    assert b["assumed"].all() and (b["rate"] == 0.0003).all() and b["mark_price"].isna().all()
    assert (b["knowledge_ts"] == b["funding_time"]).all()
    # E had a row within a day before the window: the data covers it (no settlement inside the window)
    assert "E" not in set(schedule["asset"]) and "D" not in set(schedule["asset"])
    hourly = funding_schedule(funding_data(), ["B"], DAY, DAY + pd.Timedelta(hours=3), FundingConfig(interval="1h"))
    assert list(hourly["funding_time"]) == [DAY + pd.Timedelta(hours=h) for h in (1, 2, 3)]


def test_funding_schedule_assumed_ignores_the_data_and_off_has_none():
    end = DAY + pd.Timedelta(days=1)
    assumed = funding_schedule(funding_data(), ["A", "B"], DAY, end, FundingConfig(mode="assumed", interval="4h"))
    assert assumed["assumed"].all() and len(assumed) == 2 * 6
    assert (assumed["rate"] == FundingConfig().assumed_rate).all()
    assert FundingSchedule(assumed).describe() == "assumed"
    off = funding_schedule(funding_data(), ["A", "B"], DAY, end, FundingConfig(mode="off"))
    assert off.empty and FundingSchedule(off).describe() == "none"
    data = funding_schedule(funding_data(), ["A", "B"], DAY, end, FundingConfig())
    assert FundingSchedule(data).describe() == "data and assumed"


def test_a_settlement_stamped_after_its_minute_is_known_when_its_bar_is_decided():
    """Binance stamps the 08:00 settlement a few ms after 08:00; a history file's row is known the
    knowledge delay after its minute, as the candle closing then, so the 08:00 bar (decided 10 s after
    its close) books it, and the last bar of a run ending at 08:00 does not lose it."""
    from prod_system.data.funding import known_after

    stamped = pd.DatetimeIndex([at("08:00") + pd.Timedelta(milliseconds=5)])
    delay = pd.Timedelta(seconds=10)
    assert known_after(stamped, delay)[0] == at("08:00") + delay
    rows = settlement_rows(("X", at("08:00"), 0.001, np.nan, known_after(stamped, delay)[0], False))
    assert FundingSchedule(rows).due(at("08:00") + delay, at("08:00"), {})["asset"].tolist() == ["X"]
