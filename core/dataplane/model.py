"""Values the dataplane API takes and returns (backend-independent)."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# if_id of interface ipsecN is IF_ID_BASE | N: a range of our own, so that a restarted
# daemon can tell its leftovers from other software's XFRM state.
IF_ID_BASE = 0x72620000
MAX_INTERFACES = 64


# Transport mode protects traffic addressed to the peer's outer address, so that traffic
# is steered into ipsecN while IKE and ESP themselves must keep taking the outer link.
# Everything the daemon and the dataplane send towards the peer outside the tunnel (IKE
# sockets, raw ESP sockets, the port-4500 socket, kernel SAs' output mark) carries
# BYPASS_MARK in the bits of BYPASS_MASK; unmarked traffic to the peer enters ipsecN.
BYPASS_MARK = 0x7262_0000
BYPASS_MASK = 0xFFFF_0000
# The userspace backend routes the peers' outer addresses into their TUN in a routing
# table of its own, selected by `not fwmark BYPASS_MARK/BYPASS_MASK` at this priority:
# right after `local` (0), before any policy-routing rule an administrator adds, which
# could otherwise route the traffic to the peer out in clear.
TRANSPORT_TABLE = 0x7262  # 29282
TRANSPORT_RULE_PRIORITY = 10
# Our interfaces' link group (29282): stop and start delete them all in one request when
# the group holds nothing else.  Each device deleted on its own waits for the kernel's
# RCU grace periods: 1-2.5 s for 64, against ~20-60 ms for the group.
LINK_GROUP = 0x7262


def if_id_for(index: int) -> int:
    if not 0 <= index < MAX_INTERFACES:
        raise ValueError(f"interface index {index} outside 0..{MAX_INTERFACES - 1}")
    return IF_ID_BASE | index


def is_our_if_id(if_id: int) -> bool:
    return if_id & ~0xFF == IF_ID_BASE and (if_id & 0xFF) < MAX_INTERFACES


class SaMode(enum.Enum):
    TUNNEL = "tunnel"
    TRANSPORT = "transport"


class Direction(enum.Enum):
    IN = "in"
    OUT = "out"


class EspAlgorithm(enum.Enum):
    """ESP transforms the dataplane implements (keys include the 4-byte salt for AEADs)."""

    AES_GCM_16 = "aes-gcm-16"  # RFC 4106; key 16/32 + 4 salt
    CHACHA20_POLY1305 = "chacha20-poly1305"  # RFC 7634; key 32 + 4 salt
    AES_CBC = "aes-cbc"  # RFC 3602; with an integrity algorithm


class EspIntegrity(enum.Enum):
    NONE = "none"
    HMAC_SHA1_96 = "hmac-sha1-96"
    HMAC_SHA2_256_128 = "hmac-sha2-256-128"
    HMAC_SHA2_384_192 = "hmac-sha2-384-192"
    HMAC_SHA2_512_256 = "hmac-sha2-512-256"


@dataclass(frozen=True)
class UdpEncap:
    """RFC 3948 ESP-in-UDP ports (source and destination as seen on the wire for this SA)."""

    sport: int
    dport: int


@dataclass(frozen=True)
class Lifetime:
    """Soft/hard limits; 0 means no limit.  Times are seconds after installation."""

    soft_bytes: int = 0
    hard_bytes: int = 0
    soft_packets: int = 0
    hard_packets: int = 0
    soft_seconds: int = 0
    hard_seconds: int = 0


@dataclass(frozen=True)
class SaSpec:
    """One ESP SA (one direction)."""

    spi: int  # host order
    direction: Direction
    src: IPAddress  # outer source
    dst: IPAddress  # outer destination
    mode: SaMode
    algorithm: EspAlgorithm
    encryption_key: bytes = field(repr=False)  # with salt for AEADs
    integrity: EspIntegrity = EspIntegrity.NONE
    integrity_key: bytes = field(default=b"", repr=False)
    esn: bool = False
    replay_window: int = 128
    encap: UdpEncap | None = None
    if_id: int = 0
    lifetime: Lifetime = Lifetime()


@dataclass(frozen=True)
class InterfaceSpec:
    """A peer's point-to-point interface ipsecN."""

    name: str  # "ipsecN"
    if_id: int
    mtu: int = 1400
    address: ipaddress.IPv4Interface | None = None  # None = unnumbered
    borrowed_source: ipaddress.IPv4Address | None = None  # unnumbered: source for packets
    tcp_mss: int | None = None  # clamp value, None = off
    underlay: str | None = None  # outer interface for xfrm_link, if any
    transport: TransportPeer | None = None  # transport mode only


@dataclass(frozen=True)
class TransportPeer:
    """Transport mode: the outer addresses whose traffic an interface protects.

    Traffic to `remote` is steered into the interface from its creation on, so that it
    never leaves in clear; `local`, when known, is the source that traffic must carry
    (transport mode keeps the addresses, and the peer checks them against the SA)."""

    remote: IPAddress
    local: IPAddress | None = None


@dataclass(frozen=True)
class SaCounters:
    bytes: int = 0
    packets: int = 0
    replay_errors: int = 0
    integrity_errors: int = 0
    other_errors: int = 0
    last_used: float | None = None  # monotonic seconds, None = never


@dataclass(frozen=True)
class InterfaceCounters:
    rx_bytes: int = 0
    rx_packets: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0
    rx_errors: int = 0
    tx_errors: int = 0
    tx_dropped_down: int = 0  # packets routed to the interface while no SA was installed


class ExpiryKind(enum.Enum):
    SOFT = "soft"
    HARD = "hard"


@dataclass(frozen=True)
class SaExpired:
    """A dataplane notification: an SA reached a soft or hard limit."""

    spi: int
    direction: Direction
    kind: ExpiryKind
    if_id: int


@dataclass(frozen=True)
class TrafficWhileDown:
    """Packets were routed into an interface that has no outbound SA (an ACQUIRE)."""

    if_id: int
    interface: str


DataplaneEvent = SaExpired | TrafficWhileDown
