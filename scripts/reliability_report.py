"""Regenerate docs/reliability.md: run the fault tests, collect what each measured, write the figures.

    python scripts/reliability_report.py [--load FILE] [--out docs/reliability.md]

The fault tests (exchange faults, process faults, bad market data, bad config and input files,
secrets) run with PROD_SYSTEM_RELIABILITY_LOG set: each records what it injected and what came of it
(orders duplicated, fills lost, bars traded on bad data, secret occurrences); the bad-input tables
are counted from pytest's JUnit report. ``--load`` adds the output of benchmarks/live_load.py (the
30-bar, 40-asset session with 200 ms per request; it takes half an hour, so it is run on its own).
The script fails if any of these tests fails: the page only ever shows figures of a passing run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = [
    "prod_system_tests/trading/brokers/test_exchange_broker.py",
    "prod_system_tests/runs/test_live.py",
    "prod_system_tests/data/test_data_guard.py",
    "prod_system_tests/test_disk_full.py",
    "prod_system_tests/test_secrets.py",
    "prod_system_tests/test_bad_config.py",
    "prod_system_tests/cli/test_cli.py",
]
# parametrized tables of bad input: each case is one clear error line and nothing written
BAD_INPUT_TESTS = {
    "test_bad_input_is_one_clear_line": "CLI arguments",
    "test_bad_input_is_an_error_line_a_hint_and_its_exit_code": "CLI arguments (with hint and exit code)",
    "test_a_malformed_field_is_one_clear_error_naming_it": "config fields",
    "test_a_bad_input_file_is_one_clear_error_naming_it": "input files",
}
KINDS = {
    "exchange": "Exchange faults (local exchange's fault injection, real ccxt client)",
    "process": "Process faults",
    "market_data": "Bad market data",
    "secrets": "Secrets",
}


def client_id_rule() -> str:
    """What the local exchange does with a reused client order id in these runs: the duplicate figure
    means something only if the exchange would have accepted a second order."""
    sys.path.insert(0, str(REPO))
    from prod_system.exchange.engine import EngineConfig

    if EngineConfig().strict_client_order_ids:
        return (
            "The local exchange refused every reused `newClientOrderId` (stricter than Binance): the duplicate "
            "figure below could not fail."
        )
    return (
        "The local exchange follows Binance's client-id rule: `newClientOrderId` is unique among *open* orders "
        "only, so a filled order's id is accepted again and trades again. Nothing but the broker stands "
        'between a resend and a duplicate: "orders duplicated" below counts orders the exchange really placed twice.'
    )


def run_tests(work: Path) -> tuple[list[dict], dict[str, int], float]:
    log, junit = work / "reliability.jsonl", work / "junit.xml"
    env = {**os.environ, "PROD_SYSTEM_RELIABILITY_LOG": str(log)}
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *TESTS],
        cwd=REPO,
        env=env,
    )
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"the fault tests failed (exit {done.returncode}): docs/reliability.md not written")
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    cases: dict[str, int] = defaultdict(int)
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "").split("[")[0]
        if name in BAD_INPUT_TESTS and case.find("failure") is None and case.find("error") is None:
            cases[BAD_INPUT_TESTS[name]] += 1
    return records, dict(cases), seconds


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def render(records: list[dict], cases: dict[str, int], seconds: float, load: str | None) -> str:
    injected = sum(int(r.get("injected") or 0) for r in records if r["kind"] in ("exchange", "process", "market_data"))
    kills = sum(int(r["injected"]) for r in records if r["what"].startswith("kill -9"))
    duplicated = sum(int(r.get("duplicated") or 0) for r in records)
    lost = sum(float(r.get("lost") or 0) for r in records)
    traded_on_bad = sum(int(r.get("traded_on_it") or 0) for r in records)
    occurrences = sum(int(r.get("occurrences") or 0) for r in records)
    lines = [
        "# Reliability: faults, bad input, secrets and load",
        "",
        "Written by `python scripts/reliability_report.py` (do not edit by hand): it runs the fault tests,",
        f"which record what they injected and what came of it. Commit {commit()}; the tests took",
        f"{seconds:.0f} s on this run.",
        "",
        client_id_rule(),
        "",
        "| figure | value |",
        "|---|---|",
        f"| faults injected (exchange, process, market data) | {injected} |",
        f"| kill -9 survived (sessions restarted after each) | {kills} |",
        f"| bad inputs tried (CLI arguments, config fields, input files) | {sum(cases.values())} |",
        f"| orders duplicated | {duplicated} |",
        f"| fills lost | {lost:g} |",
        f"| bars traded on bad market data | {traded_on_bad} |",
        f"| secret occurrences in outputs | {occurrences} |",
        "",
    ]
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_kind[record["kind"]].append(record)
    for kind, title in KINDS.items():
        rows = by_kind.get(kind, [])
        if not rows:
            continue
        lines += [f"## {title}", "", "| fault | injected | duplicated | lost | traded on it | outcome | test |"]
        lines += ["|---|---|---|---|---|---|---|"]
        for r in rows:
            test = r["test"].split("::")[-1]
            figures = [r.get("injected", ""), r.get("duplicated", "-"), r.get("lost", "-"), r.get("traded_on_it", "-")]
            lines.append(
                f"| {r['what']} | " + " | ".join(str(f) for f in figures) + f" | {r.get('outcome', '')} | `{test}` |"
            )
        lines.append("")
    lines += ["## Bad config and input files", "", "| table | cases passed |", "|---|---|"]
    lines += [f"| {name} | {count} |" for name, count in cases.items()]
    lines += [
        "",
        "Each case: exit code 2, exactly one `error:` line naming the field or file, a `hint:` line, no",
        "traceback, nothing written.",
        "",
        "## Load",
        "",
    ]
    if load:
        lines += [
            "`python benchmarks/live_load.py --bars 30` (40 assets, 1-minute bars, real clock, local exchange",
            "with 200 ms added to every request):",
            "",
            "```",
            load.strip(),
            "```",
            "",
        ]
    else:
        lines += [
            "Not run here: `python benchmarks/live_load.py --bars 30 > load.txt`, then this script with",
            "`--load load.txt`.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", type=Path, help="output of benchmarks/live_load.py to include")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "reliability.md")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        records, cases, seconds = run_tests(Path(folder))
    load = options.load.read_text() if options.load else None
    options.out.write_text(render(records, cases, seconds, load))
    print(f"wrote {options.out}: {len(records)} fault records, {sum(cases.values())} bad inputs")


if __name__ == "__main__":
    main()
