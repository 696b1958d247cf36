"""ESP transport mode between IPv6 addresses (RFC 4303 section 3.1.1): IPv6 packets in,
IPv6 packets out, the header rebuilt from the SA's addresses on the way in; and which
IPv6 packets the userspace backend takes from a TUN for it."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import replace

import pytest

from core.dataplane.model import (
    Direction,
    EspAlgorithm,
    EspIntegrity,
    InterfaceSpec,
    Lifetime,
    SaMode,
    SaSpec,
    TransportPeer,
)
from core.dataplane.userspace.backend import _to_ipv6_transport_peer
from core.dataplane.userspace.esp import DropKind, EspDropped, EspSa, EspSendRefused
from core.dataplane.userspace.gro import PLAIN
from core.dataplane.userspace.packet import build_ipv4_header

A6 = ipaddress.IPv6Address("2001:db8::1")
B6 = ipaddress.IPv6Address("2001:db8::2")
SUITES = {
    "aes-gcm-128": (EspAlgorithm.AES_GCM_16, bytes(range(20)), EspIntegrity.NONE, b""),
    "aes-cbc-sha256": (
        EspAlgorithm.AES_CBC, bytes(32), EspIntegrity.HMAC_SHA2_256_128, bytes(32)
    ),
}  # fmt: skip
UDP = 17
MLD_GROUP = ipaddress.IPv6Address("ff02::16")


def pair(
    suite: str = "aes-gcm-128",
    src: ipaddress.IPv4Address | ipaddress.IPv6Address = A6,
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address = B6,
) -> tuple[EspSa, EspSa]:
    algorithm, key, integrity, integrity_key = SUITES[suite]
    outbound = SaSpec(
        spi=0xC0FFEE02, direction=Direction.OUT, src=src, dst=dst, mode=SaMode.TRANSPORT,
        algorithm=algorithm, encryption_key=key, integrity=integrity,
        integrity_key=integrity_key, esn=False, replay_window=64, lifetime=Lifetime(),
    )  # fmt: skip
    return EspSa(outbound, 0.0), EspSa(replace(outbound, direction=Direction.IN), 0.0)


def ipv6_packet(
    payload: bytes, next_header: int = UDP, *, hops: int = 7, flow: int = 0x6ABCDE12
) -> bytes:
    """An IPv6 packet from some other pair of addresses (the rebuilt header must not
    copy them), with a traffic class and flow label (not carried) and `hops`."""
    return (
        struct.pack("!IHBB", flow, len(payload), next_header, hops)
        + ipaddress.IPv6Address("2001:db8:ffff::a").packed
        + ipaddress.IPv6Address("2001:db8:ffff::b").packed
        + payload
    )


@pytest.mark.parametrize("suite", sorted(SUITES))
@pytest.mark.parametrize("size", [0, 1, 37, 1200])
def test_round_trip_rebuilds_the_ipv6_header_from_the_sa(suite: str, size: int) -> None:
    outbound, inbound = pair(suite)
    payload = bytes(range(256)) * 5
    udp = struct.pack("!HHHH", 4000, 5001, 8 + size, 0xBEEF) + payload[:size]
    esp = outbound.encapsulate(ipv6_packet(udp))
    inner = inbound.decapsulate(esp)
    version_class_flow, length, next_header, hops = struct.unpack_from("!IHBB", inner)
    assert (version_class_flow, length, next_header, hops) == (6 << 28, len(udp), UDP, 64)
    assert inner[8:24] == A6.packed and inner[24:40] == B6.packed
    assert inner[40:] == udp
    assert outbound.counters().packets == 1 and inbound.counters().packets == 1


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (ipv6_packet(bytes(8), next_header=0), "extension header 0"),  # hop-by-hop
        (ipv6_packet(bytes(8), next_header=44), "extension header 44"),  # fragment
        (ipv6_packet(bytes(8), next_header=60), "extension header 60"),  # destination opts
        (ipv6_packet(bytes(8))[:-1], "payload length"),
        (ipv6_packet(b"")[:39], "only IPv6"),
        (
            build_ipv4_header(
                src=ipaddress.IPv4Address("10.0.0.1"),
                dst=ipaddress.IPv4Address("10.0.0.2"),
                protocol=UDP,
                payload_length=8,
            )
            + bytes(20),
            "only IPv6",
        ),
    ],
    ids=["hop-by-hop", "fragment", "dstopts", "truncated", "short", "ipv4"],
)
def test_what_cannot_be_carried_is_refused(packet: bytes, reason: str) -> None:
    outbound, _inbound = pair()
    with pytest.raises(EspSendRefused, match=reason):
        outbound.encapsulate(packet)
    assert outbound.next_sequence == 1  # nothing spent


def test_an_ipv4_sa_still_refuses_ipv6_packets() -> None:
    outbound, _inbound = pair(
        src=ipaddress.IPv4Address("198.51.100.1"), dst=ipaddress.IPv4Address("198.51.100.2")
    )
    with pytest.raises(EspSendRefused, match="only IPv4"):
        outbound.encapsulate(ipv6_packet(bytes(8)))


def test_a_payload_too_long_for_ipv6_is_dropped() -> None:
    outbound, inbound = pair("aes-cbc-sha256")
    jumbo = outbound.protect(bytes(0x10000), UDP, seq=1)  # no IPv6 header holds that
    with pytest.raises(EspDropped) as dropped:
        inbound.decapsulate(jumbo)
    assert dropped.value.kind is DropKind.MALFORMED
    assert inbound.counters().other_errors == 1


@pytest.mark.parametrize(
    ("transport", "source", "destination", "carried"),
    [
        (TransportPeer(B6, A6), A6, B6, True),
        (TransportPeer(B6, None), A6, B6, True),  # no local address known: any source
        (TransportPeer(B6, A6), ipaddress.IPv6Address("2001:db8::99"), B6, False),
        (TransportPeer(B6, A6), ipaddress.IPv6Address("fe80::1"), MLD_GROUP, False),
        (TransportPeer(ipaddress.IPv4Address("198.51.100.2")), A6, B6, False),
        (None, A6, B6, False),
    ],
    ids=["to-peer", "any-source", "other-source", "link-local", "ipv4-peer", "tunnel-mode"],
)
def test_the_tun_carries_only_ipv6_between_the_transport_mode_addresses(
    transport: TransportPeer | None,
    source: ipaddress.IPv6Address,
    destination: ipaddress.IPv6Address,
    carried: bool,
) -> None:
    spec = InterfaceSpec(name="ipsec1", if_id=1, transport=transport)
    packet = bytearray(ipv6_packet(bytes(8)))
    packet[8:24], packet[24:40] = source.packed, destination.packed
    assert _to_ipv6_transport_peer(spec, PLAIN + bytes(packet)) is carried
    assert not _to_ipv6_transport_peer(spec, PLAIN + bytes(packet[:39]))  # too short
