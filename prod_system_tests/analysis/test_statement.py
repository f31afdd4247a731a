"""Portfolio vs exchange on a statement written by hand: a buy, a sell that flips the position (PnL
realized on the reducing part at the average entry price) and a funding settlement, booked by the
portfolio on time, a bar late (allowed) or two bars late (a divergence); a simulation has no statement."""

from __future__ import annotations

import pandas as pd
import pytest

from prod_system.analysis.statement import NO_STATEMENT, check_log_dir, check_statement

MINUTE = pd.Timedelta(minutes=1)
START = pd.Timestamp("2023-07-21T00:00:00Z")
BARS = [START + k * MINUTE for k in range(1, 5)]
SECONDS = pd.Timedelta(seconds=1)
# each bar's orders fill 5 s after it (the exchange's rows), counted 6 s after it, applied at the next bar
BUY, SELL = BARS[0] + 5 * SECONDS, BARS[1] + 5 * SECONDS
SETTLEMENT = BARS[2]  # short 1 at a mark of 105, rate 1%: the short receives 1.05


def statement(funding_booked_at: pd.Timestamp = SETTLEMENT) -> dict:
    fills = pd.DataFrame(
        {
            "bar_end": [BARS[1], BARS[2]],
            "asset": "BTC",
            "shares": [1.0, -2.0],
            "price": [100.0, 110.0],
            "notional": [100.0, -220.0],
            "fee": [0.05, 0.11],
            "filled_at": [BUY + SECONDS, SELL + SECONDS],
        }
    )
    statistics = pd.DataFrame({"bar_end": BARS, "fees": [0.0, 0.05, 0.11, 0.0]})
    statistics["funding"] = [1.05 if bar == funding_booked_at else 0.0 for bar in BARS]
    holdings = pd.DataFrame({"bar_end": BARS, "asset": "BTC", "shares": [0.0, 1.0, -1.0, -1.0]})
    rows = [
        ("COMMISSION", -0.05, BUY, BARS[0]),
        ("REALIZED_PNL", 10.0, SELL, BARS[1]),
        ("COMMISSION", -0.11, SELL, BARS[1]),
        ("FUNDING_FEE", 1.05, SETTLEMENT, BARS[2]),
    ]
    income = pd.DataFrame(
        [
            {"bar_end": pulled, "asset": "BTC", "income_type": kind, "income": amount, "tran_id": str(i)}
            | {"trade_id": "", "income_at": at}
            for i, (kind, amount, at, pulled) in enumerate(rows)
        ]
    )
    wallet = [1000.0, 999.95, 1009.84, 1010.89, 1010.89]
    account = pd.DataFrame(
        {
            "bar_end": [START, *BARS],
            "wallet_balance": wallet,
            "margin_balance": wallet,
            "unrealized_pnl": 0.0,
            "fetched_at": [START + 10 * SECONDS, *(bar + 10 * SECONDS for bar in BARS)],
        }
    )
    later = pd.DataFrame(columns=["asset", "shares", "price", "notional", "fee", "filled_at"])
    return dict(
        statistics=statistics, holdings=holdings, fills=fills, later_fills=later, income=income, account=account
    )


def check(**frames):
    return check_statement(**frames, taker_fee=0.0005, bar=MINUTE)


def test_the_portfolio_and_the_exchange_agree_to_the_cent():
    result = check(**statement())
    assert result.divergence is None, result.verdict()
    totals = result.to_dict()["totals"]
    assert totals["realized_pnl"] == {"portfolio": pytest.approx(10.0), "exchange": pytest.approx(10.0)}
    assert totals["fees"]["expected"] == pytest.approx(0.16) and totals["funding"]["exchange"] == 1.05
    assert totals["wallet"]["exchange"] == pytest.approx(10.89)


def test_funding_booked_a_bar_late_is_allowed_two_bars_late_is_not():
    assert check(**statement(funding_booked_at=BARS[3])).divergence is None
    frames = statement(funding_booked_at=BARS[3] + MINUTE)  # after the session: never booked
    divergence = check(**frames).divergence
    assert divergence["component"] == "funding" and divergence["bar_end"] == BARS[3].isoformat()


def test_a_row_recorded_twice_or_a_fee_not_the_configs_diverges():
    frames = statement()
    frames["income"] = pd.concat([frames["income"], frames["income"].iloc[[1]]], ignore_index=True)
    divergence = check(**frames).divergence  # the wallet did not move twice: the first sign, a bar early
    assert divergence["component"] == "wallet" and divergence["bar_end"] == BARS[1].isoformat()
    frames = statement()
    frames["fills"]["fee"] *= 2
    frames["statistics"]["fees"] *= 2
    frames["income"].loc[frames["income"]["income_type"] == "COMMISSION", "income"] *= 2
    frames["account"]["wallet_balance"] = [1000.0, 999.90, 1009.68, 1010.73, 1010.73]
    divergence = check(**frames).divergence
    assert divergence["component"] == "fees" and "fee model" in divergence["what"]


def test_a_statement_before_any_traded_bar_has_nothing_to_compare():
    frames = statement()
    frames["statistics"] = frames["statistics"].iloc[:0]
    result = check(**frames)
    assert result.available and result.agrees and "nothing to compare" in result.verdict()
    assert result.to_dict()["totals"] == {}


def test_a_simulation_has_no_exchange_statement(simulated_day):
    config, log_dir = simulated_day
    result = check_log_dir(log_dir, config.costs.fees.taker, config.bar_delta)
    assert not result.available and result.agrees and result.verdict() == NO_STATEMENT
    assert result.to_dict() == {"available": False, "verdict": NO_STATEMENT}


def test_a_settlement_stamped_after_its_minute_and_a_fill_before_the_baseline_agree():
    """Binance stamps a settlement a few ms after its minute: it belongs to the bar that holds the
    minute. A chained session's first fill (the previous session's last order) lands before the
    session's baseline balance is read: the wallet's change still counts it, as the portfolio does."""
    frames = statement()
    settled = frames["income"]["income_type"] == "FUNDING_FEE"
    frames["income"].loc[settled, "income_at"] = SETTLEMENT + pd.Timedelta(milliseconds=5)
    assert check(**frames).divergence is None, check(**frames).verdict()

    frames = statement()
    buy = START + 2 * SECONDS  # before the baseline, read at START + 10 s
    frames["fills"].loc[0, ["bar_end", "filled_at"]] = [BARS[0], buy + SECONDS]
    frames["statistics"]["fees"] = [0.05, 0.0, 0.11, 0.0]
    frames["holdings"]["shares"] = [1.0, 1.0, -1.0, -1.0]
    frames["income"].loc[0, ["income_at", "bar_end"]] = [buy, START]
    frames["account"]["wallet_balance"] = [999.95, 999.95, 1009.84, 1010.89, 1010.89]
    result = check(**frames)
    assert result.divergence is None, result.verdict()
