"""Flood: a bounded burst of IKE_SA_INIT requests from a third namespace, from 200 source
addresses, at a daemon that also carries an established tunnel (root).

The tunnel keeps pinging without loss; COOKIEs engage once 16 half-open SAs exist
(COOKIE_THRESHOLD) so real IKE_SA_INIT responses (half-open SAs) stay bounded; cookies
returned by a real initiator are honoured; the daemon's memory stays bounded.  The burst
size and rate are RBIPSEC_FLOOD_COUNT / RBIPSEC_FLOOD_RATE (default 12000 at 2000/s);
bench/bench_flood.py finds the highest rate held.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.ike.v2.endpoint import COOKIE_THRESHOLD
from tests.robustness.lab import (
    PYTHON,
    LabDaemon,
    NetLab,
    global_section,
    lab_daemon,
    peer_section,
    resources,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ping") is None, reason="needs iputils ping"),
]

A, B, B_INSIDE = "198.51.100.1", "198.51.100.2", "203.0.113.1"
COUNT = int(os.environ.get("RBIPSEC_FLOOD_COUNT", "12000"))
RATE = float(os.environ.get("RBIPSEC_FLOOD_RATE", "2000"))
SOURCES = 200


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[NetLab]:
    with NetLab(tmp_path) as netlab:
        yield netlab
        print("\n".join(f"--- {d.name} ---\n{d.log()[-3000:]}" for d in netlab.daemons))


def build_flood_lab(lab: NetLab) -> tuple[LabDaemon, LabDaemon, list[str]]:
    """a <-> b with a tunnel; f (the flooder) <-> b with SOURCES addresses on f's side; b
    also has a road warrior peer (remote address dynamic) that anyone may try to be."""
    for name in ("a", "b", "f"):
        lab.namespace(name)
    lab.link("a", f"{A}/24", "b", f"{B}/24", "outer0", "outer0")
    lab.link("f", "203.0.113.2/24", "b", f"{B_INSIDE}/24", "flood0", "inside0")
    sources = [f"203.0.113.{10 + i}" for i in range(SOURCES)]
    batch = lab.workdir / "flood-addresses"
    batch.write_text("".join(f"addr add {s}/24 dev flood0\n" for s in sources))
    lab.run("f", "ip", "-batch", str(batch))
    peer = {"dpd_interval": 2, "dpd_retries": 3, "interface": "ipsec1"}
    b = lab_daemon(
        lab,
        "b",
        global_section(lab.workdir / "b.sock", log_level="info")
        + peer_section(name="toa", local_address=B, remote_address=A, address="10.0.0.2/30", **peer)
        + peer_section(
            name="rw",
            interface="ipsec2",
            local_address=B_INSIDE,
            remote_address="dynamic",
            remote_id="fqdn:rw.example",
            psk="the road warrior's secret",
        ),
    ).start()
    a = lab_daemon(
        lab,
        "a",
        global_section(lab.workdir / "a.sock", log_level="info")
        + peer_section(
            name="tob", local_address=A, remote_address=B, address="10.0.0.1/30", **peer
        ),
    ).start()
    a.wait_up("tob", timeout=20)
    b.wait_up("toa")
    return a, b, sources


def flood(lab: NetLab, count: int, rate: float, sources: list[str]) -> dict[str, Any]:
    result = lab.run(
        "f",
        PYTHON,
        "-m",
        "tests.robustness.flood",
        B_INSIDE,
        str(count),
        str(rate),
        *sources,
        timeout=count / rate + 60,
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


class RssSampler:
    def __init__(self, lab: NetLab, daemon: LabDaemon) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(lab, daemon), daemon=True)
        self._thread.start()

    def _run(self, lab: NetLab, daemon: LabDaemon) -> None:
        while not self._stop.wait(0.2):
            status = Path(f"/proc/{daemon.pid}/status").read_text()
            line = next(x for x in status.splitlines() if x.startswith("VmRSS"))
            self.samples.append(int(line.split()[1]))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.samples, default=0)


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
