"""Transport mode on the userspace dataplane: the peers' outer addresses routed into ipsecN.

Transport mode protects the traffic addressed to the peer's outer address itself.  That
address is also where IKE and ESP go, so one rule splits the two:

    ip rule add not fwmark BYPASS_MARK/BYPASS_MASK lookup TRANSPORT_TABLE pref PRIORITY
    ip route add <peer>/32 dev ipsecN table TRANSPORT_TABLE proto RTPROT_RBIPSEC

Packets without the mark (everything the node sends to the peer) take the table and enter
the TUN, where the backend encrypts them; the IKE sockets, the raw ESP sockets and the
port-4500 socket set SO_MARK = BYPASS_MARK, skip the rule and leave by the main table.
Linux flushes a device's routes when its link goes down, so each peer also gets a guard in
our table, `unreachable <peer>/32 metric GUARD_METRIC`, bound to no device: while the
tunnel is down the traffic is refused instead of falling through to the main table in
clear, and `restore` puts the device route back when the link comes up.  The rule goes
with the last peer; `remove_all` clears the rules and the table after a crash.

The kernel dataplane cannot use this: an XFRM interface drops transport-mode packets
routed into it ("Local routing loop detected", see xfrm/redirect.py), so it redirects them
with tc instead.  The argument builders are pure, for tests without root.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from core.dataplane.model import (
    BYPASS_MARK,
    BYPASS_MASK,
    TRANSPORT_RULE_PRIORITY,
    TRANSPORT_TABLE,
    IPAddress,
    TransportPeer,
)

RTPROT_RBIPSEC = 114  # the protocol number of all our routes (tun.py, xfrm/links.py)
GUARD_METRIC = 0xFFFFFF00  # the metric of all our guard routes
FIB_RULE_INVERT = 0x2  # linux/fib_rules.h: the rule matches what its selector does not


def family_of(address: IPAddress) -> int:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


def host_prefix(address: IPAddress) -> str:
    return f"{address}/{address.max_prefixlen}"


def rule_args(family: int) -> dict[str, Any]:
    """`not fwmark BYPASS_MARK/BYPASS_MASK lookup TRANSPORT_TABLE` at our priority."""
    return {
        "family": family,
        "table": TRANSPORT_TABLE,
        "priority": TRANSPORT_RULE_PRIORITY,
        "fwmark": BYPASS_MARK,
        "fwmask": BYPASS_MASK,
        "flags": FIB_RULE_INVERT,
        "action": "FR_ACT_TO_TBL",
    }


def route_args(peer: TransportPeer, ifindex: int) -> dict[str, Any]:
    """The peer's outer address (a host route) into interface `ifindex`, in our table.

    With the local outer address as preferred source: an address of the interface
    itself would otherwise be picked, and the peer's SA expects the outer addresses."""
    args: dict[str, Any] = {
        "family": family_of(peer.remote),
        "dst": host_prefix(peer.remote),
        "oif": ifindex,
        "table": TRANSPORT_TABLE,
        "proto": RTPROT_RBIPSEC,
    }
    if peer.local is not None:
        args["prefsrc"] = str(peer.local)
    return args


def guard_args(peer: IPAddress) -> dict[str, Any]:
    """`unreachable <peer>/32` in our table: what answers while the device route is gone."""
    return {
        "family": family_of(peer),
        "dst": host_prefix(peer),
        "type": "unreachable",
        "priority": GUARD_METRIC,
        "table": TRANSPORT_TABLE,
        "proto": RTPROT_RBIPSEC,
    }


def is_our_rule(rule: Any) -> bool:
    """A rule from a dump that selects our table (this run's or a crashed one's)."""
    table = rule.get_attr("FRA_TABLE") or rule["table"]
    return bool(
        table == TRANSPORT_TABLE and rule.get_attr("FRA_PRIORITY") == TRANSPORT_RULE_PRIORITY
    )


