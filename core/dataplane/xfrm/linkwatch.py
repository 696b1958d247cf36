"""Devices that appear: rtnetlink link events, so transport-mode redirects cover them.

A transport-mode redirect (redirect.py) sits on every device the traffic to the peer may
leave by.  A device created later (a new uplink, a VLAN, a tunnel) would carry that
traffic in clear until the redirect is installed there too, so the kernel backend
watches RTM_NEWLINK and covers new devices at once.  Non-blocking; a socket opened in a
named namespace stays bound to it.
"""

from __future__ import annotations

import errno
import socket
import struct

from core.dataplane.nlframes import NLMSGHDR, parse_messages
from core.dataplane.xfrm.netlink import in_netns

RTMGRP_LINK = 0x1
RTM_NEWLINK = 16
IFLA_IFNAME = 3
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTATTR = struct.Struct("=HH")  # length, type
_RECV_SIZE = 1 << 16
EVERY_DEVICE = "*"  # events were lost (receive buffer overrun): any device may be new


def new_link_names(data: bytes) -> set[str]:
    """The device names in the RTM_NEWLINK messages of one netlink datagram."""
    names: set[str] = set()
    for msg_type, _seq, message in parse_messages(data):
        if msg_type != RTM_NEWLINK:
            continue
        offset = NLMSGHDR.size + _IFINFOMSG.size
        while offset + _RTATTR.size <= len(message):
            length, kind = _RTATTR.unpack_from(message, offset)
            if length < _RTATTR.size or offset + length > len(message):
                break
            if kind == IFLA_IFNAME:
                value = message[offset + _RTATTR.size : offset + length].split(b"\0", 1)[0]
                if value:
                    names.add(value.decode(errors="replace"))
                break
            offset += (length + 3) & ~3
    return names


class LinkWatch:
    """An rtnetlink socket subscribed to link events."""

    def __init__(self, netns: str | None) -> None:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK
                                 | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)  # fmt: skip
            try:
                sock.bind((0, RTMGRP_LINK))
            except OSError:
                sock.close()
                raise
            return sock

        self._sock = in_netns(netns, make)

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> set[str]:
        """Names of devices added or changed since the last call; EVERY_DEVICE among them
        when the kernel had to drop events."""
        names: set[str] = set()
        while True:
            try:
                data = self._sock.recv(_RECV_SIZE)
            except BlockingIOError:
                return names
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                names.add(EVERY_DEVICE)
                continue
            names |= new_link_names(data)

    def close(self) -> None:
        self._sock.close()
