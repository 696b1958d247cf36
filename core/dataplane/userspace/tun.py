"""TUN devices and their link configuration (rtnetlink) for the userspace dataplane.

Each peer interface is a TUN device ipsecN (IFF_TUN | IFF_NO_PI | IFF_VNET_HDR: the fd
carries IP packets, each behind a little-endian virtio_net_hdr, so that the backend can
write coalesced TCP segments as one GSO packet; no offloads are enabled for reading).
Links, addresses and routes go through a small NETLINK_ROUTE client (rtnl.py) in the
current network namespace.

Linux flushes the IPv4 routes of a device when its link goes down, so traffic for those
prefixes would fall through to a less specific route -- possibly a default route, in
clear.  Every prefix routed into an interface therefore also gets a *guard*: an
`unreachable` route for the same prefix at the highest metric, bound to no device.  While
the link is up the device route wins; while it is down the guard answers EHOSTUNREACH.
Our routes carry protocol `RTPROT_RBIPSEC` so a restarted daemon can find its leftovers.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import re
import socket
import struct
from collections.abc import Iterable
from pathlib import Path

from core.dataplane.model import LINK_GROUP
from core.dataplane.userspace import rtnl

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUNSETVNETLE = 0x400454DC
TUN_NAME = re.compile(r"ipsec([0-9]|[1-5][0-9]|6[0-3])")
RTPROT_RBIPSEC = 114  # our route protocol number ("r"), unassigned in rtnetlink.h
GUARD_METRIC = 0xFFFFFF00
MAIN_TABLE = 254


def open_tun(name: str) -> int:
    """A non-blocking fd for a new TUN device `name`; closing the fd removes the device.

    The device promotes secondary addresses: `LinkConfig.configure` adds a new address
    before it deletes the old one, and a new one in the old one's subnet is its secondary,
    which Linux (promote_secondaries=0, the default) deletes along with the primary --
    leaving the link without IPv4 and its routes flushed."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        fcntl.ioctl(fd, TUNSETVNETLE, struct.pack("i", 1))
        (Path("/proc/sys/net/ipv4/conf") / name / "promote_secondaries").write_text("1\n")
    except OSError:
        os.close(fd)
        raise
    return fd


def disable_ipv6_forwarding(name: str) -> None:
    """IPv6 is not forwarded through the tunnel; the link-local address stays."""
    path = Path("/proc/sys/net/ipv6/conf") / name / "forwarding"
    if path.exists():  # absent when the kernel runs without IPv6
        path.write_text("0\n")


