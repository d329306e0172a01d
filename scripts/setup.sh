#!/usr/bin/env bash
# One-step setup: installs vlens with every extra the test suite needs, plus Debian's
# headless Chromium for the browser tests (when run as root and it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -e ".[dev]"
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; browser tests will be skipped" >&2
  else
    echo "note: install Chromium (e.g. 'apt-get install chromium') to run the browser tests" >&2
  fi
fi
echo "vlens is set up. Run the tests with: python3 -m pytest"
