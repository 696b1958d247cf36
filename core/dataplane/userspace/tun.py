"""TUN devices and their link configuration (pyroute2) for the userspace dataplane.

Each peer interface is a TUN device ipsecN (IFF_TUN | IFF_NO_PI | IFF_VNET_HDR: the fd
carries IP packets, each behind a little-endian virtio_net_hdr, so that the backend can
write coalesced TCP segments as one GSO packet; no offloads are enabled for reading).
Links, addresses and routes go through pyroute2's `AsyncIPRoute` in the current network
namespace.

Linux flushes the IPv4 routes of a device when its link goes down, so traffic for those
prefixes would fall through to a less specific route -- possibly a default route, in
clear.  Every prefix routed into an interface therefore also gets a *guard*: an
`unreachable` route for the same prefix at the highest metric, bound to no device.  While
the link is up the device route wins; while it is down the guard answers EHOSTUNREACH.
Our routes carry protocol `RTPROT_RBIPSEC` so a restarted daemon can find its leftovers.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import socket
import struct
from pathlib import Path
from typing import Any

from pyroute2 import AsyncIPRoute

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
    """A non-blocking fd for a new TUN device `name`; closing the fd removes the device."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        fcntl.ioctl(fd, TUNSETVNETLE, struct.pack("i", 1))
    except OSError:
        os.close(fd)
        raise
    return fd


def disable_ipv6_forwarding(name: str) -> None:
    """IPv6 is not forwarded through the tunnel; the link-local address stays."""
    path = Path("/proc/sys/net/ipv6/conf") / name / "forwarding"
    if path.exists():  # absent when the kernel runs without IPv6
        path.write_text("0\n")


async def _results(reply: Any) -> list[Any]:
    """pyroute2 answers with a list or an async generator, depending on the call."""
    if hasattr(reply, "__aiter__"):
        return [item async for item in reply]
    return list(reply)


class LinkConfig:
    """The rtnetlink calls the userspace backend needs, on one AsyncIPRoute socket."""

    def __init__(self) -> None:
        self._ipr: Any = None

    async def open(self) -> None:
        self._ipr = AsyncIPRoute()
        await self._ipr.setup_endpoint()

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def ifindex(self, name: str) -> int:
        # An ioctl, not an rtnetlink round trip: pyroute2's parsed replies are transient
        # garbage that fragments the heap, and memory per tunnel counts (issue 4).
        return socket.if_nametoindex(name)

    async def our_tun_links(self) -> list[tuple[int, str]]:
        """TUN devices named ipsec0..63 (left by a crashed run, or by another instance)."""
        found = []
        for link in await _results(await self._ipr.link("dump")):
            name = link.get_attr("IFLA_IFNAME") or ""
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            if kind == "tun" and TUN_NAME.fullmatch(name):
                found.append((int(link["index"]), name))
        return found

    async def delete_link(self, index: int) -> None:
        await self._ipr.link("del", index=index)

    async def set_mtu(self, index: int, mtu: int) -> None:
        await self._ipr.link("set", index=index, mtu=mtu)

    async def set_up(self, index: int, up: bool) -> None:
        await self._ipr.link("set", index=index, state="up" if up else "down")

    async def set_address(
        self, index: int, address: ipaddress.IPv4Interface | None, *, fresh: bool = False
    ) -> None:
        """Make `address` the only IPv4 address of the link (None: unnumbered).

        A `fresh` link has no IPv4 address yet, so the address dump is skipped: it costs
        time and memory in proportion to all the addresses in the namespace.
        """
        existing_addresses = (
            [] if fresh else await _results(await self._ipr.addr("dump", index=index))
        )
        for existing in existing_addresses:
            if existing["family"] == 2 and existing["index"] == index:
                await self._ipr.addr(
                    "del", index=index, address=existing.get_attr("IFA_LOCAL"),
                    prefixlen=existing["prefixlen"],
                )  # fmt: skip
        if address is not None:
            await self._ipr.addr(
                "add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
            )

    async def replace_route(
        self, index: int, prefix: ipaddress.IPv4Network, src: ipaddress.IPv4Address | None
    ) -> None:
        extra = {"prefsrc": str(src)} if src is not None else {}
        await self._ipr.route(
            "replace", dst=str(prefix), oif=index, proto=RTPROT_RBIPSEC, table=MAIN_TABLE,
            **extra,
        )  # fmt: skip

    async def delete_route(self, index: int, prefix: ipaddress.IPv4Network) -> None:
        await self._ipr.route("del", dst=str(prefix), oif=index, table=MAIN_TABLE)

    async def replace_guard(self, prefix: ipaddress.IPv4Network) -> None:
        await self._ipr.route(
            "replace", dst=str(prefix), type="unreachable", priority=GUARD_METRIC,
            proto=RTPROT_RBIPSEC, table=MAIN_TABLE,
        )  # fmt: skip

    async def delete_guard(self, prefix: ipaddress.IPv4Network) -> None:
        await self._ipr.route(
            "del", dst=str(prefix), type="unreachable", priority=GUARD_METRIC, table=MAIN_TABLE
        )

    async def our_guards(self) -> list[ipaddress.IPv4Network]:
        guards = []
        for route in await _results(await self._ipr.route("dump", family=2)):
            if (
                route["proto"] == RTPROT_RBIPSEC
                and route.get_attr("RTA_PRIORITY") == GUARD_METRIC
                and route.get_attr("RTA_OIF") is None
            ):
                destination = route.get_attr("RTA_DST") or "0.0.0.0"
                guards.append(ipaddress.IPv4Network(f"{destination}/{route['dst_len']}"))
        return guards
