"""Transport mode on the userspace dataplane: the peers' outer addresses routed into ipsecN.

Transport mode protects the traffic addressed to the peer's outer address itself.  That
address is also where IKE and ESP go, so one rule splits the two:

    ip rule add not fwmark BYPASS_MARK/BYPASS_MASK lookup TRANSPORT_TABLE pref PRIORITY
    ip route add <peer>/32 dev ipsecN table TRANSPORT_TABLE proto RTPROT_RBIPSEC

Packets without the mark (everything the node sends to the peer) take the table and enter
the TUN, where the backend encrypts them; the IKE sockets, the raw ESP sockets and the
port-4500 socket set SO_MARK = BYPASS_MARK, skip the rule and leave by the main table.
PRIORITY is 10, right after `local`: an administrator's policy-routing rules come later
and cannot send the traffic to the peer out in clear first.
Linux flushes a device's routes when its link goes down, so each peer also gets a guard in
our table, `unreachable <peer>/32 metric GUARD_METRIC`, bound to no device: while the
tunnel is down the traffic is refused instead of falling through to the main table in
clear, and `restore` puts the device route back when the link comes up.  The rule goes
with the last peer; `remove_all` clears the rules and the table after a crash.

Requests go through the userspace backend's own rtnetlink client (userspace/rtnl.py).
The kernel dataplane cannot use this: an XFRM interface drops transport-mode packets
routed into it ("Local routing loop detected", see xfrm/redirect.py), so it redirects them
with tc instead.  The message builders are pure, for tests without root.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import time

from core.dataplane.model import (
    BYPASS_MARK,
    BYPASS_MASK,
    TRANSPORT_RULE_PRIORITY,
    TRANSPORT_TABLE,
    IPAddress,
    TransportPeer,
)
from core.dataplane.userspace import rtnl
from core.dataplane.userspace.rtnl import NetlinkError

RTPROT_RBIPSEC = 114  # the protocol number of all our routes (tun.py, xfrm/links.py)
# The metric of our table's guards: one above tun.py's main-table guards, which the
# backend's start removes; these stay until this run's replace them (`adopt_leftovers`).
GUARD_METRIC = 0xFFFFFF01
STALE_SECONDS = 30.0  # a crashed run's routes no new interface took over go after this
_GONE = (errno.ENOENT, errno.ESRCH)  # what the kernel says for a route or rule not there


def family_of(address: IPAddress) -> int:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


def rule_message(
    family: int, *, add: bool, priority: int = TRANSPORT_RULE_PRIORITY
) -> rtnl.Message:
    """`not fwmark BYPASS_MARK/BYPASS_MASK lookup TRANSPORT_TABLE` at our priority."""
    return rtnl.fwmark_rule(family, table=TRANSPORT_TABLE, priority=priority,
                            fwmark=BYPASS_MARK, fwmask=BYPASS_MASK, invert=True,
                            add=add)  # fmt: skip


def route_message(peer: TransportPeer, ifindex: int, *, replace: bool) -> rtnl.Message:
    """The peer's outer address (a host route) into interface `ifindex`, in our table.

    With the local outer address as preferred source: an address of the interface
    itself would otherwise be picked, and the peer's SA expects the outer addresses."""
    prefsrc = str(peer.local) if replace and peer.local is not None else None
    return rtnl.ip_route(str(peer.remote), peer.remote.max_prefixlen, table=TRANSPORT_TABLE,
                         replace=replace, oif=ifindex,
                         protocol=RTPROT_RBIPSEC if replace else 0, prefsrc=prefsrc)  # fmt: skip


def guard_message(peer: IPAddress, *, replace: bool) -> rtnl.Message:
    """`unreachable <peer>/32` in our table: what answers while the device route is gone."""
    return rtnl.ip_route(str(peer), peer.max_prefixlen, table=TRANSPORT_TABLE,
                         replace=replace, unreachable=True, priority=GUARD_METRIC,
                         protocol=RTPROT_RBIPSEC if replace else 0)  # fmt: skip


