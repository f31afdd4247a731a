"""Portfolio vs exchange: a prod session's own accounts set beside the exchange's statement.

A prod session records the exchange's income history (``broker/income``: REALIZED_PNL, COMMISSION,
FUNDING_FEE rows) and balances (``broker/account``) as it trades. Per bar, cumulative since the
session's start, to the cent (``TOLERANCE``) per component:

- **realized PnL**: the portfolio's, computed from its fills by Binance's rule (the average entry
  price; PnL realized on the part of a fill that reduces the position), against REALIZED_PNL. An
  asset the session opened holding has no entry price in the session: its realized PnL is compared
  from the first time it is flat (both sides leave out the fills before).
- **fees**: the fees the portfolio booked (the exchange's own trade list, through the broker) against
  COMMISSION, and COMMISSION against what the config's fee model expects on the fills' notional
  (the taker rate: the broker sends market orders). A fee changed on the exchange behind the
  config's back shows here, even though the booked fees follow the exchange.
- **funding**: the portfolio's funding (from the funding data) against FUNDING_FEE. A settlement
  whose rate reached the session late is booked a bar later by the portfolio: the portfolio may lag
  the exchange by one bar, no more.
- **wallet**: the exchange's wallet balance change since the session's start (its balances before
  the first order) against the portfolio's realized PnL - fees + funding, plus the exchange's rows
  the portfolio books at a later bar (a bar's market orders fill after the bar: the portfolio
  applies them at the next). Margin balance is not compared: it marks positions at the exchange's
  price of the moment of the pull, the portfolio at the bar's close.

An exchange row belongs to the bar that books it: a trade's rows to the fill the portfolio counted
it in (the first fill of the asset counted at or after the row's time), a settlement's to the bar
that contains it. Trade rows of fills counted after the last bar (applied by the next session) are
left to it; a row no fill accounts for is a divergence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from prod_system.log_dir import LogDir

TOLERANCE = 0.01  # USDT, cumulative per component: to the cent
COUNTING_SLACK = pd.Timedelta(seconds=1)  # the session's clock against the exchange's, when a fill is counted
NO_STATEMENT = "no exchange statement (mocked broker)"
COMPONENTS = ("realized_pnl", "fees", "funding", "wallet")


@dataclass
class StatementCheck:
    """The section's figures: per bar, each component's cumulative values side by side."""

    per_bar: pd.DataFrame = field(default_factory=pd.DataFrame)
    divergence: dict | None = None
    notes: list[str] = field(default_factory=list)
    available: bool = False

    @property
    def agrees(self) -> bool:
        return not self.available or self.divergence is None

    def verdict(self) -> str:
        if not self.available:
            return NO_STATEMENT
        if self.per_bar.empty:
            return "an exchange statement, but no traded bar it covers: nothing to compare"
        if self.divergence is None:
            last = self.per_bar.iloc[-1]
            return (
                f"portfolio and exchange agree to the cent over {len(self.per_bar)} bars: realized PnL "
                f"{last['exchange_realized_pnl']:,.2f}, fees {last['exchange_fees']:,.2f}, funding "
                f"{last['exchange_funding']:,.2f} USDT"
            )
        d = self.divergence
        return (
            f"PORTFOLIO AND EXCHANGE DIVERGE at {d['bar_end']} in {d['component']}: {d['what']} "
            f"(portfolio {d['portfolio']:,.4f}, exchange {d['exchange']:,.4f} USDT)"
        )

    def to_dict(self) -> dict:
        if not self.available:
            return {"available": False, "verdict": NO_STATEMENT}
        totals = {}
        if not self.per_bar.empty:
            last = self.per_bar.iloc[-1]
            totals = {
                c: {"portfolio": float(last[f"portfolio_{c}"]), "exchange": float(last[f"exchange_{c}"])}
                for c in COMPONENTS
            }
            totals["fees"]["expected"] = float(last["expected_fees"])
        return {
            "available": True,
            "agrees": self.agrees,
            "verdict": self.verdict(),
            "tolerance_usdt": TOLERANCE,
            "bars": len(self.per_bar),
            "totals": totals,
            "first_divergence": self.divergence,
            "notes": self.notes,
        }


BALANCE_SOURCES = {True: "the exchange's wallet balance", False: "the portfolio's net wealth"}


@dataclass(frozen=True)
class Balance:
    """The account's balance now: its value (USDT), what it is, and when it was taken."""

    value: float
    source: str  # BALANCE_SOURCES[through an exchange]
    at: pd.Timestamp  # the exchange's: when the session fetched it; the portfolio's: its bar's end


