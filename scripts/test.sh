#!/usr/bin/env bash
# Set up the venv with test extras and run the test suite (slow tests excluded by default; `-m slow` runs them).
# The browser test of the HTML report needs Debian's chromium + chromium-driver; in CI (CI=true, as root) they are
# installed here, elsewhere the test is skipped with a message when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
if [ "${CI:-}" = "true" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null \
   && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then
  echo "[test] installing chromium + chromium-driver for the report's browser test"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
    || echo "[test] could not install chromium; the browser test will be skipped"
fi
exec .venv/bin/python -m pytest "$@"
