"""What the observer alerts on, from its summary of a run: production diverging from research (the
``matches_research`` verdict), and the config's thresholds (``observer.min_balance``,
``min_cumulative_pnl``, ``min_pnl_over_gmv``; None: off). The observer sends what this returns
(``Notifier.send_all``); this module decides, the notifier delivers and rate-limits.

Cause keys: a divergence per run and first divergent bar (the observer looks every few minutes: the
same divergence is one message per repeat window), a threshold per model, mode and threshold.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from prod_system.alerts import Alert, AlertKind, Notifier, cause_of, run_subject
from prod_system.analysis.statement import BALANCE_SOURCES, balance_now
from prod_system.config import SystemConfig
from prod_system.log_dir import LogDir

logger = logging.getLogger(__name__)


def observer_alerts(summary: dict, config: SystemConfig) -> list[Alert]:
    """The alerts of one observation: DIVERGENCE when the run does not reconcile with research (with its
    first divergence), THRESHOLD for each configured threshold crossed."""
    alerts = []
    subject = run_subject(config)
    if not summary.get("reconciled", True):
        divergence = summary.get("first_divergence")
        where = (
            f"first divergence at {divergence['bar_end']} on {divergence['asset']} ({divergence['what']})"
            if divergence
            else "no single bar beyond tolerance"
        )
        verdict = str(summary.get("verdict", "NOT reconciled"))
        said = verdict if where in verdict else f"{where}; {verdict}"
        message = f"the run of {config.start.isoformat()} to {config.end.isoformat()} does not match research: {said}"
        cause = f"{cause_of(AlertKind.DIVERGENCE, config)}|{config.start.isoformat()}|{where}"
        alerts.append(Alert(AlertKind.DIVERGENCE, subject, message, cause))
    for name, value, label, floor in _thresholds(summary, config):
        if floor is None or value is None or not math.isfinite(value) or value >= floor:
            continue
        shown = ".4f" if name == "min_pnl_over_gmv" else ",.2f"
        alerts.append(
            Alert(
                AlertKind.THRESHOLD,
                subject,
                f"{label} {value:{shown}} below {name} {floor:{shown}} (the run of {config.start.isoformat()})",
                cause_of(AlertKind.THRESHOLD, config, name),
            )
        )
    return alerts


def send_observer_alerts(summary: dict, config: SystemConfig) -> int:
    """Send the observation's alerts (``observer_alerts``), rate-limited under the run's log root (found
    from its log dir: the observer may run elsewhere than the run); how many messages went out."""
    log_dir = Path(summary.get("log_dir") or config.log_dir())
    depth = len(config.log_dir().relative_to(config.log_root).parts)  # {root}/{model}/.../system_log_dir
    return Notifier(config.alerts, log_dir.parents[depth - 1]).send_all(observer_alerts(summary, config))


def _thresholds(summary: dict, config: SystemConfig) -> list[tuple[str, float | None, str, float | None]]:
    """Each threshold: its name, the run's figure, what the figure is, and the configured floor."""
    observer = config.observer
    balance, source = _balance(summary, config) if observer.min_balance is not None else (None, "")
    return [
        ("min_balance", balance, f"balance ({source}, USDT)", observer.min_balance),
        (
            "min_cumulative_pnl",
            summary.get("cumulative_pnl_prod"),
            "cumulative PnL (USDT)",
            observer.min_cumulative_pnl,
        ),
        ("min_pnl_over_gmv", _pnl_over_gmv(summary), "cumulative PnL / mean GMV", observer.min_pnl_over_gmv),
    ]


def _balance(summary: dict, config: SystemConfig) -> tuple[float | None, str]:
    """The account's balance now (``statement.balance_now``): through an exchange its wallet balance as
    the session last fetched it, else the portfolio's net wealth. None when not recorded yet."""
    logs = LogDir(Path(summary.get("log_dir") or config.log_dir()))
    through_exchange = config.broker.kind == "ccxt"
    balance = balance_now(logs, through_exchange)
    if balance is None:
        logger.info("no balance in %s yet: the balance threshold waits for it", logs.path)
        return None, BALANCE_SOURCES[through_exchange]
    return balance.value, balance.source


def _pnl(summary: dict) -> float | None:
    """The run's cumulative PnL over the observed bars (USDT, net of costs)."""
    pnl = summary.get("cumulative_pnl_prod")
    return None if pnl is None else float(pnl)


def _pnl_over_gmv(summary: dict) -> float | None:
    """Cumulative PnL over the mean gross market value of the observed bars (None when nothing was held)."""
    pnl = _pnl(summary)
    mean_gmv = (summary.get("performance") or {}).get("mean_gmv")
    if pnl is None or not mean_gmv or mean_gmv <= 0:
        return None
    return pnl / float(mean_gmv)
