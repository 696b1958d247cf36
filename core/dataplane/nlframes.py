"""Netlink datagrams split into messages: shared by the XFRM socket and the rtnetlink
client (no pyroute2 here: the userspace dataplane's start does not import it)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id


def parse_messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """Split a datagram into (type, sequence number, whole message bytes); a length that
    does not fit ends the walk."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, msg_type, _flags, seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            return
        yield msg_type, seq, data[offset : offset + length]
        offset += (length + 3) & ~3
