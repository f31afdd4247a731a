# Sourced by the other scripts and by users (`source scripts/env.sh`): create (once) and activate the
# project's virtualenv in .venv. Needs only Python 3.11+ on the machine; reinstalls when pyproject.toml
# changes. A sourced file runs in the caller's shell, so this one changes no shell option (no `set -e`:
# in an interactive shell the next failing command would close the terminal) and leaves no variable
# behind but the venv's and DAGSTER_HOME; a failed install returns non-zero and activates nothing.
_prod_system_env() {
  local repo real python stamp
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
  # the package installs from the real folder (-P), also when scripts/ is a link (the tour test links
  # it): installed from the link's folder, the venv's commands would point at a folder that goes away
  real="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
  python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
  if [ ! -x "$repo/.venv/bin/python" ]; then
    "$python" -m venv "$repo/.venv" || return 1
  fi
  stamp="$repo/.venv/.installed-$(sha256sum "$repo/pyproject.toml" | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    "$repo/.venv/bin/python" -m pip install --quiet --upgrade pip || return 1
    "$repo/.venv/bin/python" -m pip install --quiet -e "$real[dev]" || return 1
    rm -f "$repo"/.venv/.installed-* && touch "$stamp"
  fi
  # shellcheck disable=SC1091
  source "$repo/.venv/bin/activate" || return 1
  # the repo's dagster.yaml configures the instance; runs launched by the CLI show up in `dagster dev`
  export DAGSTER_HOME="${DAGSTER_HOME:-$repo}"
}
if _prod_system_env; then
  unset -f _prod_system_env
else
  unset -f _prod_system_env
  return 1
fi