def set_bypass_mark(sock: socket.socket) -> None:
    """Mark a socket's packets so that they leave outside the tunnels (needs CAP_NET_ADMIN)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, BYPASS_MARK)


def marks_work() -> bool:
    """Whether this process may set SO_MARK (without it, ESP and IKE to a transport-mode
    peer would be routed into its own tunnel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            set_bypass_mark(probe)
        except OSError:
            return False
    return True


class TransportRoutes:
    """The rule and our table, on an rtnetlink socket of its own.

    Which peer address each interface protects is kept here, so the rule exists exactly
    while some route does (one rule per address family).
    """

    def __init__(self, sock: rtnl.RtnlSocket | None = None) -> None:
        self._rtnl = sock  # None: open() makes one in the current network namespace
        self.routes: dict[int, TransportPeer] = {}  # ifindex -> the peer it protects
        self._marks_checked = False
        self.stale: list[rtnl.Route] = []  # a crashed run's routes in our table
        self._sweep_at = 0.0

    @property
    def _sock(self) -> rtnl.RtnlSocket:
        if self._rtnl is None:
            raise NetlinkError(errno.EBADF, "the rtnetlink socket is not open")
        return self._rtnl

    async def open(self) -> None:
        if self._rtnl is None:
            self._rtnl = rtnl.RtnlSocket()

    def close(self) -> None:
        if self._rtnl is not None:
            self._rtnl.close()
            self._rtnl = None

    async def add(self, ifindex: int, peer: TransportPeer) -> None:
        """Guard, device route (once the link is up), the rule for the family's first peer.

        Adding again for the same interface (a new source address, or another peer
        address) installs the new route before the old one goes, so traffic to the peer
        is never without a route into the interface meanwhile.

        On failure only what this call added is undone: a first add leaves nothing, a
        re-add leaves the interface's earlier route, guard and rule as they were (the
        caller sees the NetlinkError)."""
        if not self._marks_checked:
            if not marks_work():
                raise NetlinkError(errno.EPERM, "transport mode needs SO_MARK (CAP_NET_ADMIN)")
            self._marks_checked = True
        self._sweep_if_due()
        old = self.routes.get(ifindex)
        family = family_of(peer.remote)
        first = not self._peers_of(family)
        try:
            self._sock.request(guard_message(peer.remote, replace=True))
            self._device_route(ifindex, peer)
            if first:
                self._ensure_rule(family)
        except BaseException:
            with contextlib.suppress(NetlinkError):  # the first error is the one to report
                self._undo_add(ifindex, peer, old, first)
            raise
        self.routes[ifindex] = peer
        if old is not None and old.remote != peer.remote:
            self._forget(ifindex, old)

    def _undo_add(
        self, ifindex: int, peer: TransportPeer, old: TransportPeer | None, first: bool
    ) -> None:
        """What a failed `add` of `peer` may have put in place, and nothing that was there."""
        if old is not None and old.remote == peer.remote:
            # The guard existed; a failed route replace leaves the old route in place, but
            # one that went through before a later step failed must carry the old source.
            self._device_route(ifindex, old)
            return
        self._delete_quietly(route_message(peer, ifindex, replace=False))
        if first:
            self._delete_rules(family_of(peer.remote))
        if peer.remote not in self._peers_of(family_of(peer.remote)):
            self._delete_quietly(guard_message(peer.remote, replace=False))

    async def restore(self, ifindex: int) -> None:
        """The device route again, after the link came up (Linux flushed it when down)."""
        self._sweep_if_due()  # (every link up comes here: tunnel-mode-only configs too)
        peer = self.routes.get(ifindex)
        if peer is not None:
            self._device_route(ifindex, peer)

    def _device_route(self, ifindex: int, peer: TransportPeer) -> None:
        try:
            self._sock.request(route_message(peer, ifindex, replace=True))
        except NetlinkError as error:
            if error.errno != errno.ENETDOWN:  # link down: `restore` adds it when up
                raise

    async def remove(self, ifindex: int) -> None:
        """The peer's routes (the device route may be gone with the device), maybe the rule."""
        peer = self.routes.pop(ifindex, None)
        if peer is not None:
            self._forget(ifindex, peer)

    def _forget(self, ifindex: int, peer: TransportPeer) -> None:
        """`peer`'s device route, its guard and the family's rule unless still in use."""
        self._delete_quietly(route_message(peer, ifindex, replace=False))
        family = family_of(peer.remote)
        if not self._peers_of(family):
            self._delete_rules(family)
        if peer.remote not in self._peers_of(family):
            self._delete_quietly(guard_message(peer.remote, replace=False))

    def _peers_of(self, family: int) -> list[IPAddress]:
        return [peer.remote for peer in self.routes.values() if family_of(peer.remote) == family]

    def _delete_quietly(self, *messages: rtnl.Message) -> None:
        """Delete requests; what is already gone is no error."""
        for error in self._sock.transact(messages):
            if error is not None and error.errno not in _GONE:
                raise error

    async def adopt_leftovers(self) -> None:
        """At start: a crashed run's rule and guards stay (they refuse the traffic to its
        peers) until this run's replace them; what no new interface takes over goes
        STALE_SECONDS later (at the next add, remove or link up), or at stop."""
        self.routes.clear()
        self.stale = [
            route
            for family in (socket.AF_INET, socket.AF_INET6)
            for route in self._sock.routes(family, table=TRANSPORT_TABLE)
            if route.table == TRANSPORT_TABLE
        ]
        self._sweep_at = time.monotonic() + STALE_SECONDS

    def _sweep_if_due(self) -> None:
        if not self.stale or time.monotonic() < self._sweep_at:
            return
        stale, self.stale = self.stale, []
        protected = {peer.remote for peer in self.routes.values()}
        self._delete_quietly(*(
            _delete_route(route) for route in stale
            if ipaddress.ip_address(route.destination) not in protected
        ))  # fmt: skip
        for family in {route.family for route in stale}:
            if not self._peers_of(family):
                self._delete_rules(family)

    async def remove_all(self) -> None:
        """Our rules and every route in our table, including a crashed run's."""
        self.routes.clear()
        self.stale = []
        for family in (socket.AF_INET, socket.AF_INET6):
            self._delete_rules(family)
            self._delete_quietly(*(
                _delete_route(route) for route in self._sock.routes(family, table=TRANSPORT_TABLE)
                if route.table == TRANSPORT_TABLE
            ))  # fmt: skip

    def _ensure_rule(self, family: int) -> None:
        """Exactly one rule, whatever a crash left: added before stale ones go."""
        ours = [rule for rule in self._sock.rules(family) if rule.table == TRANSPORT_TABLE]
        if any(rule.priority == TRANSPORT_RULE_PRIORITY for rule in ours):
            extra = [rule for rule in ours if rule.priority != TRANSPORT_RULE_PRIORITY]
        else:
            self._sock.request(rule_message(family, add=True))
            extra = ours
        self._delete_quietly(*(rule_message(family, add=False, priority=rule.priority or 0)
                               for rule in extra))  # fmt: skip

    def _delete_rules(self, family: int) -> None:
        ours = [rule for rule in self._sock.rules(family) if rule.table == TRANSPORT_TABLE]
        self._delete_quietly(*(rule_message(family, add=False, priority=rule.priority or 0)
                               for rule in ours))  # fmt: skip


def _delete_route(route: rtnl.Route) -> rtnl.Message:
    """The delete request of a dumped route of our table."""
    return rtnl.ip_route(route.destination, route.prefixlen, table=TRANSPORT_TABLE,
                         replace=False, oif=route.oif, priority=route.priority,
                         unreachable=route.kind == rtnl.RTN_UNREACHABLE)  # fmt: skip
