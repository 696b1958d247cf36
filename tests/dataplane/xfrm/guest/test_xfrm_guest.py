"""The kernel XFRM backend on a real Linux dataplane (runs inside the QEMU guest only).

tests/qemu/test_qemu_xfrm.py boots a Debian kernel and runs this module there.  Two
namespaces joined by a veth pair each run an XfrmDataplane; everything the tunnel needs
is installed through our code, then traffic proves it: ping across, counters read back,
the inner ToS not copied to the outer header, MSS clamped, expiry and ACQUIRE events.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import pytest

from core.dataplane.api import DataplaneError
from core.dataplane.model import (
    LINK_GROUP,
    DataplaneEvent,
    Direction,
    EspAlgorithm,
    EspIntegrity,
    ExpiryKind,
    InterfaceSpec,
    Lifetime,
    SaExpired,
    SaMode,
    SaSpec,
    TrafficWhileDown,
    UdpEncap,
    if_id_for,
)
from core.dataplane.xfrm.backend import XfrmDataplane
from core.dataplane.xfrm.links import Links
from core.dataplane.xfrm.netlink import in_netns
from tests.dataplane.xfrm.guest.xfrm_guest_tools import (
    Sniffer,
    esp_of,
    parse_ipv4,
    sh,
    tcp_mss_of_syn,
    two_namespaces,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.skipif(
        os.environ.get("RBIPSEC_IN_GUEST") != "1",
        reason="needs XFRM interfaces and ESP: runs inside the QEMU guest (tests/qemu)",
    ),
]

T = TypeVar("T")
NS_A, NS_B = "rbA", "rbB"
OUTER_A, OUTER_B = ipaddress.IPv4Address("198.51.100.1"), ipaddress.IPv4Address("198.51.100.2")
INNER_A, INNER_B = "10.1.0.1", "10.1.0.2"
IF_ID = if_id_for(1)
GCM_KEY = bytes(range(0x40, 0x64))  # AES-256 key + 4-byte salt
CBC_KEY = bytes(range(0x80, 0xA0))
SHA_KEY = bytes(range(0xA0, 0xC0))
VECTOR_MARKER = "RBIPSEC-VECTORS "


def run(coro: Awaitable[T]) -> T:
    async def wrap() -> T:
        return await coro

    return asyncio.run(wrap())


@pytest.fixture
def namespaces() -> Iterator[None]:
    with two_namespaces(NS_A, NS_B):
        yield


@dataclass
class Side:
    """One end of the tunnel: its backend and the events it reported."""

    netns: str
    dataplane: XfrmDataplane
    events: list[DataplaneEvent] = field(default_factory=list)


def sa(
    spi: int,
    direction: Direction,
    src: ipaddress.IPv4Address,
    dst: ipaddress.IPv4Address,
    algorithm: EspAlgorithm,
    **extra: Any,
) -> SaSpec:
    keys: dict[str, Any] = {"encryption_key": GCM_KEY, "esn": True}
    if algorithm is EspAlgorithm.AES_CBC:
        keys = {
            "encryption_key": CBC_KEY,
            "integrity": EspIntegrity.HMAC_SHA2_256_128,
            "integrity_key": SHA_KEY,
        }
    return SaSpec(
        spi=spi,
        direction=direction,
        src=src,
        dst=dst,
        mode=SaMode.TUNNEL,
        algorithm=algorithm,
        if_id=IF_ID,
        **{**keys, **extra},
    )


NO_LIMITS = Lifetime()


def tunnel_sas(
    algorithm: EspAlgorithm, encap: bool, lifetime_a_out: Lifetime = NO_LIMITS
) -> tuple[list[SaSpec], list[SaSpec]]:
    """(SAs of A, SAs of B): A->B SPI 0x1001, B->A SPI 0x2001."""
    encap_ab = UdpEncap(4500, 4500) if encap else None
    a_to_b = sa(0x1001, Direction.OUT, OUTER_A, OUTER_B, algorithm, encap=encap_ab)
    b_to_a = sa(0x2001, Direction.OUT, OUTER_B, OUTER_A, algorithm, encap=encap_ab)
    return (
        [replace(a_to_b, lifetime=lifetime_a_out), replace(b_to_a, direction=Direction.IN)],
        [b_to_a, replace(a_to_b, direction=Direction.IN)],
    )


async def start_sides() -> tuple[Side, Side]:
    sides = []
    for netns in (NS_A, NS_B):
        side = Side(netns, XfrmDataplane(netns))
        await side.dataplane.start(side.events.append)
        sides.append(side)
    return sides[0], sides[1]


def encap_socket(netns: str) -> socket.socket:
    sock = in_netns(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    sock.bind(("0.0.0.0", 4500))
    return sock


async def build_tunnel(
    a: Side,
    b: Side,
    algorithm: EspAlgorithm,
    encap: bool = False,
    mss: int | None = None,
    lifetime_a_out: Lifetime = NO_LIMITS,
) -> list[socket.socket]:
    sas_a, sas_b = tunnel_sas(algorithm, encap, lifetime_a_out)
    sockets = []
    for side, sas, address in ((a, sas_a, INNER_A), (b, sas_b, INNER_B)):
        spec = InterfaceSpec(
            "ipsec1", IF_ID, mtu=1400, address=ipaddress.IPv4Interface(f"{address}/30"), tcp_mss=mss
        )
        await side.dataplane.create_interface(spec)
        assert "state DOWN" in sh("ip", "link", "show", "ipsec1", netns=side.netns)
        if encap:
            sock = encap_socket(side.netns)
            side.dataplane.register_encap_socket(sock)
            sockets.append(sock)
        await side.dataplane.add_policies(IF_ID)
        for spec_sa in sas:
            await side.dataplane.add_sa(spec_sa)
        await side.dataplane.set_link("ipsec1", True)
    return sockets


async def ping(netns: str, target: str, count: int = 3, tos: int = 0) -> int:
    """Run ping without blocking the event loop (events keep flowing); its exit status."""
    argv = ["ip", "netns", "exec", netns, "ping", "-n", "-q", "-c", str(count), "-i", "0.2"]
    argv += ["-W", "2", "-Q", str(tos), target]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await proc.wait()


async def stop_sides(*sides: Side) -> None:
    for side in sides:
        await side.dataplane.stop()


def assert_nothing_left(netns: str) -> None:
    """No SA, policy, interface or nft table of ours.  Larval states the kernel made for an
    ACQUIRE (SPI 0, no keys) cannot be deleted by SPI; they expire by themselves."""
    states = sh("ip", "xfrm", "state", netns=netns)
    assert [
        line for line in states.splitlines() if "spi 0x" in line and "spi 0x00000000" not in line
    ] == []
    assert sh("ip", "xfrm", "policy", netns=netns).strip() == ""
    assert "ipsec" not in sh("ip", "link", netns=netns)
    assert "rbipsec" not in sh("nft", "list", "tables", netns=netns)


def syn_to(netns: str, target: str, port: int) -> None:
    """One TCP SYN (nobody listens: the RST that follows is fine)."""

    def connect() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(3)
            with contextlib.suppress(OSError):
                sock.connect((target, port))

    in_netns(netns, connect)


# -- the tunnel ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("algorithm", "encap"),
    [(EspAlgorithm.AES_GCM_16, False), (EspAlgorithm.AES_CBC, True)],
    ids=["aes-gcm-esn-esp", "aes-cbc-sha256-espinudp"],
)
def test_ping_across_with_counters_tos_and_mss(
    namespaces: None, algorithm: EspAlgorithm, encap: bool
) -> None:
    async def scenario() -> None:
        a, b = await start_sides()
        outer = Sniffer(NS_B, "veth-b")
        sockets = await build_tunnel(a, b, algorithm, encap=encap, mss=1300)
        inner = Sniffer(NS_B, "ipsec1")
        assert await ping(NS_A, INNER_B, count=4, tos=0xB8) == 0
        syn_to(NS_A, INNER_B, 5001)

        # Counters through our code: both SAs and the interface saw the traffic.
        out_a = await a.dataplane.sa_counters(0x1001, Direction.OUT, IF_ID)
        in_b = await b.dataplane.sa_counters(0x1001, Direction.IN, IF_ID)
        assert out_a.packets >= 5 and in_b.packets >= 5
        assert out_a.bytes > 0 and out_a.last_used is not None
        assert in_b.integrity_errors == 0 and in_b.replay_errors == 0
        link_a = await a.dataplane.interface_counters("ipsec1")
        assert link_a.tx_packets >= 5 and link_a.rx_packets >= 4

        # The outer header: ESP (or ESP in UDP 4500) between the outer addresses, ToS 0.
        esp_frames = [
            (parse_ipv4(f.data), esp_of(parse_ipv4(f.data)))
            for f in outer.frames()
            if not f.outgoing
        ]
        esp_from_a = [(ip, esp) for ip, esp in esp_frames if esp and ip.src == str(OUTER_A)]
        assert len(esp_from_a) >= 5
        assert all(ip.proto == (17 if encap else 50) for ip, _ in esp_from_a)
        assert all(ip.tos & 0xFC == 0 for ip, _ in esp_from_a), "inner DSCP copied outward"

        # The inner packets: DSCP EF kept inside, MSS clamped from 1360 to 1300.
        inner_packets = [parse_ipv4(f.data) for f in inner.frames() if not f.outgoing]
        pings = [p for p in inner_packets if p.proto == 1]
        assert pings and all(p.tos == 0xB8 for p in pings)
        assert [tcp_mss_of_syn(p) for p in inner_packets if tcp_mss_of_syn(p)] == [1300]
        report_vectors(algorithm, encap, esp_from_a, inner_packets)

        await stop_sides(a, b)
        for sock in sockets:
            sock.close()
        assert_nothing_left(NS_A)
        assert_nothing_left(NS_B)

    run(scenario())


def report_vectors(
    algorithm: EspAlgorithm, encap: bool, esp_from_a: list[Any], inner_packets: list[Any]
) -> None:
    """Print the captured packets as ESP known-answer vectors on the guest console.

    tests/dataplane/vectors/linux-*.json were made from this output (see README there)."""
    packets = []
    iv_len = 16 if algorithm is EspAlgorithm.AES_CBC else 8
    for _ip, esp in esp_from_a[:4]:
        seq = int.from_bytes(esp[4:8], "big")
        if seq - 1 >= len(inner_packets):
            continue
        payload = inner_packets[seq - 1].raw
        packets.append(
            {
                "seq": seq,
                "iv": esp[8 : 8 + iv_len].hex(),
                "next_header": 4,
                "payload": payload.hex(),
                "esp": esp.hex(),
                "inner": payload.hex(),
            }
        )
    a_sa = tunnel_sas(algorithm, encap)[0][0]
    sa_json: dict[str, Any] = {
        "spi": f"{a_sa.spi:08x}",
        "algorithm": algorithm.value,
        "encryption_key": a_sa.encryption_key.hex(),
        "esn": a_sa.esn,
        "mode": "tunnel",
        "src": str(OUTER_A),
        "dst": str(OUTER_B),
    }
    if a_sa.integrity is not EspIntegrity.NONE:
        sa_json["integrity"] = a_sa.integrity.value
        sa_json["integrity_key"] = a_sa.integrity_key.hex()
    vector: dict[str, Any] = {
        "name": f"linux {algorithm.value} {'espinudp' if encap else 'esp'}",
        "sa": sa_json,
        "packets": packets,
    }
    try:
        with open("/dev/console", "w") as console:
            console.write(VECTOR_MARKER + json.dumps(vector) + "\n")
    except OSError:
        pass


# -- events --------------------------------------------------------------------------------
def test_packet_limits_raise_soft_then_hard_expiry_then_acquire(namespaces: None) -> None:
    async def scenario() -> None:
        a, b = await start_sides()
        limits = Lifetime(soft_packets=3, hard_packets=6)
        await build_tunnel(a, b, EspAlgorithm.AES_GCM_16, lifetime_a_out=limits)
        await ping(NS_A, INNER_B, count=8)
        await asyncio.sleep(0.5)
        expiries = [e for e in a.events if isinstance(e, SaExpired)]
        assert [(e.spi, e.direction, e.kind) for e in expiries] == [
            (0x1001, Direction.OUT, ExpiryKind.SOFT),
            (0x1001, Direction.OUT, ExpiryKind.HARD),
        ]
        assert all(e.if_id == IF_ID for e in expiries)
        # The outbound SA is gone; the policy stays, so traffic makes the kernel ask
        # for a new SA (ACQUIRE) instead of leaving in clear.
        assert await ping(NS_A, INNER_B, count=2) != 0
        await asyncio.sleep(0.5)
        assert TrafficWhileDown(IF_ID, "ipsec1") in a.events
        counters = await a.dataplane.interface_counters("ipsec1")
        assert counters.tx_dropped_down >= 1
        await stop_sides(a, b)
        assert_nothing_left(NS_A)

    run(scenario())


# -- interfaces ----------------------------------------------------------------------------
def test_unnumbered_interface_sources_from_the_borrowed_address(namespaces: None) -> None:
    async def scenario() -> None:
        a, b = await start_sides()
        await build_tunnel(a, b, EspAlgorithm.AES_GCM_16)
        sh("ip", "addr", "add", "10.200.0.1/32", "dev", "lo", netns=NS_A)
        unnumbered = InterfaceSpec(
            "ipsec2",
            if_id_for(2),
            address=None,
            borrowed_source=ipaddress.IPv4Address("10.200.0.1"),
        )
        await a.dataplane.create_interface(unnumbered)
        # Routes added while the link is down wait for it to come up.
        await a.dataplane.add_route("ipsec1", ipaddress.IPv4Network("10.77.0.0/16"))
        await a.dataplane.set_link("ipsec1", False)
        routes = sh("ip", "route", netns=NS_A)
        assert "10.77.0.0/16 dev ipsec1" not in routes
        assert "unreachable 10.77.0.0/16" in routes  # the guard: no fall-through in clear
        await a.dataplane.set_link("ipsec1", True)
        assert "10.77.0.0/16 dev ipsec1" in sh("ip", "route", netns=NS_A)

        # ipsec1 with the borrowed source: re-point it as an unnumbered interface.
        await a.dataplane.update_interface(
            InterfaceSpec(
                "ipsec1",
                IF_ID,
                address=ipaddress.IPv4Interface(f"{INNER_A}/30"),
                borrowed_source=ipaddress.IPv4Address("10.200.0.1"),
            )
        )
        await b.dataplane.add_route("ipsec1", ipaddress.IPv4Network("10.200.0.1/32"))
        await a.dataplane.add_route("ipsec1", ipaddress.IPv4Network("10.1.7.0/24"))
        sh("ip", "addr", "add", "10.1.7.1/32", "dev", "lo", netns=NS_B)
        inner = Sniffer(NS_B, "ipsec1")
        assert await ping(NS_A, "10.1.7.1", count=2) == 0
        sources = {parse_ipv4(f.data).src for f in inner.frames() if not f.outgoing}
        assert sources == {"10.200.0.1"}
        assert "fe80::" in sh("ip", "-6", "addr", "show", "dev", "ipsec1", netns=NS_A)
        sysctl = "/proc/sys/net/ipv6/conf/ipsec1/forwarding"
        assert sh("cat", sysctl, netns=NS_A).strip() == "0"
        await stop_sides(a, b)
        assert_nothing_left(NS_A)

    run(scenario())


def test_a_refused_sa_names_it_and_leaves_nothing(namespaces: None) -> None:
    async def scenario() -> None:
        a, b = await start_sides()
        await a.dataplane.add_policies(IF_ID)
        bad = sa(0x3003, Direction.OUT, OUTER_A, OUTER_B, EspAlgorithm.AES_GCM_16)
        with pytest.raises(DataplaneError, match="SA 0x00003003"):
            await a.dataplane.add_sa(replace(bad, encryption_key=bytes(7)))
        assert sh("ip", "xfrm", "state", netns=NS_A).strip() == ""
        with pytest.raises(DataplaneError, match="ipsec1"):
            await a.dataplane.set_link("ipsec1", True)
        await stop_sides(a, b)

    run(scenario())


def test_start_removes_what_a_crashed_run_left(namespaces: None) -> None:
    async def scenario() -> None:
        a, b = await start_sides()
        await build_tunnel(a, b, EspAlgorithm.AES_CBC, mss=1200)
        sh("ip", "xfrm", "policy", "add", "src", "192.0.2.0/24", "dst", "0.0.0.0/0",
           "dir", "out", "action", "block", netns=NS_A)  # fmt: skip
        # A crash: no stop().  A new run must find and remove our state, and only ours.
        again = XfrmDataplane(NS_A)
        await again.start(lambda _event: None)
        assert "ipsec1" not in sh("ip", "link", netns=NS_A)
        assert sh("ip", "xfrm", "state", netns=NS_A).strip() == ""
        assert "192.0.2.0/24" in sh("ip", "xfrm", "policy", netns=NS_A)
        assert "if_id" not in sh("ip", "xfrm", "policy", netns=NS_A)
        assert "rbipsec" not in sh("nft", "list", "tables", netns=NS_A)
        await again.stop()
        await b.dataplane.stop()

    run(scenario())


def test_stop_deletes_our_link_group_at_once_and_never_a_strangers_device(
    namespaces: None,
) -> None:
    async def scenario() -> None:
        side = Side(NS_A, XfrmDataplane(NS_A))
        await side.dataplane.start(side.events.append)
        for n in (1, 2, 3):
            await side.dataplane.create_interface(InterfaceSpec(f"ipsec{n}", if_id_for(n)))
        assert f"group {LINK_GROUP}" in sh("ip", "-d", "link", "show", "ipsec2", netns=NS_A)

        def delete_the_group() -> None:  # pyroute2's calls block: a thread, as the backend
            links = Links(NS_A)
            try:
                sh("ip", "link", "add", "other0", "type", "veth", "peer", "name", "other1",
                   netns=NS_A)  # fmt: skip
                sh("ip", "link", "set", "other0", "group", str(LINK_GROUP), netns=NS_A)
                assert links.delete_our_group() is False  # a stranger in the group
                assert "ipsec2" in sh("ip", "link", netns=NS_A)
                sh("ip", "link", "set", "other0", "group", "default", netns=NS_A)
                assert links.delete_our_group() is True
                assert "ipsec" not in sh("ip", "link", netns=NS_A)
                assert "other0" in sh("ip", "link", netns=NS_A)
            finally:
                links.close()

        await asyncio.to_thread(delete_the_group)
        await side.dataplane.stop()  # its interfaces are gone already: no error
        assert_nothing_left(NS_A)

    run(scenario())