def set_bypass_mark(sock: socket.socket) -> None:
    """Mark a socket's packets so that they leave outside the tunnels (needs CAP_NET_ADMIN)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, BYPASS_MARK)


async def _results(reply: Any) -> list[Any]:
    if hasattr(reply, "__aiter__"):
        return [item async for item in reply]
    return list(reply)


class TransportRoutes:
    """The rule and our table, on the userspace backend's AsyncIPRoute socket.

    Which peer address each interface protects is kept here, so the rule exists exactly
    while some route does (one rule per address family).
    """

    def __init__(self, ipr: Any = None) -> None:
        self._ipr = ipr  # None: open() makes one in the current network namespace
        self.routes: dict[int, TransportPeer] = {}  # ifindex -> the peer it protects

    async def open(self) -> None:
        if self._ipr is None:
            self._ipr = AsyncIPRoute()
            await self._ipr.setup_endpoint()

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def add(self, ifindex: int, peer: TransportPeer) -> None:
        """Guard, device route (once the link is up), the rule for the family's first peer.

        Adding again for the same interface (a new source address, or another peer
        address) installs the new route before the old one goes, so traffic to the peer
        is never without a route into the interface meanwhile.

        On failure only what this call added is undone: a first add leaves nothing, a
        re-add leaves the interface's earlier route, guard and rule as they were (the
        caller sees the NetlinkError)."""
        old = self.routes.get(ifindex)
        family = family_of(peer.remote)
        first = not self._peers_of(family)
        try:
            await self._ipr.route("replace", **guard_args(peer.remote))
            await self._device_route(ifindex, peer)
            if first:
                await self._ensure_rule(family)
        except BaseException:
            with contextlib.suppress(NetlinkError):
                await self._undo_add(ifindex, peer, old, first)
            raise
        self.routes[ifindex] = peer
        if old is not None and old.remote != peer.remote:
            await self._forget(ifindex, old)

    async def _undo_add(
        self, ifindex: int, peer: TransportPeer, old: TransportPeer | None, first: bool
    ) -> None:
        """What a failed `add` of `peer` may have put in place, and nothing that was there."""
        if old is not None and old.remote == peer.remote:
            # The guard existed; a failed route replace leaves the old route in place, but
            # one that went through before a later step failed must carry the old source.
            await self._device_route(ifindex, old)
            return
        with contextlib.suppress(NetlinkError):
            await self._ipr.route("del", **route_args(peer, ifindex))
        if first:
            await self._delete_rules(family_of(peer.remote))
        if peer.remote not in self._peers_of(family_of(peer.remote)):
            await self._ipr.route("del", **guard_args(peer.remote))

    async def restore(self, ifindex: int) -> None:
        """The device route again, after the link came up (Linux flushed it when down)."""
        peer = self.routes.get(ifindex)
        if peer is not None:
            await self._device_route(ifindex, peer)

    async def _device_route(self, ifindex: int, peer: TransportPeer) -> None:
        try:
            await self._ipr.route("replace", **route_args(peer, ifindex))
        except NetlinkError as error:
            if error.code != errno.ENETDOWN:  # link down: `restore` adds it when up
                raise

    async def remove(self, ifindex: int) -> None:
        """The peer's routes (the device route may be gone with the device), maybe the rule."""
        peer = self.routes.pop(ifindex, None)
        if peer is not None:
            await self._forget(ifindex, peer)

    async def _forget(self, ifindex: int, peer: TransportPeer) -> None:
        """`peer`'s device route, its guard and the family's rule unless still in use."""
        with contextlib.suppress(NetlinkError):
            await self._ipr.route("del", **route_args(peer, ifindex))
        family = family_of(peer.remote)
        if not self._peers_of(family):
            await self._delete_rules(family)
        if peer.remote not in self._peers_of(family):
            with contextlib.suppress(NetlinkError):
                await self._ipr.route("del", **guard_args(peer.remote))

    def _peers_of(self, family: int) -> list[IPAddress]:
        return [peer.remote for peer in self.routes.values() if family_of(peer.remote) == family]

    async def remove_all(self) -> None:
        """Our rules and every route in our table, including a crashed run's."""
        self.routes.clear()
        for family in (socket.AF_INET, socket.AF_INET6):
            await self._delete_rules(family)
            for route in await _results(await self._ipr.route("dump", family=family)):
                if route.get_attr("RTA_TABLE") != TRANSPORT_TABLE:
                    continue
                found = {
                    "family": family,
                    "dst": f"{route.get_attr('RTA_DST')}/{route['dst_len']}",
                    "table": TRANSPORT_TABLE,
                    "type": route["type"],
                }
                for key, attr in (("oif", "RTA_OIF"), ("priority", "RTA_PRIORITY")):
                    if route.get_attr(attr) is not None:
                        found[key] = route.get_attr(attr)
                await self._ipr.route("del", **found)

    async def _ensure_rule(self, family: int) -> None:
        await self._delete_rules(family)  # exactly one, whatever a crash left
        await self._ipr.rule("add", **rule_args(family))

    async def _delete_rules(self, family: int) -> None:
        for rule in await _results(await self._ipr.rule("dump", family=family)):
            if is_our_rule(rule):
                await self._ipr.rule("del", **rule_args(family))
