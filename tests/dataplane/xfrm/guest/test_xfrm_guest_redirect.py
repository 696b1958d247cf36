"""redirect.py with real tc (cls_fw, cls_flower, act_mirred): inside the QEMU guest.

Namespace rbR reaches the peer address PEER (on rbS's lo) by outer0 or outer1; ipsec1 is
a veth whose other end, ipsec1p, sits in rbS, so a packet redirected into ipsec1 shows up
there.  What must hold whichever device the route to the peer uses: unmarked traffic to
PEER arrives through ipsec1p and never on p0/p1 in clear, marked traffic takes the route.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from core.dataplane.model import BYPASS_MARK, TransportPeer, if_id_for
from core.dataplane.xfrm import redirect
from core.dataplane.xfrm.netlink import in_netns
from core.dataplane.xfrm.redirect import Redirects
from tests.dataplane.xfrm.guest.xfrm_guest_tools import Sniffer, parse_ipv4, sh

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.skipif(
        os.environ.get("RBIPSEC_IN_GUEST") != "1",
        reason="needs tc with cls_fw/cls_flower/act_mirred: runs inside the QEMU guest",
    ),
]

NS, FAR = "rbR", "rbS"
PEER = ipaddress.IPv4Address("203.0.113.99")
OURS = {redirect.BYPASS_PREF: "all", redirect.peer_pref(if_id_for(1)): "ip"}


@pytest.fixture
def lab() -> Iterator[None]:
    """rbR: outer0 198.51.100.1 -- p0 .2, outer1 203.0.113.1 -- p1 .2 (rbS), ipsec1 --
    ipsec1p (rbS); PEER on rbS's lo, routed by outer0 first."""
    for name in (NS, FAR):
        sh("ip", "netns", "add", name)
    try:
        links = (("outer0", "p0", "198.51.100"), ("outer1", "p1", "203.0.113"))
        for near, far, net in links:
            sh("ip", "link", "add", near, "netns", NS, "type", "veth", "peer", far, "netns", FAR)
            sh("ip", "addr", "add", f"{net}.1/24", "dev", near, netns=NS)
            sh("ip", "addr", "add", f"{net}.2/24", "dev", far, netns=FAR)
            sh("ip", "link", "set", near, "up", netns=NS)
            sh("ip", "link", "set", far, "up", netns=FAR)
        sh("ip", "link", "add", "ipsec1", "netns", NS, "type", "veth", "peer", "ipsec1p",
           "netns", FAR)  # fmt: skip
        sh("ip", "link", "set", "ipsec1", "up", netns=NS)
        sh("ip", "link", "set", "ipsec1p", "up", netns=FAR)
        for name in (NS, FAR):
            sh("ip", "link", "set", "lo", "up", netns=name)
        sh("ip", "addr", "add", f"{PEER}/32", "dev", "lo", netns=FAR)
        sh("ip", "route", "add", f"{PEER}/32", "via", "198.51.100.2", netns=NS)
        yield
    finally:
        for name in (NS, FAR):
            sh("ip", "netns", "del", name, check=False)


def filters(device: str) -> dict[int, str]:
    return redirect.our_filters(sh("tc", "filter", "show", "dev", device, "egress", netns=NS))


def arrivals(send: Callable[[], None], protocol: int) -> dict[str, int]:
    """Packets of `protocol` to PEER seen arriving on each of rbS's devices while `send`
    runs."""
    sniffers = {name: Sniffer(FAR, name) for name in ("p0", "p1", "ipsec1p")}
    try:
        send()
        time.sleep(0.5)
        seen = {}
        for name, sniffer in sniffers.items():
            packets = [parse_ipv4(frame.data) for frame in sniffer.frames()]
            seen[name] = sum(1 for p in packets if p.proto == protocol and p.dst == str(PEER))
        return seen
    finally:
        for sniffer in sniffers.values():
            sniffer.close()


def ping() -> None:
    sh("ping", "-c", "2", "-i", "0.2", "-W", "1", str(PEER), netns=NS, check=False)


def marked_udp() -> None:
    def make() -> socket.socket:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    with contextlib.closing(in_netns(NS, make)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, BYPASS_MARK)
        sock.sendto(b"ike", (str(PEER), 500))


def test_traffic_to_the_peer_enters_ipsec_whichever_device_it_is_routed_by(lab: None) -> None:
    tc = Redirects(NS)
    tc.add("ipsec1", if_id_for(1), TransportPeer(remote=PEER))
    assert filters("outer0") == OURS and filters("outer1") == OURS  # read back from tc
    assert "clsact" not in sh("tc", "qdisc", "show", "dev", "ipsec1", netns=NS)
    assert arrivals(ping, 1) == {"p0": 0, "p1": 0, "ipsec1p": 2}
    assert arrivals(marked_udp, 17) == {"p0": 1, "p1": 0, "ipsec1p": 0}
    sh("ip", "route", "replace", f"{PEER}/32", "via", "203.0.113.2", netns=NS)  # failover
    assert arrivals(ping, 1) == {"p0": 0, "p1": 0, "ipsec1p": 2}
    assert arrivals(marked_udp, 17) == {"p0": 0, "p1": 1, "ipsec1p": 0}
    tc.remove_all()
    assert filters("outer0") == {} and filters("outer1") == {}
    assert "clsact" not in sh("tc", "qdisc", "show", "dev", "outer0", netns=NS)  # we added it


def test_a_crashed_runs_filters_are_adopted_and_others_left_alone(lab: None) -> None:
    crashed = Redirects(NS)
    crashed.add("ipsec1", if_id_for(1), TransportPeer(remote=PEER))
    sh(
        "tc",
        "filter",
        "add",
        "dev",
        "outer0",
        "egress",
        "pref",
        "29290",
        "protocol",
        "ip",
        "flower",
        "dst_ip",
        "198.51.100.77",
        "action",
        "drop",
        netns=NS,
    )  # someone else's
    restarted = Redirects(NS)
    restarted.adopt_leftovers()
    pref = redirect.peer_pref(if_id_for(1))
    assert restarted.stale == {("outer0", pref): "ip", ("outer1", pref): "ip"}
    restarted.add("ipsec1", if_id_for(1), TransportPeer(remote=PEER))
    assert restarted.stale == {}
    assert arrivals(ping, 1) == {"p0": 0, "p1": 0, "ipsec1p": 2}
    restarted.remove_all()
    assert filters("outer0") == {} and filters("outer1") == {}
    assert "pref 29290" in sh("tc", "filter", "show", "dev", "outer0", "egress", netns=NS)
