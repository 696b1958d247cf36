"""What the daemon asks the host's network stack: routes, addresses, names.

`NetInfo` is the narrow interface; `SystemNetInfo` answers through pyroute2 (in a worker
thread, these are rare calls) and the resolver; unit tests pass a fake.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any, Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 3927 link-local: the source of unnumbered tunnels when no interface lends an IPv4.
LINK_LOCAL_SOURCE = ipaddress.IPv4Address("169.254.0.1")
MAIN_TABLE = 254


class NetInfoError(OSError):
    """A lookup failed; the message says what was looked up and why it failed."""


class NetInfo(Protocol):
    async def route_source(self, destination: IPAddress) -> IPAddress:
        """The source address the kernel would use toward `destination`."""
        ...

    async def unnumbered_source(self, interface: str) -> ipaddress.IPv4Address:
        """The IPv4 address unnumbered tunnels borrow: the first IPv4 address of
        `interface` ("" = the default route's interface), else 169.254.0.1."""
        ...

    async def resolve(self, host: str, family: int | None) -> IPAddress:
        """The first address of `host` (family AF_INET/AF_INET6, or None for either)."""
        ...


class SystemNetInfo:
    """`NetInfo` of the network namespace the daemon runs in."""

    async def route_source(self, destination: IPAddress) -> IPAddress:
        return await asyncio.to_thread(_route_source, destination)

    async def unnumbered_source(self, interface: str) -> ipaddress.IPv4Address:
        return await asyncio.to_thread(_unnumbered_source, interface)

    async def resolve(self, host: str, family: int | None) -> IPAddress:
        loop = asyncio.get_running_loop()
        try:
            answers = await loop.getaddrinfo(
                host, None, family=family or socket.AF_UNSPEC, type=socket.SOCK_DGRAM
            )
        except OSError as error:
            raise NetInfoError(f"cannot resolve {host!r}: {error}") from None
        for _family, _type, _proto, _name, sockaddr in answers:
            return ipaddress.ip_address(sockaddr[0])
        raise NetInfoError(f"cannot resolve {host!r}: no address")


def _route_source(destination: IPAddress) -> IPAddress:
    from pyroute2 import IPRoute  # on first use: pyroute2 costs ~60 ms and ~10 MiB to import
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        try:
            routes: list[Any] = list(ipr.route("get", dst=str(destination)))
        except (NetlinkError, OSError) as error:
            raise NetInfoError(f"no route to {destination}: {error}") from None
    for route in routes:
        source = route.get_attr("RTA_PREFSRC")
        if source:
            return ipaddress.ip_address(source)
    raise NetInfoError(f"no source address toward {destination}")


def _unnumbered_source(interface: str) -> ipaddress.IPv4Address:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        if interface:
            found = ipr.link_lookup(ifname=interface)
            index = int(found[0]) if found else None
        else:
            index = _default_route_interface(ipr)
        if index is None:
            return LINK_LOCAL_SOURCE
        for address in ipr.get_addr(family=socket.AF_INET, index=index):
            local = address.get_attr("IFA_LOCAL") or address.get_attr("IFA_ADDRESS")
            if local:
                return ipaddress.IPv4Address(local)
    return LINK_LOCAL_SOURCE


def _default_route_interface(ipr: Any) -> int | None:
    for route in ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE):
        if route["dst_len"] == 0 and route.get_attr("RTA_OIF") is not None:
            return int(route.get_attr("RTA_OIF"))
        multipath = route.get_attr("RTA_MULTIPATH")
        if route["dst_len"] == 0 and multipath:
            return int(multipath[0]["oif"])
    return None
