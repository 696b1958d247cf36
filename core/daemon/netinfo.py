"""What the daemon asks the host's network stack: routes, addresses, names.

`NetInfo` is the narrow interface; `SystemNetInfo` answers through the kernel (in a worker
thread, these are rare calls) and the resolver; unit tests pass a fake.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from core.dataplane.userspace.rtnl import RtnlSocket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 3927 link-local: the source of unnumbered tunnels when no interface lends an IPv4.
LINK_LOCAL_SOURCE = ipaddress.IPv4Address("169.254.0.1")
MAIN_TABLE = 254
_ONLY_DEFAULT_ROUTED = "255.255.255.254"


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
    """The kernel's route lookup for a datagram toward `destination` (like `ip route
    get`): a connected UDP socket sends nothing and learns its source address."""
    family = socket.AF_INET if destination.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((str(destination), 500))
        except OSError as error:
            raise NetInfoError(f"no route to {destination}: {error.strerror or error}") from None
        source = ipaddress.ip_address(probe.getsockname()[0])
    if source.is_unspecified:
        raise NetInfoError(f"no source address toward {destination}")
    return source


def _unnumbered_source(interface: str) -> ipaddress.IPv4Address:
    from core.dataplane.userspace.rtnl import RtnlSocket

    rtnl = RtnlSocket()
    try:
        if interface:
            try:
                index: int | None = socket.if_nametoindex(interface)
            except OSError:
                index = None
        else:
            index = _default_route_interface(rtnl)
        if index is None:
            return LINK_LOCAL_SOURCE
        for address in rtnl.ipv4_addresses():
            if address.index == index:
                return ipaddress.IPv4Address(address.address)
    finally:
        rtnl.close()
    return LINK_LOCAL_SOURCE


def _default_route_interface(rtnl: RtnlSocket) -> int | None:
    """The device of the default route: a look-up, not a dump (the routing table may be a
    full BGP table), toward an address of 240.0.0.0/4 (reserved, never announced), which
    only a default route covers; the main table is dumped only if something else does.
    (A look-up of 0.0.0.0 itself answers with the local route while the link is up.)"""
    route = rtnl.lookup_route(_ONLY_DEFAULT_ROUTED)
    if route is not None and route.prefixlen != 0:
        routes = rtnl.routes(socket.AF_INET, table=MAIN_TABLE)
        route = next((r for r in routes if r.table == MAIN_TABLE and r.prefixlen == 0), None)
    if route is not None and route.prefixlen == 0 and route.oif is not None:
        return int(route.oif)
    return None