class LinkConfig:
    """The rtnetlink calls the userspace backend needs, on one NETLINK_ROUTE socket.

    The calls are coroutines for the backend's sake, but each is one blocking round
    trip that the kernel answers within the send (see rtnl.py); several changes to one
    interface go out together in one request batch.
    """

    def __init__(self) -> None:
        self._rtnl: rtnl.RtnlSocket | None = None

    @property
    def _socket(self) -> rtnl.RtnlSocket:
        if self._rtnl is None:
            raise rtnl.NetlinkError(errno.EBADF, "the rtnetlink socket is not open")
        return self._rtnl

    async def open(self) -> None:
        self._rtnl = rtnl.RtnlSocket()

    def close(self) -> None:
        if self._rtnl is not None:
            self._rtnl.close()
            self._rtnl = None

    async def ifindex(self, name: str) -> int:
        # An ioctl, not an rtnetlink round trip.
        return socket.if_nametoindex(name)

    async def our_tun_links(self) -> list[tuple[int, str]]:
        """TUN devices named ipsec0..63 (left by a crashed run, or by another instance)."""
        return [
            (link.index, link.name)
            for link in self._socket.links()
            if link.kind == "tun" and TUN_NAME.fullmatch(link.name)
        ]

    async def delete_link(self, index: int) -> None:
        self._socket.request(rtnl.delete_link(index))

    async def delete_our_links(self) -> bool:
        """Every device of our link group at once, when all of them are TUN devices
        ipsec0..63 (the group is only a number: anything else in it is left alone, and so
        is the group).  False when nothing was deleted this way."""
        grouped = [link for link in self._socket.links() if link.group == LINK_GROUP]
        if not grouped or not all(link.kind == "tun" and TUN_NAME.fullmatch(link.name)
                                  for link in grouped):  # fmt: skip
            return False
        (error,) = self._socket.transact([rtnl.delete_link_group(LINK_GROUP)])
        if error is not None and error.errno != errno.ENODEV:  # ENODEV: gone meanwhile
            raise error
        return error is None

    async def set_mtu(self, index: int, mtu: int) -> None:
        self._socket.request(rtnl.set_link(index, mtu=mtu))

    async def set_up(self, index: int, up: bool) -> None:
        self._socket.request(rtnl.set_link(index, up=up))

    async def configure(
        self, index: int, mtu: int, address: ipaddress.IPv4Interface | None, *,
        set_address: bool, fresh: bool = False, guard: ipaddress.IPv4Network | None = None,
    ) -> None:  # fmt: skip
        """MTU, (when `set_address`) `address` as the only IPv4 address of the link (None:
        unnumbered), and the guard route of the address's prefix, in one batch.

        A `fresh` link has no IPv4 address yet, so the address dump is skipped: it costs
        time and memory in proportion to all the addresses in the namespace; and it joins
        our link group.
        """
        messages = [rtnl.set_link(index, mtu=mtu, group=LINK_GROUP if fresh else None)]
        if set_address:
            # The new address goes first: a link left without IPv4 addresses, even for a
            # moment, has Linux flush its routes.
            wanted = None
            if address is not None:
                wanted = (str(address.ip), address.network.prefixlen)
                messages.append(rtnl.ipv4_address(index, *wanted, add=True))
            if not fresh:
                messages += [
                    rtnl.ipv4_address(index, old.address, old.prefixlen, add=False)
                    for old in self._socket.ipv4_addresses()
                    if old.index == index and (old.address, old.prefixlen) != wanted
                ]
        if guard is not None:
            messages.append(_guard(guard, replace=True))
        self._socket.request(*messages)

    async def replace_route(
        self, index: int, prefix: ipaddress.IPv4Network, src: ipaddress.IPv4Address | None
    ) -> None:
        self._socket.request(_route(index, prefix, src))

    async def replace_routes(
        self, index: int, prefixes: Iterable[ipaddress.IPv4Network],
        src: ipaddress.IPv4Address | None,
    ) -> None:  # fmt: skip
        """Device routes into the link, in one batch."""
        self._socket.request(*(_route(index, prefix, src) for prefix in prefixes))

    async def delete_route(self, index: int, prefix: ipaddress.IPv4Network) -> None:
        self._socket.request(rtnl.ip_route(
            str(prefix.network_address), prefix.prefixlen, table=MAIN_TABLE, replace=False,
            oif=index))  # fmt: skip

    async def replace_guard(self, prefix: ipaddress.IPv4Network) -> None:
        self._socket.request(_guard(prefix, replace=True))

    async def delete_guard(self, prefix: ipaddress.IPv4Network) -> None:
        self._socket.request(_guard(prefix, replace=False))

    async def delete_guards(self, prefixes: Iterable[ipaddress.IPv4Network]) -> None:
        """Remove the guards of `prefixes`; those already gone are no error."""
        outcomes = self._socket.transact([_guard(p, replace=False) for p in prefixes])
        for error in outcomes:
            if error is not None and error.errno not in _GONE:
                raise error

    async def our_guards(self) -> list[ipaddress.IPv4Network]:
        # Filtered by the kernel where it can (rtnl.RtnlSocket.routes): the main table
        # may hold a full BGP table.
        routes = self._socket.routes(table=MAIN_TABLE, protocol=RTPROT_RBIPSEC,
                                     kind=rtnl.RTN_UNREACHABLE)  # fmt: skip
        return [
            ipaddress.IPv4Network(f"{route.destination}/{route.prefixlen}")
            for route in routes
            if route.priority == GUARD_METRIC and route.oif is None
        ]


_GONE = (errno.ESRCH, errno.ENOENT)  # what the kernel says for a route that is not there


def _route(
    index: int, prefix: ipaddress.IPv4Network, src: ipaddress.IPv4Address | None
) -> rtnl.Message:
    return rtnl.ip_route(
        str(prefix.network_address), prefix.prefixlen, table=MAIN_TABLE, replace=True,
        oif=index, protocol=RTPROT_RBIPSEC, prefsrc=str(src) if src is not None else None,
    )  # fmt: skip


def _guard(prefix: ipaddress.IPv4Network, *, replace: bool) -> rtnl.Message:
    return rtnl.ip_route(
        str(prefix.network_address), prefix.prefixlen, table=MAIN_TABLE, replace=replace,
        unreachable=True, priority=GUARD_METRIC, protocol=RTPROT_RBIPSEC if replace else 0,
    )  # fmt: skip