def last_account(logs: LogDir) -> pd.Series | None:
    """The exchange's account as the session last fetched it (``broker/account``: the row with a wallet
    balance and the latest ``fetched_at``, then ``bar_end``); None before the first fetch or without an
    exchange."""
    return _last(logs, "broker/account", "wallet_balance", ["fetched_at", "bar_end"])


def last_statistics(logs: LogDir) -> pd.Series | None:
    """The portfolio at its last bar (``portfolio/statistics``, with a net wealth); None before its first bar."""
    return _last(logs, "portfolio/statistics", "net_wealth", ["bar_end"])


def balance_now(logs: LogDir, through_exchange: bool) -> Balance | None:
    """The account's balance now: through an exchange, its wallet balance as the session last fetched it
    (``last_account``); else (paper, simulation) the portfolio's net wealth at its last bar. None when not
    recorded yet. The observer's threshold alert and its notebook's account section both read it here."""
    if through_exchange:
        row = last_account(logs)
        return None if row is None else Balance(float(row["wallet_balance"]), BALANCE_SOURCES[True], row["fetched_at"])
    row = last_statistics(logs)
    return None if row is None else Balance(float(row["net_wealth"]), BALANCE_SOURCES[False], row["bar_end"])


def _last(logs: LogDir, table: str, column: str, order: list[str]) -> pd.Series | None:
    try:
        rows = logs.read_table(table)
    except FileNotFoundError:
        return None
    rows = rows.dropna(subset=[column]).sort_values(order, kind="stable")
    return rows.iloc[-1] if len(rows) else None


def check_log_dir(path: str | Path, taker_fee: float, bar: pd.Timedelta) -> StatementCheck:
    """The section for a run's log dir (a run without ``broker/income``: not available)."""
    logs = LogDir(path)
    if not (logs.path / "broker" / "income").exists():
        return StatementCheck()
    if not (logs.path / "portfolio" / "statistics").exists():  # a session that has not traded a bar yet
        return StatementCheck(per_bar=_empty(), available=True)
    try:
        fills = logs.read_table("fills")
    except FileNotFoundError:
        fills = pd.DataFrame(columns=["bar_end", "asset", "shares", "price", "notional", "fee", "filled_at"])
    state = logs.path / "state.json"
    later = json.loads(state.read_text()).get("unapplied_fills", []) if state.exists() else []
    return check_statement(
        statistics=logs.read_table("portfolio/statistics"),
        holdings=logs.read_table("portfolio/holdings_shares"),
        fills=fills,
        later_fills=pd.DataFrame(later, columns=["asset", "shares", "price", "notional", "fee", "filled_at"]),
        income=logs.read_table("broker/income"),
        account=logs.read_table("broker/account"),
        taker_fee=taker_fee,
        bar=bar,
    )


def check_statement(
    statistics: pd.DataFrame,
    holdings: pd.DataFrame,
    fills: pd.DataFrame,
    later_fills: pd.DataFrame,
    income: pd.DataFrame,
    account: pd.DataFrame,
    taker_fee: float,
    bar: pd.Timedelta,
) -> StatementCheck:
    """Portfolio vs exchange over the bars the statement covers (up to its last pull)."""
    notes: list[str] = []
    bars = pd.DatetimeIndex(statistics["bar_end"]).sort_values()
    if len(account):
        bars = bars[bars <= account["bar_end"].max()]
    if not len(bars):
        return StatementCheck(available=True, notes=["no bar covered by the exchange's statement"], per_bar=_empty())
    fills = _counted(fills, bars[-1], later_fills)
    opening = _opening_shares(holdings, fills, bars[0])
    fills, carried = _realized(fills, opening)
    if carried:
        notes.append(f"held at the start ({', '.join(carried)}): realized PnL compared from the first time flat")
    rows = _attribute(income, fills, bar, bars[-1], notes)

    per_bar = pd.DataFrame(index=bars)
    in_session = fills[fills["bar_end"].notna()]
    per_bar["portfolio_realized_pnl"] = _per_bar(in_session[in_session["entry_known"]], "realized", bars)
    per_bar["portfolio_fees"] = statistics.set_index("bar_end")["fees"].reindex(bars).fillna(0.0).to_numpy()
    per_bar["expected_fees"] = _per_bar(
        in_session.assign(expected=in_session["notional"].abs() * taker_fee), "expected", bars
    )
    per_bar["portfolio_funding"] = statistics.set_index("bar_end")["funding"].reindex(bars).fillna(0.0).to_numpy()
    realized = rows[rows["income_type"] == "REALIZED_PNL"]
    per_bar["exchange_realized_pnl"] = _per_bar(realized[realized["entry_known"]], "income", bars)
    per_bar["exchange_fees"] = -_per_bar(rows[rows["income_type"] == "COMMISSION"], "income", bars)
    per_bar["exchange_funding"] = _per_bar(rows[rows["income_type"] == "FUNDING_FEE"], "income", bars)
    # the realized PnL of positions held at the start, before they are flat: the portfolio has no entry
    # price for them, the wallet takes the exchange's figure
    carried_realized = _per_bar(realized[~realized["entry_known"]], "income", bars).cumsum()
    cumulative = per_bar.cumsum()
    cumulative["portfolio_wallet"] = (
        cumulative["portfolio_realized_pnl"]
        + carried_realized
        - cumulative["portfolio_fees"]
        + cumulative["portfolio_funding"]
    )
    cumulative["exchange_wallet"] = _wallet_change(account, rows, bars, notes)
    cumulative = cumulative.rename_axis("bar_end").reset_index()
    return StatementCheck(cumulative, _first_divergence(cumulative), notes, available=True)


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=["bar_end", *[f"{s}_{c}" for c in COMPONENTS for s in ("portfolio", "exchange")]])


