#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine, then runs it:
# lint (ruff), unit + app tests (pytest), and the real-browser tests (Debian chromium).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1 && [ -z "${ETR_CHROMIUM:-}" ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        echo "== installing Debian chromium for the browser tests"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
            || echo "!! chromium could not be installed; browser tests will be SKIPPED"
    else
        echo "!! no chromium and no root apt-get; browser tests will be SKIPPED"
    fi
fi

echo "== installing Python requirements"
python3 -m pip install -q --disable-pip-version-check -r requirements-test.txt
python3 -m pip install -q --disable-pip-version-check --no-deps -e .

echo "== ruff check"
python3 -m ruff check .

echo "== pytest"
set +e
python3 -m pytest -q -rs "$@"
status=$?
set -e
if [ "$status" = "5" ]; then
    echo "!! pytest collected no tests"
    exit 1
fi
exit "$status"
