# Sourced by the other scripts: create (once) and activate the project's virtualenv in .venv.
# Needs only Python 3.11+ on the machine; reinstalls when pyproject.toml changes.
set -euo pipefail
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  rm -f .venv/.installed-* && touch "$stamp"
fi
# shellcheck disable=SC1091
source .venv/bin/activate
# the repo's dagster.yaml configures the instance; runs launched by the CLI show up in `dagster dev`
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD}"
