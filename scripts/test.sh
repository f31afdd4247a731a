#!/usr/bin/env bash
# Set up (first time) and run every check: ruff lint, ruff format, the whole pytest suite (which drives
# the Dagster UI in headless Chromium: scripts/browser.sh installs the system's Chromium when missing).
# The suite runs on two workers (pytest-xdist); the tests marked wall_clock run one at a time on one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/browser.sh
export DAGSTER_HOME="$(mktemp -d)"  # the tests never touch a developer's instance
ruff check .
ruff format --check .
python -m pytest -n 2 --dist loadgroup "$@"
