#!/usr/bin/env bash
# Installs rbipsec with its test dependencies into .venv and runs the whole
# test suite, then the linters. Root-only tests skip with a reason when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
    echo "pytest collected no tests: failing on purpose" >&2
    exit 1
fi
[ "$rc" = 0 ] || exit "$rc"
.venv/bin/ruff check core tui tests bench
.venv/bin/mypy
