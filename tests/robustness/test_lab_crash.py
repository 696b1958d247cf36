"""Crash and restart: SIGKILL a daemon mid-negotiation and mid-rekey, start it again
(root, namespaces).  The restarted daemon removes what the dead one left (TUN interfaces,
guard routes), the tunnel returns, and nothing is duplicated: one interface, one Child SA
pair on each side, each route once, on both daemons.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.netlab import OUTER_A, OUTER_B, two_nodes
from tests.robustness.lab import (
    LabDaemon,
    NetLab,
    block,
    global_section,
    kernel_state,
    lab_daemon,
    peer_section,
    wait_process_gone,
    wait_until,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nftables"),
]

A, B = OUTER_A, OUTER_B


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[NetLab]:
    with NetLab(tmp_path) as netlab:
        two_nodes(netlab)
        yield netlab


def _start(lab: NetLab) -> tuple[LabDaemon, LabDaemon]:
    peer = {"dpd_interval": 1, "dpd_retries": 3, "interface": "ipsec1"}
    b = lab_daemon(
        lab,
        "b",
        global_section(lab.workdir / "b.sock")
        + peer_section(
            name="toa",
            local_address=B,
            remote_address=A,
            address="10.0.0.2/30",
            routes=["10.1.0.0/24"],
            **peer,
        ),
    ).start()
    a = lab_daemon(
        lab,
        "a",
        global_section(lab.workdir / "a.sock")
        + peer_section(
            name="tob",
            local_address=A,
            remote_address=B,
            address="10.0.0.1/30",
            routes=["10.2.0.0/24"],
            **peer,
        ),
    ).start()
    return a, b


def _sigkill(daemon: LabDaemon) -> None:
    pid = daemon.pid
    daemon.signal(signal.SIGKILL)
    assert daemon.process is not None
    daemon.process.wait(10)
    wait_process_gone(pid)


def _check_single_tunnel(lab: NetLab, a: LabDaemon, b: LabDaemon) -> None:
    a.wait_up("tob", timeout=30)
    b.wait_up("toa", timeout=30)
    # the other side's old SAs go (INITIAL_CONTACT or DPD): one Child SA pair each
    wait_until(lambda: len(b.peer("toa")["child_sas"]) == 1, 15, "b to keep one Child SA")
    peer_a, peer_b = a.peer("tob"), b.peer("toa")
    assert len(peer_a["child_sas"]) == 1
    assert peer_a["child_sas"][0]["spi_in"] == peer_b["child_sas"][0]["spi_out"]
    assert peer_a["ike_sa"]["spi_i"] == peer_b["ike_sa"]["spi_i"]
    for name in ("a", "b"):
        state = kernel_state(lab, name)
        assert state["links"].count("ipsec1") == 1, state["links"]
        assert len(state["routes"]) == len(set(state["routes"])), state["routes"]
    assert lab.ping("a", "10.0.0.2", count=3, interval=0.1) == (3, 3)
    assert sum(d.status()["daemon"]["engine_errors"] for d in (a, b)) == 0


def test_sigkill_mid_negotiation_then_restart(lab: NetLab) -> None:
    """a is killed while its IKE_SA_INIT waits for an answer (b's answers are dropped
    at a); b holds a half-open SA for it."""
    with block(lab, "a", f"ip saddr {B} udp sport 500"):
        a, b = _start(lab)
        wait_until(lambda: a.state("tob") == "connecting", 10, "a to be connecting")
        time.sleep(1.0)
        left = kernel_state(lab, "a")
        _sigkill(a)
    assert "ipsec1" in left["links"]
    a.start()
    _check_single_tunnel(lab, a, b)


@pytest.mark.parametrize("victim", ["initiator", "responder"])
def test_sigkill_mid_rekey_then_restart(lab: NetLab, victim: str) -> None:
    """A Child SA rekey whose answer never arrives (dropped at the initiator): the
    initiator of the rekey, or its responder (which installed the new SA already), is
    killed, then started again."""
    a, b = _start(lab)
    a.wait_up("tob", timeout=20)
    b.wait_up("toa")
    before = {c["spi_in"] for c in b.peer("toa")["child_sas"]}
    with block(lab, "a", f"ip saddr {B} udp sport {{500, 4500}}"):
        a.request("rekey", peer="tob")
        wait_until(
            lambda: len(b.peer("toa")["child_sas"]) == 2, 10, "b to install the new Child SA"
        )
        killed, other = (a, b) if victim == "initiator" else (b, a)
        during = {c["spi_in"] for c in b.peer("toa")["child_sas"]}
        stale = kernel_state(lab, killed.name)
        _sigkill(killed)
    assert "ipsec1" in stale["links"]
    assert before < during  # the rekey was half done: b holds the old and the new SA
    killed.start()
    _check_single_tunnel(lab, a, b)
    assert other.request("ping") == {"pong": True}
