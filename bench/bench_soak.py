"""Soak: up/down cycles of many peers between two daemons in namespaces, with leak checks.

    sudo python bench/bench_soak.py [--peers 64] [--cycles 1000] [--every 50] [--warmup 10]

Daemon a initiates PEERS tunnels to daemon b (passive peers); each cycle takes every peer
down on a and up again and waits until all tunnels are up on both sides
(tests/robustness/soak.py).  Every EVERY cycles a line shows both daemons' file
descriptors, RSS, interfaces, daemon routes and SAs.  At the end the state after the
warm-up is compared with the last: any growth in descriptors, threads, interfaces,
routes or SAs is a leak, and the RSS growth is printed per 100 cycles.  Exit status 1
when something leaked.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.robustness import soak
from tests.robustness.lab import NetLab

RSS_SLACK_KIB = 16 * 1024  # allocator noise over a long run; the slope is printed anyway


def _row(cycle: int, seconds: list[float], shot: soak.Snapshot) -> str:
    recent = statistics.median(seconds[-50:]) if seconds else 0.0
    return (
        f"{cycle:6d} {recent:8.3f} {shot.a.fds:5d}/{shot.b.fds:<5d} "
        f"{shot.a.rss_kib:6d}/{shot.b.rss_kib:<6d} "
        f"{shot.a.interfaces:4d}/{shot.b.interfaces:<4d} {shot.a.routes:5d}/{shot.b.routes:<5d} "
        f"{shot.ike_sas:5d} {shot.child_sas:5d}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=64)
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_soak needs root (network namespaces)")
    started = time.monotonic()
    with NetLab(Path(tempfile.mkdtemp(prefix="rbipsec-soak-"))) as lab:
        a, b = soak.build(lab, args.peers)
        run = soak.Soak(lab, a, b, args.peers)
        try:
            run.wait_all_up()
            print(
                f"{args.peers} peers up in {time.monotonic() - started:.1f} s; "
                f"{args.cycles} cycles (every peer down, then up)"
            )
            print(" cycle  s/cycle   fds a/b  RSS KiB a/b    if a/b routes a/b  IKE  Child")
            first = last = middle = run.snapshot()
            print(_row(0, [], first))
            for cycle in range(1, args.cycles + 1):
                run.cycle()
                if cycle == args.warmup:
                    first = run.snapshot()
                if cycle == args.cycles // 2:
                    middle = run.snapshot()
                if cycle % args.every == 0 or cycle == args.cycles:
                    last = run.snapshot()
                    print(_row(cycle, run.cycle_seconds, last), flush=True)
        finally:
            run.close()
    counted = max(1, args.cycles - args.warmup)
    print(
        f"\ncycles: {args.cycles} of {args.peers} peers in {time.monotonic() - started:.0f} s, "
        f"median {statistics.median(run.cycle_seconds):.3f} s per cycle "
        f"({args.peers * 2 / statistics.median(run.cycle_seconds):.0f} tunnel down+up/s)"
    )
    for side in ("a", "b"):
        before, after = getattr(first, side), getattr(last, side)
        growth = (after.rss_kib - before.rss_kib) * 100 / counted
        half = getattr(middle, side).rss_kib
        late = (after.rss_kib - half) * 100 / max(1, args.cycles - args.cycles // 2)
        print(
            f"{side}: RSS {before.rss_kib} -> {half} -> {after.rss_kib} KiB after warm-up, "
            f"half-way, end ({growth:+.0f} KiB per 100 cycles overall, {late:+.0f} in the "
            f"second half), fds {before.fds} -> {after.fds}, "
            f"interfaces {before.interfaces} -> {after.interfaces}, "
            f"routes {before.routes} -> {after.routes}"
        )
    problems = soak.leaks(first, last, args.peers, RSS_SLACK_KIB)
    print("leaks: " + ("; ".join(problems) if problems else "none"))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
