#!/usr/bin/env bash
# Boot the Debian kernel under QEMU (TCG) and run one command in the repository, e.g.
#   scripts/qemu/run.sh .venv/bin/python -m pytest tests/dataplane/xfrm/guest -q
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 tests/qemu/qemu_harness.py run -- "$@"