def _counted(fills: pd.DataFrame, last_bar: pd.Timestamp, later: pd.DataFrame) -> pd.DataFrame:
    """The session's fills in the order they were counted: those applied at its bars, then those
    counted after its last bar (applied by the next session: ``bar_end`` NaT)."""
    fills = fills[fills["bar_end"] <= last_bar][["bar_end", "asset", "shares", "price", "notional", "fee", "filled_at"]]
    later = later.assign(bar_end=pd.NaT, filled_at=pd.to_datetime(later["filled_at"], utc=True))
    frames = [f for f in (fills, later[fills.columns]) if len(f)]
    if not frames:
        return fills.assign(filled_at=pd.to_datetime(fills["filled_at"], utc=True))
    out = pd.concat(frames, ignore_index=True)
    out["bar_end"] = pd.to_datetime(out["bar_end"], utc=True)
    return out.sort_values("filled_at", kind="stable").reset_index(drop=True)


def _opening_shares(holdings: pd.DataFrame, fills: pd.DataFrame, first_bar: pd.Timestamp) -> dict[str, float]:
    """Per asset, the shares held before the first bar's fills."""
    first = holdings[holdings["bar_end"] == first_bar].set_index("asset")["shares"]
    applied = fills[fills["bar_end"] == first_bar].groupby("asset")["shares"].sum()
    return (first - applied.reindex(first.index, fill_value=0.0)).round(10).to_dict()


def _realized(fills: pd.DataFrame, opening: dict[str, float]) -> tuple[pd.DataFrame, list[str]]:
    """Each fill's realized PnL by Binance's rule (average entry price, PnL on the reducing part), and
    whether the entry price was known (a position held at the start has none until it is flat)."""
    position = {asset: shares for asset, shares in opening.items()}
    entry: dict[str, float] = {}
    known = {asset: shares == 0 for asset, shares in opening.items()}
    realized, entry_known = [], []
    for asset, shares, price in zip(fills["asset"], fills["shares"], fills["price"], strict=True):
        held, was_known = position.get(asset, 0.0), known.get(asset, True)
        new = round(held + shares, 10)
        pnl = 0.0
        if held == 0 or (held > 0) == (shares > 0):
            if was_known:
                entry[asset] = (abs(held) * entry.get(asset, 0.0) + abs(shares) * price) / abs(new)
        else:
            if was_known:
                pnl = min(abs(shares), abs(held)) * (price - entry[asset]) * (1 if held > 0 else -1)
            if new == 0:
                known[asset], entry[asset] = True, 0.0
            elif (new > 0) != (held > 0):
                known[asset], entry[asset] = True, price
        position[asset] = new
        realized.append(pnl)
        entry_known.append(was_known)
    carried = sorted(asset for asset, shares in opening.items() if shares != 0)
    return fills.assign(realized=realized, entry_known=entry_known), carried


