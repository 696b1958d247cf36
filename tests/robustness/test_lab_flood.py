"""Flood: a bounded burst of IKE_SA_INIT requests from a third namespace, from 200 source
addresses, at a daemon that also carries an established tunnel (root).

The tunnel keeps pinging without loss; COOKIEs engage once 16 half-open SAs exist
(COOKIE_THRESHOLD) so real IKE_SA_INIT responses (half-open SAs) stay bounded; cookies
returned by a real initiator are honoured; the daemon's memory stays bounded.  The burst
size and rate are RBIPSEC_FLOOD_COUNT / RBIPSEC_FLOOD_RATE (default 12000 at 2000/s);
bench/bench_flood.py finds the highest rate held.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from core.ike.v2.endpoint import COOKIE_THRESHOLD
from tests.robustness.flood_lab import RssSampler, build_flood_lab, flood
from tests.robustness.lab import NetLab, resources

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ping") is None, reason="needs iputils ping"),
]

COUNT = int(os.environ.get("RBIPSEC_FLOOD_COUNT", "12000"))
RATE = float(os.environ.get("RBIPSEC_FLOOD_RATE", "2000"))



def test_init_flood_keeps_the_tunnel_and_bounds_half_open_sas(lab: NetLab) -> None:
    a, b, sources = build_flood_lab(lab)
    before = resources(lab, b)
    ping = lab.start_ping("a", "10.0.0.2", interval=0.02)
    sampler = RssSampler(lab, b)
    try:
        time.sleep(0.5)
        figures = flood(lab, COUNT, RATE, sources)
        time.sleep(0.5)
    finally:
        peak = sampler.stop()
        sent, received = lab.finish_ping(ping)
    after = resources(lab, b)
    figures.update(
        ping_sent=sent,
        ping_received=received,
        rss_before_kib=before.rss_kib,
        rss_peak_kib=peak,
        rss_after_kib=after.rss_kib,
    )
    print(figures)
    assert figures["sent"] == COUNT and figures["rate"] >= RATE * 0.8, figures
    assert received == sent and sent > 100, (sent, received)
    # COOKIEs engage exactly at the threshold, and from then on answer everything else
    assert figures["real_responses_before_first_cookie"] == COOKIE_THRESHOLD
    assert figures["cookie"] >= COUNT * 0.5
    # half-open SAs: the threshold plus those whose initiator returned its cookie
    returned = figures["cookies_returned"]
    assert returned > 0
    assert figures["init_response"] <= COOKIE_THRESHOLD + returned
    assert figures["init_response"] >= COOKIE_THRESHOLD + returned // 2  # cookies honoured
    assert peak - before.rss_kib < 32 * 1024, "RSS grew by more than 32 MiB"
    assert after.fds <= before.fds + 2
    assert a.state("tob") == "up" and b.state("toa") == "up"
    assert b.status()["daemon"]["engine_errors"] == 0
