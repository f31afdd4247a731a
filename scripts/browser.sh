# Sourced by scripts/test.sh: make sure a Chromium is there for the browser tests (the UI test drives it
# with Playwright; Playwright's own browser download is not used). Debian/Ubuntu: the system's
# chromium package, installed when missing (as root or with sudo). Elsewhere: set PROD_SYSTEM_CHROMIUM
# to a Chromium or Chrome executable. Without one, the browser test fails with a clear message.
if [ -z "${PROD_SYSTEM_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
    echo "installing Chromium for the browser tests (apt-get install chromium)" >&2
    $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
      || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq chromium >/dev/null 2>&1; } \
      || echo "could not install Chromium: the browser test will fail; set PROD_SYSTEM_CHROMIUM" >&2
  else
    echo "no Chromium and no apt-get: set PROD_SYSTEM_CHROMIUM for the browser test" >&2
  fi
fi