def _attribute(
    income: pd.DataFrame, fills: pd.DataFrame, bar: pd.Timedelta, last_bar: pd.Timestamp, notes: list[str]
) -> pd.DataFrame:
    """The exchange's rows, each with the bar that books it (NaT: after the last bar) and whether its
    fill's entry price is known to the portfolio."""
    rows = income.drop(columns="bar_end").reset_index(drop=True)  # a row recorded twice counts twice: loudly
    rows["booked_at"], rows["entry_known"] = pd.NaT, True
    rows["booked_at"] = pd.to_datetime(rows["booked_at"], utc=True)
    trades = rows["income_type"].isin(["REALIZED_PNL", "COMMISSION"])
    unaccounted = 0
    for asset, group in rows[trades].groupby("asset"):
        counted = fills[fills["asset"] == asset]
        times = counted["filled_at"].to_numpy()
        at = np.searchsorted(times, (group["income_at"] - COUNTING_SLACK).to_numpy(), side="left")
        found = at < len(counted)
        chosen = counted.iloc[np.minimum(at, max(len(counted) - 1, 0))] if len(counted) else None
        if chosen is not None:
            rows.loc[group.index[found], "booked_at"] = chosen["bar_end"].to_numpy()[found]
            rows.loc[group.index[found], "entry_known"] = chosen["entry_known"].to_numpy()[found]
        unaccounted += int((~found).sum())
        # a row no fill accounts for stays unbooked: it shows as a divergence at the last bar
        rows.loc[group.index[~found], "booked_at"] = last_bar
    settled = rows["income_type"] == "FUNDING_FEE"
    # a settlement belongs to the bar that holds its minute (Binance stamps it a few ms after the hour)
    rows.loc[settled, "booked_at"] = rows.loc[settled, "income_at"].dt.floor("min").dt.ceil(bar)
    later = rows[rows["booked_at"].isna() | (rows["booked_at"] > last_bar)]
    if len(later):
        notes.append(f"{len(later)} exchange rows ({later['income'].sum():,.4f} USDT) are booked after the last bar")
    if unaccounted:
        notes.append(f"{unaccounted} exchange trade rows match no fill of the portfolio")
    return rows


def _per_bar(rows: pd.DataFrame, column: str, bars: pd.DatetimeIndex) -> np.ndarray:
    by = "booked_at" if "booked_at" in rows else "bar_end"
    kept = rows[rows[by].notna()]
    return kept.groupby(by)[column].sum().reindex(bars, fill_value=0.0).to_numpy(dtype="float64")


def _wallet_change(account: pd.DataFrame, rows: pd.DataFrame, bars: pd.DatetimeIndex, notes: list[str]) -> np.ndarray:
    """Per bar, the exchange's wallet change since the session's start, less the rows pulled by then
    that the portfolio books at a later bar; NaN at a bar without a pull (or without the baseline)."""
    out = np.full(len(bars), np.nan)
    start = account["bar_end"].min() if len(account) else None
    if start is None or start >= bars[0]:
        notes.append("no balance before the first order: the wallet is not compared")
        return out
    opening = account[account["bar_end"] == start].iloc[0]
    booked = rows["booked_at"].fillna(pd.Timestamp.max.tz_localize("UTC"))
    # rows already in the baseline that the session books (the previous session's last orders, filled as
    # this one started and applied at its first bar): the wallet's change counts them, as the portfolio does
    before = rows[(rows["income_at"] <= opening["fetched_at"]) & (booked <= bars[-1])]["income"].sum()
    baseline = float(opening["wallet_balance"]) - before
    pulls = account[account["bar_end"].isin(bars)].drop_duplicates("bar_end", keep="last")
    for bar_end, wallet, fetched_at in zip(pulls["bar_end"], pulls["wallet_balance"], pulls["fetched_at"], strict=True):
        ahead = rows[(rows["income_at"] <= fetched_at) & (booked > bar_end)]["income"].sum()
        out[bars.get_loc(bar_end)] = wallet - baseline - ahead
    return out


def _first_divergence(frame: pd.DataFrame) -> dict | None:
    """The first bar where a component differs by more than TOLERANCE (funding: the portfolio may be a
    bar behind the exchange)."""
    for i, row in frame.iterrows():
        checks = [
            ("realized_pnl", row["portfolio_realized_pnl"], row["exchange_realized_pnl"], "realized PnL"),
            ("fees", row["portfolio_fees"], row["exchange_fees"], "fees booked vs fees the exchange charged"),
            (
                "fees",
                row["expected_fees"],
                row["exchange_fees"],
                "the exchange charged other fees than the config's fee model expects on the fills' notional",
            ),
            ("funding", row["portfolio_funding"], row["exchange_funding"], "funding"),
            ("wallet", row["portfolio_wallet"], row["exchange_wallet"], "wallet balance change"),
        ]
        late_funding = 0.0
        for component, portfolio, exchange, what in checks:
            if component == "wallet" and not np.isfinite(exchange):
                continue
            if component == "wallet":
                portfolio += late_funding
            if abs(portfolio - exchange) <= TOLERANCE:
                continue
            if component == "funding" and i > 0 and abs(portfolio - frame.at[i - 1, "exchange_funding"]) <= TOLERANCE:
                late_funding = exchange - portfolio  # a settlement the portfolio books a bar late
                continue
            return {
                "bar_end": row["bar_end"].isoformat(),
                "component": component,
                "what": what,
                "portfolio": float(portfolio),
                "exchange": float(exchange),
            }
    return None
