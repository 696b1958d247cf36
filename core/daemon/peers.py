"""Per-peer runtime state and the engine -> dataplane glue.

`PeerRuntime` is what the daemon knows about one configured peer beyond the engine: the
operator's intent, the Child SAs installed in the dataplane, the link state, the last
error.  `Glue` turns Child SA events into dataplane calls (install inbound, then
outbound; link up with the first Child SA and down with the last) and builds and removes
a peer's interface, policies and routes.  Every method here runs on the daemon's single
dataplane worker, one call at a time, in the order the engine produced its events.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address

from core.config import PeerConfig
from core.daemon.policy import SaPair, interface_spec, sa_specs
from core.dataplane.api import Dataplane, DataplaneError
from core.dataplane.model import Direction, InterfaceSpec, SaMode, SaSpec, TransportPeer
from core.errors import UsageError
from core.ike.events import (
    ChildSaDeleted,
    ChildSaInfo,
    ChildSaInstalled,
    ChildSaOutboundReady,
    IkeSaInfo,
)
from core.ike.policy import PeerPolicy

log = logging.getLogger("rbipsec.peer")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass
class ChildRecord:
    """A Child SA as installed in the dataplane."""

    info: ChildSaInfo
    sas: SaPair
    inbound_installed: bool = False
    outbound_installed: bool = False
    inbound_packets_seen: int = 0  # for noticing inbound ESP (saves DPD probes)


@dataclass
class PeerRuntime:
    config: PeerConfig
    wanted_up: bool = True  # the operator's intent: `rbipsec down` clears it
    policy: PeerPolicy | None = None  # set while the engine knows the peer
    local_ip: IPAddress | None = None
    remote_ip: IPAddress | None = None
    interface: InterfaceSpec | None = None  # as created in the dataplane
    routes: set[ipaddress.IPv4Network] = field(default_factory=set)
    children: dict[int, ChildRecord] = field(default_factory=dict)  # by inbound SPI
    link_up: bool = False
    last_ike: IkeSaInfo | None = None
    last_error: str | None = None
    last_error_at: float | None = None  # loop clock
    setup_error: str | None = None  # addresses could not be found: retried periodically
    dead_at: float | None = None  # DPD declared the peer dead (loop clock)

    @property
    def name(self) -> str:
        return self.config.name

    def error(self, message: str, now: float) -> None:
        self.last_error = message
        self.last_error_at = now


def _transport_of(peer: PeerRuntime) -> TransportPeer | None:
    """Transport mode: the outer addresses whose traffic the peer's interface protects,
    as far as they are known before IKE (a fixed address, or one already resolved)."""
    config = peer.config
    if config.mode is not SaMode.TRANSPORT:
        return None
    remote = config.remote_address
    remote_ip = remote if isinstance(remote, IPv4Address | IPv6Address) else peer.remote_ip
    if remote_ip is None:
        return None  # a host name not resolved yet: child_installed fills it in
    local = config.local_address
    local_ip = local if isinstance(local, IPv4Address | IPv6Address) else peer.local_ip
    return TransportPeer(remote=remote_ip, local=local_ip)


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


class Glue:
    """Applies peers and Child SA events to the dataplane; logs and records failures."""

    def __init__(self, dataplane: Dataplane) -> None:
        self.dataplane = dataplane

    # -- interfaces, policies, routes ------------------------------------------------
    async def create(
        self, peer: PeerRuntime, borrowed: ipaddress.IPv4Address | None, now: float
    ) -> None:
        """The peer's interface (link down), its policies and static routes."""
        spec = replace(interface_spec(peer.config, borrowed), transport=_transport_of(peer))
        try:
            await self.dataplane.create_interface(spec)
            peer.interface = spec
            await self.dataplane.add_policies(spec.if_id)
        except DataplaneError as error:
            self._failed(peer, f"cannot create {spec.name}", error, now)
            return
        await self.sync_routes(peer, now)

    async def update(
        self, peer: PeerRuntime, borrowed: ipaddress.IPv4Address | None, now: float
    ) -> None:
        """Bring interface settings and routes in line with `peer.config`, in place."""
        spec = replace(interface_spec(peer.config, borrowed), transport=_transport_of(peer))
        if peer.interface is None:
            await self.create(peer, borrowed, now)
            return
        if spec != peer.interface:
            try:
                await self.dataplane.update_interface(spec)
                peer.interface = spec
            except DataplaneError as error:
                self._failed(peer, f"cannot update {spec.name}", error, now)
        await self.sync_routes(peer, now)

    async def sync_routes(self, peer: PeerRuntime, now: float) -> None:
        if peer.interface is None:
            return
        wanted = set(peer.config.routes)
        name = peer.interface.name
        for prefix in sorted(peer.routes - wanted):
            try:
                await self.dataplane.delete_route(name, prefix)
                peer.routes.discard(prefix)
            except DataplaneError as error:
                self._failed(peer, f"cannot remove the route {prefix}", error, now)
        for prefix in sorted(wanted - peer.routes):
            try:
                await self.dataplane.add_route(name, prefix)
                peer.routes.add(prefix)
            except DataplaneError as error:
                self._failed(peer, f"cannot add the route {prefix}", error, now)

    async def destroy(self, peer: PeerRuntime, now: float) -> None:
        """Remove the peer's SAs, routes, policies and interface."""
        for record in list(peer.children.values()):
            await self._remove_child(peer, record, now)
        spec = peer.interface
        if spec is None:
            return
        for prefix in sorted(peer.routes):
            try:
                await self.dataplane.delete_route(spec.name, prefix)
            except DataplaneError as error:
                self._failed(peer, f"cannot remove the route {prefix}", error, now)
        peer.routes.clear()
        try:
            await self.dataplane.delete_policies(spec.if_id)
            await self.dataplane.delete_interface(spec.name)
        except DataplaneError as error:
            self._failed(peer, f"cannot remove {spec.name}", error, now)
        peer.interface = None
        peer.link_up = False

    # -- Child SA events ----------------------------------------------------------------
    async def child_installed(self, peer: PeerRuntime, event: ChildSaInstalled, now: float) -> None:
        if peer.interface is None:
            self._failed(peer, "cannot install a Child SA", UsageError("no interface"), now)
            return
        try:
            sas = sa_specs(event.info, peer.interface.if_id)
        except (UsageError, ValueError) as error:
            self._failed(peer, "cannot install a Child SA", error, now)
            return
        await self._follow_transport(peer, sas.outbound, now)
        record = ChildRecord(event.info, sas)
        peer.children[event.info.spi_in] = record
        try:
            await self.dataplane.add_sa(sas.inbound)
            record.inbound_installed = True
            if event.outbound:
                await self.dataplane.add_sa(sas.outbound)
                record.outbound_installed = True
        except DataplaneError as error:
            self._failed(peer, f"cannot install Child SA {event.info.spi_in:08x}", error, now)
            return
        log.info(
            "peer %s: Child SA installed: in %08x out %08x%s, %s%s",
            peer.name,
            event.info.spi_in,
            event.info.spi_out,
            "" if event.outbound else " (outbound once the peer confirms it)",
            event.info.encr,
            ", UDP-encapsulated" if event.info.encap else "",
            extra={"peer": peer.name},
        )
        await self._link(peer, True, now)

    async def outbound_ready(
        self, peer: PeerRuntime, event: ChildSaOutboundReady, now: float
    ) -> None:
        record = peer.children.get(event.spi_in)
        if record is None or record.outbound_installed:
            return
        try:
            await self.dataplane.add_sa(record.sas.outbound)
            record.outbound_installed = True
        except DataplaneError as error:
            self._failed(peer, f"cannot install outbound SA {record.info.spi_out:08x}", error, now)

    async def child_deleted(self, peer: PeerRuntime, event: ChildSaDeleted, now: float) -> None:
        record = peer.children.get(event.spi_in)
        if record is not None:
            await self._remove_child(peer, record, now)
        log.info(
            "peer %s: Child SA deleted: in %08x out %08x (%s)",
            peer.name,
            event.spi_in,
            event.spi_out,
            event.reason,
            extra={"peer": peer.name},
        )
        if not peer.children:
            await self._link(peer, False, now)

    async def _remove_child(self, peer: PeerRuntime, record: ChildRecord, now: float) -> None:
        peer.children.pop(record.info.spi_in, None)
        if_id = record.sas.inbound.if_id
        try:
            if record.outbound_installed:
                await self.dataplane.delete_sa(record.info.spi_out, Direction.OUT, if_id)
            if record.inbound_installed:
                await self.dataplane.delete_sa(record.info.spi_in, Direction.IN, if_id)
        except DataplaneError as error:
            self._failed(peer, f"cannot remove Child SA {record.info.spi_in:08x}", error, now)

    async def _follow_transport(self, peer: PeerRuntime, outbound: SaSpec, now: float) -> None:
        """A transport-mode SA shows the outer addresses (a host name resolved, a local
        address picked): the interface must protect exactly those."""
        spec = peer.interface
        if spec is None or outbound.mode is not SaMode.TRANSPORT:
            return
        wanted = TransportPeer(remote=outbound.dst, local=outbound.src)
        if spec.transport == wanted:
            return
        try:
            await self.dataplane.update_interface(replace(spec, transport=wanted))
            peer.interface = replace(spec, transport=wanted)
        except DataplaneError as error:
            self._failed(peer, f"cannot protect {outbound.dst} on {spec.name}", error, now)

    async def _link(self, peer: PeerRuntime, up: bool, now: float) -> None:
        if peer.interface is None or peer.link_up == up:
            return
        try:
            await self.dataplane.set_link(peer.interface.name, up)
            peer.link_up = up
        except DataplaneError as error:
            self._failed(peer, f"cannot set {peer.interface.name} {'up' if up else 'down'}",
                         error, now)  # fmt: skip

    def _failed(self, peer: PeerRuntime, what: str, error: BaseException, now: float) -> None:
        message = f"{what}: {_describe(error)}"
        peer.error(message, now)
        log.error("peer %s: %s", peer.name, message, extra={"peer": peer.name})
