"""Small IPv4 helpers for the userspace dataplane (RFC 791, RFC 1071)."""

from __future__ import annotations

import ipaddress
import struct

IPV4_MIN_HEADER = 20
PROTO_IPIP = 4  # ESP next header for an IPv4 inner packet (tunnel mode)
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ESP = 50
PROTO_NONE = 59  # "no next header": an ESP dummy packet (RFC 4303 section 2.6)

_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_FLAG_MF = 0x2000
_OFFSET_MASK = 0x1FFF


def internet_checksum(data: bytes) -> int:
    """The 16-bit ones' complement of the ones' complement sum (RFC 1071)."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_header_length(packet: bytes) -> int:
    """IHL in bytes if `packet` starts with a plausible IPv4 header, else 0."""
    if len(packet) < IPV4_MIN_HEADER or packet[0] >> 4 != 4:
        return 0
    header_length = (packet[0] & 0x0F) * 4
    if header_length < IPV4_MIN_HEADER or header_length > len(packet):
        return 0
    return header_length


def ipv4_total_length(packet: bytes) -> int:
    return int.from_bytes(packet[2:4], "big")


def ipv4_is_fragment(packet: bytes) -> bool:
    flags_offset = int.from_bytes(packet[6:8], "big")
    return bool(flags_offset & (_FLAG_MF | _OFFSET_MASK))


def build_ipv4_header(
    *,
    src: ipaddress.IPv4Address,
    dst: ipaddress.IPv4Address,
    protocol: int,
    payload_length: int,
    ttl: int = 64,
    tos: int = 0,
) -> bytes:
    """A 20-byte IPv4 header with its checksum filled in (no options, id 0, DF clear)."""
    header = _IPV4_HEADER.pack(
        0x45, tos, IPV4_MIN_HEADER + payload_length, 0, 0, ttl, protocol, 0,
        src.packed, dst.packed,
    )  # fmt: skip
    checksum = internet_checksum(header)
    return header[:10] + checksum.to_bytes(2, "big") + header[12:]
