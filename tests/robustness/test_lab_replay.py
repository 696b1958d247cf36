"""Replayed ESP and IKE between two daemons in namespaces (root).

Frames a sends are captured on its outer interface and sent again later, as an attacker
on the path would: ESP packets of the current Child SA (b must drop and count them as
replays, deliver none of them, and keep carrying traffic) and the IKE request of a Child
SA rekey that is over (b must not create, delete or rekey anything).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time

import pytest

from tests.integration.netlab import OUTER_A, OUTER_B, two_nodes
from tests.robustness.lab import (
    PYTHON,
    REPO,
    NetLab,
    global_section,
    lab_daemon,
    peer_section,
    wait_until,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("ping") is None, reason="needs iputils ping"),
]

A, B = OUTER_A, OUTER_B



class Capture:
    def __init__(self, lab: NetLab, namespace: str, interface: str) -> None:
        self.process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                lab.namespaces[namespace],
                PYTHON,
                "-m",
                "tests.robustness.replay_tool",
                "capture",
                interface,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    def stop(self) -> list[bytes]:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=10)
        return [bytes.fromhex(line) for line in out.split()]


def replay(lab: NetLab, namespace: str, interface: str, frames: list[bytes], copies: int) -> None:
    lab_input = "".join(f.hex() + "\n" for f in frames)
    subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lab.namespaces[namespace],
            PYTHON,
            "-m",
            "tests.robustness.replay_tool",
            "send",
            interface,
            str(copies),
        ],
        cwd=REPO,
        input=lab_input,
        text=True,
        check=True,
        timeout=30,
    )


def _is_esp(frame: bytes) -> bool:
    return frame[23] == 50


def _ike_request(frame: bytes, exchange: int) -> bool:
    """A UDP/500 IKEv2 request of `exchange` (without the non-ESP marker)."""
    if frame[23] != 17:
        return False
    ike = frame[14 + (frame[14] & 0x0F) * 4 + 8 :]
    return len(ike) >= 28 and ike[18] == exchange and not ike[19] & 0x20


def test_replayed_esp_and_ike_are_rejected(lab: NetLab) -> None:
    two_nodes(lab)
    peer = {"dpd_interval": 30, "interface": "ipsec1"}
    b = lab_daemon(
        lab,
        "b",
        global_section(lab.workdir / "b.sock")
        + peer_section(
            name="toa", local_address=B, remote_address=A, address="10.0.0.2/30", **peer
        ),
    ).start()
    a = lab_daemon(
        lab,
        "a",
        global_section(lab.workdir / "a.sock")
        + peer_section(
            name="tob", local_address=A, remote_address=B, address="10.0.0.1/30", **peer
        ),
    ).start()
    a.wait_up("tob")
    b.wait_up("toa")

    # IKE: capture a Child SA rekey request, let the rekey finish, replay the request.
    capture = Capture(lab, "a", "outer0")
    a.request("rekey", peer="tob")
    time.sleep(1.0)
    ike_frames = [f for f in capture.stop() if _ike_request(f, 36)]
    assert ike_frames, "no CREATE_CHILD_SA request captured"
    wait_until(lambda: len(b.peer("toa")["child_sas"]) == 1, 10, "the rekey to finish")
    before = b.peer("toa")
    log_size = len(b.log())
    replay(lab, "a", "outer0", ike_frames, copies=3)
    time.sleep(1.0)
    after = b.peer("toa")
    assert [c["spi_in"] for c in after["child_sas"]] == [c["spi_in"] for c in before["child_sas"]]
    assert after["ike_sa"]["spi_i"] == before["ike_sa"]["spi_i"]
    # It reached b's engine (answered from the cache or dropped by message ID), no further
    assert re.search(r"retransmitted request|dropped a request", b.log()[log_size:])

    # ESP: capture packets of the current Child SA, replay each 3 times.
    capture = Capture(lab, "a", "outer0")
    assert lab.ping("a", "10.0.0.2", count=5, interval=0.1) == (5, 5)
    esp_frames = [f for f in capture.stop() if _is_esp(f)]
    assert len(esp_frames) >= 5
    (child,) = b.peer("toa")["child_sas"]
    replay(lab, "a", "outer0", esp_frames, copies=3)
    time.sleep(1.0)
    (later,) = b.peer("toa")["child_sas"]
    assert later["spi_in"] == child["spi_in"]
    assert later["replay_errors"] - child["replay_errors"] == 3 * len(esp_frames)
    assert later["packets_in"] == child["packets_in"]  # none delivered again
    assert lab.ping("a", "10.0.0.2", count=3, interval=0.1) == (3, 3)
    assert a.status()["daemon"]["engine_errors"] == 0 == b.status()["daemon"]["engine_errors"]
