"""The performance figures against values computed by hand on a six-bar series, and their edge cases."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from prod_system.analysis.performance import compute, funding_note, markdown, periods_per_year
from prod_system.errors import StatisticsError

FIVE_MINUTES = pd.Timedelta(minutes=5)
START = pd.Timestamp("2026-01-01", tz="UTC")


def _stats(pnl, fees=None, funding=None, gmv=None, gross_volume=None, assumed=None, bar=FIVE_MINUTES):
    """A statistics table in the newer schema: trading_pnl = pnl + fees - funding."""
    n = len(pnl)
    fees = fees or [0.0] * n
    funding = funding or [0.0] * n
    return pd.DataFrame(
        {
            "bar_end": [START + bar * (i + 1) for i in range(n)],
            "pnl": [float(x) for x in pnl],
            "trading_pnl": [p + f - u for p, f, u in zip(pnl, fees, funding, strict=True)],
            "gross_volume": gross_volume or [100.0] * n,
            "net_volume": [0.0] * n,
            "gmv": gmv or [1000.0] * n,
            "nmv": [0.0] * n,
            "cash": [1000.0] * n,
            "net_wealth": [1000.0] * n,
            "leverage": [1.0] * n,
            "fees": fees,
            "funding": funding,
            "funding_assumed": assumed or [0] * n,
            "n_fills": [1] * n,
        }
    )


def _six_bars(bar=FIVE_MINUTES):
    return _stats(
        pnl=[2, -1, 3, -4, 0, 2],
        fees=[0.5, 0.5, 0.5, 0.5, 0.0, 0.5],
        funding=[0.0, 0.0, -0.5, 0.0, 0.0, 0.25],
        gmv=[900.0, 1100.0, 1000.0, 1000.0, 800.0, 1200.0],  # mean 1000
        gross_volume=[100.0, 200.0, 50.0, 150.0, 0.0, 100.0],  # 600 in all
        assumed=[0, 0, 1, 0, 0, 0],
        bar=bar,
    )


def test_bars_a_year_follow_the_bar_length():
    assert periods_per_year(pd.Timedelta(minutes=5)) == 365 * 24 * 12 == 105_120
    assert periods_per_year(pd.Timedelta(minutes=1)) == 525_600
    assert periods_per_year(pd.Timedelta(hours=1)) == 8_760


def test_six_bars_by_hand():
    perf = compute(_six_bars(), FIVE_MINUTES)
    # net 2 - 1 + 3 - 4 + 0 + 2 = 2; fees 5 x 0.5 = 2.5; funding -0.5 + 0.25 = -0.25
    # gross (trading) = net + fees - funding = 2 + 2.5 + 0.25 = 4.75
    assert perf.net_pnl == pytest.approx(2.0)
    assert perf.fees == pytest.approx(2.5)
    assert perf.funding == pytest.approx(-0.25)
    assert perf.gross_pnl == pytest.approx(4.75)
    assert perf.mean_gmv == pytest.approx(1000.0)
    assert perf.fees_share == pytest.approx(2.5 / 4.75)  # 52.6% of |gross|
    assert perf.funding_share == pytest.approx(-0.25 / 4.75)  # paid: negative
    assert perf.funding_recorded and perf.funding_assumed == 1
    # returns r = pnl / 1000, mean 1/3000; pnl deviations from 1/3: 5/3 -4/3 8/3 -13/3 -1/3 5/3,
    # squares sum 300/9, sample variance 300/9/5 = 20/3; (mean/std)^2 = (1/9)/(20/3) = 1/60
    # Sharpe = sqrt(105120 / 60) = sqrt(1752)
    assert perf.sharpe == pytest.approx(math.sqrt(1752))  # 41.857
    # downside: min(pnl, 0) = 0 -1 0 -4 0 0, mean square 17/6; (mean/dd)^2 = (1/9)/(17/6) = 2/51
    assert perf.sortino == pytest.approx(math.sqrt(105120 * 2 / 51))  # 64.206
    # annualised return: mean r x bars a year = 105120 / 3000 = 35.04 (3504% of mean GMV)
    assert perf.annualised_return == pytest.approx(35.04)
    # cumulative PnL from 0: 0 2 1 4 0 0 2; highest fall 4 -> 0, from the 3rd bar end to the 4th
    assert perf.max_drawdown == pytest.approx(4.0)
    assert perf.max_drawdown_pct == pytest.approx(0.004)
    assert perf.max_drawdown_start == START + 3 * FIVE_MINUTES
    assert perf.max_drawdown_end == START + 4 * FIVE_MINUTES
    assert perf.calmar == pytest.approx(35.04 / 0.004)  # 8760
    # 5 bars with nonzero PnL, 3 of them positive
    assert (perf.hit_rate, perf.winning_bars, perf.bars_with_pnl) == (pytest.approx(0.6), 3, 5)
    # 600 traded over half an hour: 600 / 1000 / (1/48 day) = 28.8 a day; 2 x 1000 / 1200 per hour
    assert perf.turnover_per_day == pytest.approx(28.8)
    assert perf.holding_period_hours == pytest.approx(2000 / 1200)


def test_the_bar_length_annualises():
    perf = compute(_six_bars(bar=pd.Timedelta(hours=1)), pd.Timedelta(hours=1))
    assert perf.sharpe == pytest.approx(math.sqrt(8760 / 60))
    assert perf.annualised_return == pytest.approx(8760 / 3000)
    assert perf.turnover_per_day == pytest.approx(600 / 1000 / 0.25)  # six hours: a quarter day
    assert perf.holding_period_hours == pytest.approx(2000 / 100)


def test_the_report_lines_say_it():
    text = "\n".join(markdown(compute(_six_bars(), FIVE_MINUTES)))
    assert "| Sharpe (annualised) | 41.86 |" in text
    assert "| max drawdown | 4.00 USDT (0.400% of mean GMV), from 2026-01-01 00:15 to 2026-01-01 00:20 UTC |" in text
    assert "| hit rate | 60.0% (3 of 5 bars with nonzero PnL) |" in text
    assert "| fees | 2.50 USDT (0.250% of mean GMV); 52.632% of abs(gross PnL) |" in text
    assert "| returns | net PnL per bar / mean GMV (1,000 USDT); 5-minute bars, 105,120 a year |" in text
    assert "funding: assumed rate" in text


def test_all_zero_pnl_has_no_ratio():
    perf = compute(_stats([0, 0, 0, 0]), FIVE_MINUTES)
    assert perf.sharpe is None and perf.sortino is None and perf.calmar is None and perf.hit_rate is None
    assert perf.max_drawdown == 0 and perf.max_drawdown_start is None
    assert perf.fees_share is None  # no gross PnL to share
    text = "\n".join(markdown(perf))
    assert "| Sharpe (annualised) | n/a |" in text and "| max drawdown | none |" in text
    assert perf.to_dict()["sharpe"] is None


def test_a_rising_curve_has_no_drawdown_nor_downside():
    perf = compute(_stats([1, 2, 1]), FIVE_MINUTES)
    assert perf.max_drawdown == 0 and perf.calmar is None and perf.sortino is None
    assert perf.sharpe == pytest.approx(4 / 3 / math.sqrt(1 / 3) * math.sqrt(105120))  # mean 4/3, var 1/3


def test_a_first_losing_bar_draws_down_from_the_window_start():
    perf = compute(_stats([-3, 1, 1]), FIVE_MINUTES)
    assert perf.max_drawdown == pytest.approx(3.0)
    assert (perf.max_drawdown_start, perf.max_drawdown_end) == (START, START + FIVE_MINUTES)


def test_one_bar():
    perf = compute(_stats([5.0]), FIVE_MINUTES)
    assert perf.sharpe is None and perf.sortino is None
    assert perf.hit_rate == 1.0 and perf.net_pnl == 5.0


def test_identical_bars_have_no_sharpe():
    # seven bars of 0.1 USDT on 1000: the float standard deviation is 1.5e-20, not 0 (rounding)
    assert compute(_stats([0.1] * 7), FIVE_MINUTES).sharpe is None


def test_a_table_before_funding_was_recorded():
    """The older schema: no trading_pnl, funding, funding_assumed; gross = pnl + fees, funding 0."""
    old = _stats([2, -1], fees=[0.5, 0.5]).drop(columns=["trading_pnl", "funding", "funding_assumed"])
    perf = compute(old, FIVE_MINUTES)
    assert perf.gross_pnl == pytest.approx(2.0) and perf.funding == 0 and not perf.funding_recorded
    assert funding_note(perf) == "funding: not recorded (counted as 0)"
    # older parts read under the newer schema have nulls there: the same fallback per row
    mixed = _stats([2, -1], fees=[0.5, 0.5], funding=[0.0, -0.25])
    mixed.loc[0, ["trading_pnl", "funding", "funding_assumed"]] = None
    perf = compute(mixed, FIVE_MINUTES)
    assert perf.gross_pnl == pytest.approx((2 + 0.5) + (-1 + 0.5 + 0.25))
    assert perf.funding == pytest.approx(-0.25) and perf.funding_recorded
    assert funding_note(perf) == "funding: from data"


def test_bad_tables_name_the_column():
    with pytest.raises(StatisticsError, match="'gmv' missing"):
        compute(_stats([1, 2]).drop(columns="gmv"), FIVE_MINUTES)
    broken = _stats([1, 2])
    broken.loc[1, "pnl"] = None
    with pytest.raises(StatisticsError, match="'pnl' has 1 nulls"):
        compute(broken, FIVE_MINUTES)
