"""Identification payloads (RFC 2407 4.6.2): phase 1 identities and quick mode IDci/IDcr.

Phase 1 carries the peer's identity; the ID types IKEv1 shares with IKEv2 have the same
numbers (IPv4/IPv6 address, FQDN, USER_FQDN = RFC822, DER DN, KEY_ID).  Quick mode IDs are
the traffic selectors: route-based tunnels send 0.0.0.0/0 both ways as ID_IPV4_ADDR_SUBNET;
a responder accepts anything inside what it allows, an initiator accepts a narrower answer.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from core.ike.constants import IdType as CoreIdType
from core.ike.constants import TsType
from core.ike.policy import Identity
from core.ike.v1.constants import IdType
from core.ike.v1.errors import InvalidIdInformation
from core.ike.v1.payloads import IdPayload
from core.ike.v2.payloads import TrafficSelector

_UDP = 17
_PHASE1_PORTS = (0, 500, 4500)


def identity_payload(identity: Identity) -> IdPayload:
    return IdPayload(int(identity.id_type), identity.data)


def identity_of(payload: IdPayload) -> Identity:
    """The identity a phase 1 ID payload names (RFC 2407 4.6.2: protocol/port 0 or UDP)."""
    if (payload.protocol, payload.port) != (0, 0) and not (
            payload.protocol == _UDP and payload.port in _PHASE1_PORTS):
        raise InvalidIdInformation(f"phase 1 ID with protocol {payload.protocol} "
                                   f"port {payload.port}")
    sizes = {IdType.IPV4_ADDR: 4, IdType.IPV6_ADDR: 16}
    if payload.id_type not in CoreIdType._value2member_map_ or not payload.data:
        raise InvalidIdInformation(f"unsupported phase 1 ID type {payload.id_type}")
    wanted = sizes.get(IdType(payload.id_type))
    if wanted is not None and len(payload.data) != wanted:
        raise InvalidIdInformation(f"address ID of {len(payload.data)} bytes")
    return Identity(CoreIdType(payload.id_type), payload.data)


@dataclass(frozen=True)
class Selector:
    """One side of a quick mode: an IPv4 range with protocol and port."""

    start: int
    end: int
    protocol: int = 0
    port: int = 0

    @classmethod
    def of_network(cls, network: ipaddress.IPv4Network) -> Selector:
        return cls(int(network.network_address), int(network.broadcast_address))

    def within(self, other: Selector) -> bool:
        return other.start <= self.start and self.end <= other.end and \
            other.protocol in (0, self.protocol) and other.port in (0, self.port)

    def payload(self) -> IdPayload:
        start, end = ipaddress.IPv4Address(self.start), ipaddress.IPv4Address(self.end)
        if self.start == self.end:
            return IdPayload(IdType.IPV4_ADDR, start.packed, self.protocol, self.port)
        nets = list(ipaddress.summarize_address_range(start, end))
        if len(nets) == 1:
            return IdPayload(IdType.IPV4_ADDR_SUBNET, start.packed + nets[0].netmask.packed,
                             self.protocol, self.port)
        return IdPayload(IdType.IPV4_ADDR_RANGE, start.packed + end.packed, self.protocol,
                         self.port)

    def traffic_selector(self) -> TrafficSelector:
        ports = (self.port, self.port) if self.port else (0, 0xFFFF)
        return TrafficSelector(TsType.IPV4_ADDR_RANGE, self.protocol, *ports,
                               ipaddress.IPv4Address(self.start), ipaddress.IPv4Address(self.end))

    def describe(self) -> str:
        start, end = ipaddress.IPv4Address(self.start), ipaddress.IPv4Address(self.end)
        nets = list(ipaddress.summarize_address_range(start, end))
        text = str(nets[0]) if len(nets) == 1 else f"{start}-{end}"
        if self.protocol or self.port:
            text += f"[{self.protocol}/{self.port}]"
        return text


def selector_of(payload: IdPayload) -> Selector:
    """The IPv4 range a quick mode ID names (IPv6 inner traffic is not forwarded)."""
    data = payload.data
    if payload.id_type == IdType.IPV4_ADDR and len(data) == 4:
        value = int.from_bytes(data, "big")
        return Selector(value, value, payload.protocol, payload.port)
    if payload.id_type == IdType.IPV4_ADDR_SUBNET and len(data) == 8:
        address, mask = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:], "big")
        inverted = ~mask & 0xFFFFFFFF
        if inverted & (inverted + 1):
            raise InvalidIdInformation(f"non-contiguous netmask {data[4:].hex()}")
        start = address & mask
        return Selector(start, start | inverted, payload.protocol, payload.port)
    if payload.id_type == IdType.IPV4_ADDR_RANGE and len(data) == 8:
        start, end = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:], "big")
        if start > end:
            raise InvalidIdInformation("ID range ends before it starts")
        return Selector(start, end, payload.protocol, payload.port)
    raise InvalidIdInformation(f"unsupported quick mode ID type {payload.id_type} "
                               f"with {len(data)} bytes")


def host_selector(host: str) -> Selector | None:
    """The /32 selector of an outer IPv4 address (quick mode without IDs), else None."""
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv4Address):
        return Selector(int(address), int(address))
    return None
