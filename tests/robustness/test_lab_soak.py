"""Soak in CI: up/down cycles of 16 peers for about 30 s (root, namespaces), then no growth
in file descriptors, threads, interfaces, routes or SAs, and RSS within 8 MiB of where
it stood after the warm-up.  RBIPSEC_SOAK_PEERS / RBIPSEC_SOAK_SECONDS change the size;
bench/bench_soak.py runs the long figure (1,000 cycles of 64 peers).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.robustness import soak
from tests.robustness.lab import NetLab

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

PEERS = int(os.environ.get("RBIPSEC_SOAK_PEERS", "16"))
SECONDS = float(os.environ.get("RBIPSEC_SOAK_SECONDS", "30"))
WARMUP = 3
MIN_CYCLES = 20


def test_up_down_cycles_leak_nothing(tmp_path: Path) -> None:
    with NetLab(tmp_path) as lab:
        a, b = soak.build(lab, PEERS)
        run = soak.Soak(lab, a, b, PEERS)
        try:
            run.wait_all_up(timeout=60)
            for _ in range(WARMUP):
                run.cycle()
            first = run.snapshot()
            started = time.monotonic()
            cycles = 0
            while cycles < MIN_CYCLES or time.monotonic() - started < SECONDS:
                run.cycle()
                cycles += 1
            last = run.snapshot()
            errors = sum(d.status()["daemon"]["engine_errors"] for d in (a, b))
        finally:
            run.close()
    print(f"{cycles} cycles of {PEERS} peers after {WARMUP} warm-up cycles; {first} -> {last}")
    assert soak.leaks(first, last, PEERS, rss_slack_kib=8 * 1024) == []
    assert errors == 0
