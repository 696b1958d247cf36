"""Loss, duplicates and reordering between two daemons in namespaces (root).

nftables drops `drop` % of the packets each way on one side's outer interface (`numgen
random`) and sends `duplicate` % twice (`dup to`); a userspace wire holds back a share of
frames so that others overtake them.  With short lifetimes (tests.robustness.lab_daemon)
the tunnel must come up, rekey its Child SA and IKE SA repeatedly, and DPD (1 s) must
never declare the live peer dead, over an idle phase and a phase with traffic.

DPD retries are chosen for the loss: a round of n probes all lost each way has odds
(1 - (1 - p)^2)^n, so 12 retries at 30 % (0.51^13 = 1.6e-4 per round) and 5 at 10 %.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import pytest

from tests.integration.netlab import OUTER_A, OUTER_B, two_nodes
from tests.robustness.lab import (
    EventLog,
    NetLab,
    Wire,
    global_section,
    impair,
    lab_daemon,
    peer_section,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nftables"),
]

A, B = OUTER_A, OUTER_B
LIFETIMES = "child=12,ike=24"  # rekeys at 4.8-6 s and 9.6-12 s (FAST_TIMING: margin 0.5)
TIMING = {
    "retransmit_timeout": 0.5,
    "retransmit_base": 1.5,
    "retransmit_tries": 8,
    "half_open_timeout": 10.0,
    "rekey_margin": 0.5,
    "rekey_jitter": 0.1,
    "reestablish_backoff": [0.5, 1.0, 2.0],
}
RUN_SECONDS = 26.0



def _configs(lab: NetLab, retries: int, version: int = 2) -> tuple[str, str]:
    common: dict[str, object] = {
        "dpd_interval": 1,
        "dpd_retries": retries,
        "interface": "ipsec1",
        "ike_version": version,
    }
    if version == 1:
        common["ike_proposals"] = ["aes256-sha256-modp2048"]
    a = global_section(lab.workdir / "a.sock", log_level="info") + peer_section(
        name="tob", local_address=A, remote_address=B, address="10.0.0.1/30", **common
    )
    b = global_section(lab.workdir / "b.sock", log_level="info") + peer_section(
        name="toa", local_address=B, remote_address=A, address="10.0.0.2/30", **common
    )
    return a, b


def _run(lab: NetLab, retries: int, version: int = 2) -> dict[str, Any]:
    """Start both daemons, run idle then with traffic; returns the figures."""
    config_a, config_b = _configs(lab, retries, version)
    b = lab_daemon(lab, "b", config_b, timing=TIMING, lifetimes=LIFETIMES).start()
    a = lab_daemon(lab, "a", config_a, timing=TIMING, lifetimes=LIFETIMES).start()
    logs = {"a": EventLog(a.socket), "b": EventLog(b.socket)}
    started = time.monotonic()
    try:
        up_after = a.wait_up("tob", timeout=60)
        b.wait_up("toa", timeout=30)
        time.sleep(RUN_SECONDS / 2)  # idle: DPD probes run
        ping = lab.start_ping("a", "10.0.0.2", interval=0.05)
        time.sleep(RUN_SECONDS / 2)
        sent, received = lab.finish_ping(ping)
    finally:
        for log in logs.values():
            log.close()
    events = [e for log in logs.values() for e in log.events]
    figures = {
        "up_after_ms": round(up_after * 1000),
        "seconds": round(time.monotonic() - started),
        "child_installed": sum(1 for e in events if e["type"] == "ChildSaInstalled"),
        "ike_rekeyed": sum(1 for e in events if e["type"] == "IkeSaRekeyed"),
        "dpd_probes": sum(1 for e in events if e["type"] == "DpdProbeSent"),
        "peer_dead": sum(1 for e in events if e["type"] == "PeerDead"),
        "ike_down": sum(
            1
            for e in events
            if e["type"] == "IkeSaDown" and not str(e.get("reason")).startswith("replaced")
        ),
        "ike_down_reasons": sorted(
            {f"{e.get('reason')}: {e.get('detail')}" for e in events if e["type"] == "IkeSaDown"}
        ),
        "ping_sent": sent,
        "ping_received": received,
    }
    figures["engine_errors"] = sum(d.status()["daemon"]["engine_errors"] for d in (a, b))
    return figures


def _check(lab: NetLab, figures: dict[str, Any], drop: int, delivery: float = 0.6) -> None:
    """`delivery`: the share of the pings the loss lets through (two passes at `drop` %)
    that must arrive.  At 30 % a Child SA rekey sometimes exhausts the 12 s lifetime of
    the lab (its exchange fails a try with odds 0.51): the SA expires, a new one is made,
    and the pings of that gap are lost too (once in CI: 0.58 of the share)."""
    print(figures)
    assert figures["peer_dead"] == 0, figures
    assert figures["engine_errors"] == 0, figures
    # both ends install the first Child SA and every rekeyed one: >= 2 rekeys in the run
    assert figures["child_installed"] >= 2 * 3, figures
    assert figures["ike_rekeyed"] >= 1, figures
    assert figures["dpd_probes"] > 0, "the idle phase sent no liveness check"
    assert figures["ping_received"] > 0
    assert figures["ping_received"] >= figures["ping_sent"] * (1 - drop / 100) ** 2 * delivery


@pytest.mark.parametrize(("drop", "duplicate", "retries", "delivery"),
                         [(10, 10, 5, 0.6), (30, 10, 12, 0.4)])  # fmt: skip
def test_loss_and_duplicates(
    lab: NetLab, drop: int, duplicate: int, retries: int, delivery: float
) -> None:
    two_nodes(lab)
    with impair(lab, "a", "outer0", drop=drop, duplicate=duplicate, peer=B):
        figures = _run(lab, retries)
    _check(lab, figures, drop, delivery)
    # Unimpaired again: the tunnel carries everything.
    assert lab.ping("a", "10.0.0.2", count=5, interval=0.1) == (5, 5)


def test_reordering_with_loss(lab: NetLab) -> None:
    """A wire namespace between the two holds back 20 % of the frames for up to 30 ms (on
    top of 10 % loss and 10 % duplicates at a): IKE and ESP cope with overtaken packets."""
    for name in ("a", "wire", "b"):
        lab.namespace(name)
    lab.link("a", f"{A}/24", "wire", "", "outer0", "wa")
    lab.link("wire", "", "b", f"{B}/24", "wb", "outer0")
    wire = Wire(lab, "wire", "wa", "wb", reorder=20, delay=0.03)
    try:
        with impair(lab, "a", "outer0", drop=10, duplicate=10, peer=B):
            figures = _run(lab, 5)
    finally:
        counters = wire.stop()
    print(counters)
    assert counters.get("held", 0) > 50
    _check(lab, figures, 10)


def test_ikev1_loss_and_duplicates(lab: NetLab) -> None:
    """IKEv1 (main mode, RFC 3706 DPD) through 10 % loss each way and 10 % duplicates."""
    two_nodes(lab)
    with impair(lab, "a", "outer0", drop=10, duplicate=10, peer=B):
        figures = _run(lab, 5, version=1)
    print(figures)
    assert figures["peer_dead"] == 0 and figures["engine_errors"] == 0, figures
    assert figures["child_installed"] >= 2 * 3, figures  # quick mode rekeys
    assert figures["dpd_probes"] > 0
    assert lab.ping("a", "10.0.0.2", count=5, interval=0.1) == (5, 5)
