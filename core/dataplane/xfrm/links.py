"""XFRM interfaces, their addresses, routes and IPv6 settings through pyroute2's IPRoute.

Blocking calls: the backend runs them in a worker thread.  Errors are pyroute2's
NetlinkError or OSError; the backend turns them into DataplaneError with the context.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute

from core.dataplane.model import LINK_GROUP, InterfaceSpec, is_our_if_id
from core.dataplane.xfrm.netlink import in_netns

# Routes we add carry a protocol number of our own, so leftovers can be told apart
# (the same number and guard metric as the userspace backend).
RTPROT_RBIPSEC = 0x72
GUARD_METRIC = 0xFFFFFF00
MAIN_TABLE = 254
IPV6_SYSCTLS = {"forwarding": "0", "accept_ra": "0", "autoconf": "0"}
_OUR_NAME = re.compile(r"^ipsec\d{1,2}$")


@dataclass(frozen=True)
class LinkInfo:
    name: str
    index: int
    if_id: int
    up: bool


class Links:
    """One IPRoute socket in the backend's namespace, used one call at a time."""

    def __init__(self, netns: str | None) -> None:
        self._netns = netns
        self._ipr: Any = IPRoute(netns=netns) if netns else IPRoute()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._ipr.close()

    # -- lookups -------------------------------------------------------------------
    def index(self, name: str) -> int | None:
        with self._lock:
            found = self._ipr.link_lookup(ifname=name)
        return int(found[0]) if found else None

    def require_index(self, name: str) -> int:
        index = self.index(name)
        if index is None:
            raise LookupError(f"no interface {name}")
        return index

    def xfrm_links(self) -> list[LinkInfo]:
        """Every XFRM interface in the namespace."""
        with self._lock:
            dump = list(self._ipr.link("dump"))
        links = []
        for link in dump:
            if link.get(("linkinfo", "kind")) != "xfrm":
                continue
            if_id = link.get(("linkinfo", "data", "xfrm_if_id")) or 0
            up = bool(link["flags"] & 1)
            links.append(LinkInfo(str(link.get("ifname")), int(link["index"]), int(if_id), up))
        return links

    def leftovers(self) -> list[LinkInfo]:
        """XFRM interfaces an earlier run of ours left: our names and our if_id range."""
        return [
            link
            for link in self.xfrm_links()
            if _OUR_NAME.match(link.name) and is_our_if_id(link.if_id)
        ]

    # -- interfaces ----------------------------------------------------------------
    def create(self, spec: InterfaceSpec) -> int:
        extra: dict[str, Any] = {}
        if spec.underlay is not None:
            extra["xfrm_link"] = self.require_index(spec.underlay)
        with self._lock:
            self._ipr.link("add", ifname=spec.name, kind="xfrm", xfrm_if_id=spec.if_id, **extra)
        index = self.require_index(spec.name)
        with self._lock:
            self._ipr.link("set", index=index, mtu=spec.mtu, state="down", group=LINK_GROUP)
        self.configure_ipv6(spec.name)
        return index

    def delete_our_group(self) -> bool:
        """Every interface of our link group in one request, when all of them are XFRM
        interfaces of ours (the group is only a number: with anything else in it, nothing
        goes this way).  False when nothing was deleted."""
        with self._lock:
            dump = list(self._ipr.link("dump"))
        grouped = [link for link in dump if link.get("group") == LINK_GROUP]
        if not grouped or not all(
            link.get(("linkinfo", "kind")) == "xfrm"
            and _OUR_NAME.match(str(link.get("ifname")))
            and is_our_if_id(link.get(("linkinfo", "data", "xfrm_if_id")) or 0)
            for link in grouped
        ):
            return False
        with self._lock:
            self._ipr.link("del", index=0, group=LINK_GROUP)
        return True

    def configure_ipv6(self, name: str) -> None:
        """Link-local only: no forwarding, no router advertisements, no autoconf."""

        def write() -> None:
            for key, value in IPV6_SYSCTLS.items():
                try:
                    with open(f"/proc/sys/net/ipv6/conf/{name}/{key}", "w") as knob:
                        knob.write(value)
                except FileNotFoundError:
                    return  # IPv6 is disabled on this host: nothing to forward

        in_netns(self._netns, write)

    def delete(self, name: str) -> None:
        index = self.index(name)
        if index is None:
            return
        with self._lock:
            self._ipr.link("del", index=index)

    def set_mtu(self, name: str, mtu: int) -> None:
        index = self.require_index(name)
        with self._lock:
            self._ipr.link("set", index=index, mtu=mtu)

    def set_up(self, name: str, up: bool) -> None:
        index = self.require_index(name)
        with self._lock:
            self._ipr.link("set", index=index, state="up" if up else "down")

    def is_up(self, name: str) -> bool:
        index = self.require_index(name)
        with self._lock:
            link = self._ipr.link("get", index=index)[0]
        return bool(link["flags"] & 1)

    def add_address(self, name: str, address: ipaddress.IPv4Interface) -> None:
        index = self.require_index(name)
        with self._lock:
            self._ipr.addr(
                "replace",
                index=index,
                address=str(address.ip),
                prefixlen=address.network.prefixlen,
            )

    def delete_address(self, name: str, address: ipaddress.IPv4Interface) -> None:
        index = self.require_index(name)
        with self._lock:
            self._ipr.addr(
                "del", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
            )

    # -- routes --------------------------------------------------------------------
    def replace_route(
        self, name: str, prefix: ipaddress.IPv4Network, src: ipaddress.IPv4Address | None
    ) -> None:
        index = self.require_index(name)
        extra: dict[str, Any] = {"prefsrc": str(src)} if src is not None else {}
        with self._lock:
            self._ipr.route(
                "replace",
                dst=str(prefix),
                oif=index,
                proto=RTPROT_RBIPSEC,
                table=MAIN_TABLE,
                **extra,
            )

    def delete_route(self, name: str, prefix: ipaddress.IPv4Network) -> None:
        index = self.require_index(name)
        with self._lock:
            self._ipr.route("del", dst=str(prefix), oif=index, table=MAIN_TABLE)

    # Linux flushes a device's IPv4 routes when its link goes down; traffic would then
    # take a less specific route, maybe in clear.  Each prefix routed into an interface
    # also gets a guard: `unreachable` at the highest metric, bound to no device.
    def replace_guard(self, prefix: ipaddress.IPv4Network) -> None:
        with self._lock:
            self._ipr.route(
                "replace",
                dst=str(prefix),
                type="unreachable",
                priority=GUARD_METRIC,
                proto=RTPROT_RBIPSEC,
                table=MAIN_TABLE,
            )

    def delete_guard(self, prefix: ipaddress.IPv4Network) -> None:
        with self._lock:
            self._ipr.route(
                "del", dst=str(prefix), type="unreachable", priority=GUARD_METRIC, table=MAIN_TABLE
            )

    def guards(self) -> list[ipaddress.IPv4Network]:
        """Our guard routes (leftovers included)."""
        with self._lock:
            dump = list(self._ipr.route("dump", family=2))
        found = []
        for route in dump:
            if (
                route["proto"] == RTPROT_RBIPSEC
                and route.get_attr("RTA_PRIORITY") == GUARD_METRIC
                and route.get_attr("RTA_OIF") is None
            ):
                dst = route.get_attr("RTA_DST") or "0.0.0.0"
                found.append(ipaddress.IPv4Network(f"{dst}/{route['dst_len']}"))
        return found

    def routes(self, name: str) -> list[ipaddress.IPv4Network]:
        index = self.require_index(name)
        with self._lock:
            dump = list(self._ipr.route("dump", oif=index, family=2))
        found = []
        for route in dump:
            dst = route.get("dst") or "0.0.0.0"
            found.append(ipaddress.IPv4Network(f"{dst}/{route['dst_len']}"))
        return found

    # -- counters ------------------------------------------------------------------
    def stats(self, name: str) -> dict[str, int]:
        index = self.require_index(name)
        with self._lock:
            link = self._ipr.link("get", index=index)[0]
        stats = link.get("stats64") or link.get("stats") or {}
        return {key: int(value) for key, value in dict(stats).items()}
