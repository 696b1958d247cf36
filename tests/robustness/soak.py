"""Up/down cycles of many peers between two daemons, with leak checks (root).

Daemon a initiates N peers (one interface each) to daemon b, whose peers are passive.
A cycle takes every peer down on a (DELETE to b) and up again, and waits until every
tunnel is up on both sides.  After each cycle both daemons are measured: file
descriptors, RSS, threads, interfaces and routes of their namespace, IKE SAs and Child
SAs in their status.  Used by test_lab_soak.py (a CI minute) and bench/bench_soak.py
(the long figure).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from core.daemon.control.client import ControlClient
from tests.robustness.lab import (
    LabDaemon,
    NetLab,
    Resources,
    global_section,
    lab_daemon,
    peer_section,
    resources,
    wait_until,
)


def a_address(index: int) -> str:
    return f"198.51.100.{10 + index}"


def b_address(index: int) -> str:
    return f"198.51.100.{100 + index}"


def build(lab: NetLab, peers: int) -> tuple[LabDaemon, LabDaemon]:
    lab.namespace("a")
    lab.namespace("b")
    lab.link("a", f"{a_address(0)}/24", "b", f"{b_address(0)}/24", "outer0", "outer0")
    for name, address in (("a", a_address), ("b", b_address)):
        batch = lab.workdir / f"addresses-{name}"
        batch.write_text("".join(f"addr add {address(i)}/24 dev outer0\n" for i in range(1, peers)))
        lab.run(name, "ip", "-batch", str(batch))
    config_a = global_section(lab.workdir / "a.sock", log_level="warning")
    config_b = global_section(lab.workdir / "b.sock", log_level="warning")
    for i in range(peers):
        common = {"name": f"p{i}", "interface": f"ipsec{i}", "dpd_interval": 10}
        config_a += peer_section(
            local_address=a_address(i),
            remote_address=b_address(i),
            address=f"10.{i}.0.1/30",
            routes=[f"10.{100 + i}.0.0/24"],
            **common,
        )
        config_b += peer_section(
            local_address=b_address(i),
            remote_address=a_address(i),
            address=f"10.{i}.0.2/30",
            passive=True,
            **common,
        )
    b = lab_daemon(lab, "b", config_b).start()
    a = lab_daemon(lab, "a", config_a).start()
    return a, b


@dataclass(frozen=True)
class Snapshot:
    a: Resources
    b: Resources
    ike_sas: int  # established IKE SAs, both daemons
    child_sas: int  # Child SAs, both daemons


def _all_in(client: ControlClient, state: str, peers: int) -> bool:
    status = client.request("status")
    return sum(1 for p in status["peers"] if p["state"] == state) == peers


def _counts(client: ControlClient) -> tuple[int, int]:
    peers = client.request("status")["peers"]
    ike = sum(1 for p in peers if p.get("ike_sa"))
    child = sum(len(p["child_sas"]) for p in peers)
    return ike, child


class Soak:
    def __init__(self, lab: NetLab, a: LabDaemon, b: LabDaemon, peers: int) -> None:
        self.lab, self.a, self.b, self.peers = lab, a, b, peers
        self.client_a = ControlClient(str(a.socket), timeout=60)
        self.client_b = ControlClient(str(b.socket), timeout=60)
        self.client_a.__enter__()
        self.client_b.__enter__()
        self.cycle_seconds: list[float] = []

    def close(self) -> None:
        self.client_a.__exit__(None, None, None)
        self.client_b.__exit__(None, None, None)

    def wait_all_up(self, timeout: float = 120) -> None:
        wait_until(
            lambda: (
                _all_in(self.client_a, "up", self.peers)
                and _all_in(self.client_b, "up", self.peers)
            ),
            timeout,
            "every tunnel up",
        )

    def cycle(self) -> None:
        started = time.monotonic()
        names = [f"p{i}" for i in range(self.peers)]
        for name in names:
            self.client_a.request("down", peer=name)
        wait_until(
            lambda: _all_in(self.client_b, "waiting", self.peers), 60, "b to see every DELETE"
        )
        for name in names:
            self.client_a.request("up", peer=name)
        self.wait_all_up()
        self.cycle_seconds.append(time.monotonic() - started)

    def snapshot(self) -> Snapshot:
        ike_a, child_a = _counts(self.client_a)
        ike_b, child_b = _counts(self.client_b)
        return Snapshot(
            resources(self.lab, self.a),
            resources(self.lab, self.b),
            ike_a + ike_b,
            child_a + child_b,
        )


def leaks(first: Snapshot, last: Snapshot, peers: int, rss_slack_kib: int) -> list[str]:
    """What grew between two snapshots taken with every tunnel up."""
    problems = []
    for side in ("a", "b"):
        before, after = getattr(first, side), getattr(last, side)
        for field in ("fds", "threads", "interfaces", "routes"):
            if getattr(after, field) > getattr(before, field):
                problems.append(
                    f"{side}: {field} {getattr(before, field)} -> {getattr(after, field)}"
                )
        if after.rss_kib > before.rss_kib + rss_slack_kib:
            problems.append(f"{side}: RSS {before.rss_kib} -> {after.rss_kib} KiB")
    if last.ike_sas != 2 * peers or last.child_sas != 2 * peers:
        problems.append(f"SAs: {last.ike_sas} IKE, {last.child_sas} Child (want {2 * peers})")
    return problems
