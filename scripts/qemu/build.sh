#!/usr/bin/env bash
# Fetch the Debian kernel package (apt-get download) into .cache/qemu, extract vmlinux and
# build the busybox initramfs for the QEMU tests.  Idempotent: reuses the cache.
#   scripts/qemu/build.sh            build
#   scripts/qemu/run.sh CMD...       boot once and run CMD in the repository (see run.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 tests/qemu/qemu_harness.py build
