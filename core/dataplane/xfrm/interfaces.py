"""The ipsecN interfaces of the kernel backend: link, address, routes, guards, nftables.

Blocking (pyroute2, nft): the backend calls these from a worker thread.  Each method
either completes or undoes what it did before raising.

Linux flushes a device's IPv4 routes when its link goes down, so traffic for them would
fall through to a less specific route, possibly in clear.  Every prefix routed into an
interface (its own subnet and each static route) therefore also gets a guard route
(links.py): `unreachable` at the highest metric.  While the link is up the device route
wins; while it is down the guard refuses the traffic.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging

from pyroute2.netlink.exceptions import NetlinkError as Pyroute2NetlinkError

from core.dataplane.model import InterfaceSpec
from core.dataplane.xfrm import nft
from core.dataplane.xfrm.links import Links

log = logging.getLogger(__name__)
Prefix = ipaddress.IPv4Network


class InterfaceStateError(LookupError):
    """An interface name this backend did not create (or created twice)."""


def _own_subnet(spec: InterfaceSpec) -> Prefix | None:
    if spec.address is None or spec.address.network.prefixlen >= 32:
        return None
    return spec.address.network


class Interfaces:
    def __init__(self, links: Links, netns: str | None) -> None:
        self._ip = links
        self._netns = netns
        self.specs: dict[str, InterfaceSpec] = {}
        self.routes: dict[str, set[Prefix]] = {}

    def spec(self, name: str) -> InterfaceSpec:
        spec = self.specs.get(name)
        if spec is None:
            raise InterfaceStateError(f"interface {name} was not created by this dataplane")
        return spec

    def name_for_if_id(self, if_id: int) -> str | None:
        for spec in list(self.specs.values()):
            if spec.if_id == if_id:
                return spec.name
        return None

    # -- lifecycle -------------------------------------------------------------------
    def create(self, spec: InterfaceSpec) -> None:
        if spec.name in self.specs:
            raise InterfaceStateError(f"interface {spec.name} already exists")
        self._ip.create(spec)
        subnet = _own_subnet(spec)
        try:
            if spec.address is not None:
                self._ip.add_address(spec.name, spec.address)
            if subnet is not None:
                self._ip.replace_guard(subnet)
            self._apply_nft({**self.specs, spec.name: spec})
        except BaseException:
            self._ip.delete(spec.name)
            if subnet is not None:
                self._drop_guard(subnet)
            raise
        self.specs[spec.name] = spec
        self.routes[spec.name] = set()

    def update(self, spec: InterfaceSpec) -> None:
        old = self.spec(spec.name)
        try:
            self._reconfigure(old, spec)
        except BaseException:
            with contextlib.suppress(Exception):
                self._reconfigure(spec, old)
            raise
        self.specs[spec.name] = spec

    def _reconfigure(self, old: InterfaceSpec, new: InterfaceSpec) -> None:
        if old.mtu != new.mtu:
            self._ip.set_mtu(new.name, new.mtu)
        if old.address != new.address:
            old_subnet, new_subnet = _own_subnet(old), _own_subnet(new)
            if old.address is not None:
                self._ip.delete_address(new.name, old.address)
            if old_subnet is not None and old_subnet != new_subnet:
                self._drop_guard(old_subnet)
            if new.address is not None:
                self._ip.add_address(new.name, new.address)
            if new_subnet is not None:
                self._ip.replace_guard(new_subnet)
        if old.borrowed_source != new.borrowed_source and self._ip.is_up(new.name):
            for prefix in sorted(self.routes.get(new.name, ())):
                self._ip.replace_route(new.name, prefix, new.borrowed_source)
        if old.tcp_mss != new.tcp_mss:
            self._apply_nft({**self.specs, new.name: new})

    def delete(self, name: str) -> None:
        spec = self.specs.get(name)
        self._ip.delete(name)
        remaining = {key: value for key, value in self.specs.items() if key != name}
        self._apply_nft(remaining)
        if spec is not None:
            subnet = _own_subnet(spec)
            for prefix in self.routes.get(name, set()) | ({subnet} if subnet else set()):
                if not self._guard_still_needed(prefix, remaining):
                    self._drop_guard(prefix)
        self.specs.pop(name, None)
        self.routes.pop(name, None)

    def _guard_still_needed(self, prefix: Prefix, remaining: dict[str, InterfaceSpec]) -> bool:
        return any(
            prefix in self.routes.get(other, ()) or _own_subnet(spec) == prefix
            for other, spec in remaining.items()
        )

    def remove_all(self) -> None:
        """Our interfaces, guards and nftables table, including an earlier run's."""
        try:
            self._ip.delete_our_group()  # all at once; else one by one, just below
        except (OSError, Pyroute2NetlinkError) as exc:
            log.info("deleting our link group failed, one interface at a time: %s", exc)
        for link in self._ip.leftovers():
            self._ip.delete(link.name)
        for prefix in self._ip.guards():
            self._drop_guard(prefix)
        try:
            nft.apply(nft.render([]), self._netns)
        except nft.NftError as exc:  # no nft: we cannot have left a table either
            log.info("nftables cleanup skipped: %s", exc)
        self.specs.clear()
        self.routes.clear()

    # -- link and routes -------------------------------------------------------------
    def set_link(self, name: str, up: bool) -> None:
        spec = self.spec(name)
        self._ip.set_up(name, up)
        if not up:
            return  # the kernel drops the routes; the guards hold, we re-add them on up
        try:
            for prefix in sorted(self.routes[name]):
                self._ip.replace_route(name, prefix, spec.borrowed_source)
        except BaseException:
            self._ip.set_up(name, False)
            raise

    def add_route(self, name: str, prefix: Prefix) -> None:
        spec = self.spec(name)
        self._ip.replace_guard(prefix)
        try:
            if self._ip.is_up(name):
                self._ip.replace_route(name, prefix, spec.borrowed_source)
        except BaseException:
            if not self._guard_still_needed(prefix, self.specs):
                self._drop_guard(prefix)
            raise
        self.routes[name].add(prefix)

    def delete_route(self, name: str, prefix: Prefix) -> None:
        routes = self.routes.get(name)
        if routes is None or prefix not in routes:
            return
        routes.discard(prefix)
        with contextlib.suppress(Pyroute2NetlinkError):
            self._ip.delete_route(name, prefix)
        if not self._guard_still_needed(prefix, self.specs):
            self._drop_guard(prefix)

    def _drop_guard(self, prefix: Prefix) -> None:
        with contextlib.suppress(Pyroute2NetlinkError):
            self._ip.delete_guard(prefix)

    def _apply_nft(self, specs: dict[str, InterfaceSpec]) -> None:
        try:
            nft.apply(nft.render(specs.values()), self._netns)
        except nft.NftError:
            if any(spec.tcp_mss is not None for spec in specs.values()):
                raise
            log.warning("nftables unavailable: IPv6 forwarding not blocked on ipsecN")
