"""The kernel dataplane: XFRM interfaces, ESP SAs and route-based policies in Linux.

One `ipsecN` XFRM interface per peer (if_id from model.if_id_for), SAs and 0/0 policies
bound to that if_id, MSS clamping in our own nftables table.  Blocking netlink work runs
in a worker thread (`asyncio.to_thread`); EXPIRE and ACQUIRE arrive on a multicast
socket watched by the event loop.

Policies depend on the SAs: the outbound template must name the peer's outer address and
every template the SA's mode, so `add_policies` records the wish and the policies are
(re)installed whenever an SA of that interface shows what they must hold.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pyroute2.netlink.exceptions import NetlinkError as Pyroute2NetlinkError

from core.dataplane.api import DataplaneError
from core.dataplane.model import (
    DataplaneEvent,
    Direction,
    ExpiryKind,
    InterfaceCounters,
    InterfaceSpec,
    SaCounters,
    SaExpired,
    SaSpec,
    TrafficWhileDown,
    is_our_if_id,
)
from core.dataplane.xfrm import messages as m
from core.dataplane.xfrm import nft
from core.dataplane.xfrm import requests as rq
from core.dataplane.xfrm.links import Links
from core.dataplane.xfrm.netlink import NetlinkError, XfrmSocket

log = logging.getLogger(__name__)

T = TypeVar("T")
SaKey = tuple[int, Direction, int]  # spi, direction, if_id

SOL_UDP = 17
UDP_ENCAP = 100
_GONE = (errno.ENOENT, errno.ESRCH)
_FAILURES = (OSError, Pyroute2NetlinkError, nft.NftError, LookupError, rq.InvalidSaError)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Pyroute2NetlinkError):
        return f"{exc.args[-1] if exc.args else exc} (errno {exc.code})"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{exc.strerror or exc} (errno {exc.errno})"
    return str(exc)


def _is_gone(exc: BaseException) -> bool:
    code = exc.code if isinstance(exc, Pyroute2NetlinkError) else getattr(exc, "errno", None)
    return code in _GONE


class XfrmDataplane:
    """Dataplane backend on Linux XFRM (see core/dataplane/api.py for the contract)."""

    name = "kernel"

    def __init__(self, netns: str | None = None) -> None:
        self._netns = netns
        self._xfrm: XfrmSocket | None = None
        self._events: XfrmSocket | None = None
        self._links: Links | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_event: Callable[[DataplaneEvent], None] = lambda _event: None
        self._interfaces: dict[str, InterfaceSpec] = {}
        self._routes: dict[str, set[ipaddress.IPv4Network]] = {}
        self._sas: dict[SaKey, SaSpec] = {}
        self._policy_if_ids: set[int] = set()
        self._installed_templates: dict[int, tuple[rq.PolicyTemplate, rq.PolicyTemplate]] = {}

    # -- plumbing ------------------------------------------------------------------
    async def _run(self, what: str, work: Callable[[], T], *, started: bool = True) -> T:
        if started and self._xfrm is None:
            raise DataplaneError(f"{what}: kernel dataplane used before start()")
        try:
            return await asyncio.to_thread(work)
        except _FAILURES as exc:
            raise DataplaneError(f"{what}: {_reason(exc)}") from exc

    @property
    def _sock(self) -> XfrmSocket:
        if self._xfrm is None:
            raise DataplaneError("kernel dataplane used before start()")
        return self._xfrm

    @property
    def _ip(self) -> Links:
        if self._links is None:
            raise DataplaneError("kernel dataplane used before start()")
        return self._links

    # -- lifecycle -----------------------------------------------------------------
    async def start(self, on_event: Callable[[DataplaneEvent], None]) -> None:
        self._on_event = on_event
        self._loop = asyncio.get_running_loop()

        def open_all() -> None:
            self._xfrm = XfrmSocket(self._netns)
            self._events = XfrmSocket(self._netns, groups=m.XFRMGRP_ACQUIRE | m.XFRMGRP_EXPIRE)
            self._links = Links(self._netns)

        await self._run("opening netlink sockets", open_all, started=False)
        await self._run("removing state an earlier run left", self._remove_all_ours)
        assert self._events is not None
        self._loop.add_reader(self._events.fileno(), self._read_events)

    async def stop(self) -> None:
        if self._loop is not None and self._events is not None:
            self._loop.remove_reader(self._events.fileno())
        if self._xfrm is not None:
            await self._run("removing our interfaces, SAs and policies", self._remove_all_ours)
        for closable in (self._xfrm, self._events, self._links):
            if closable is not None:
                closable.close()
        self._xfrm = self._events = None
        self._links = None
        self._interfaces.clear()
        self._routes.clear()
        self._sas.clear()
        self._policy_if_ids.clear()
        self._installed_templates.clear()

    def _remove_all_ours(self) -> None:
        """Policies, SAs, interfaces with our if_ids, and our nftables table."""
        for policy in self._sock.request(rq.dump_policies()):
            if_id = policy.get_attr("XFRMA_IF_ID") or 0
            if is_our_if_id(if_id):
                self._ignore_gone(rq.delpolicy(policy["dir"], if_id))
        for state in self._sock.request(rq.dump_sas()):
            if_id = state.get_attr("XFRMA_IF_ID") or 0
            if is_our_if_id(if_id) and state["id_spi"]:
                dst = m.unpack_address(state["id_daddr"], state["family"])
                self._ignore_gone(rq.delsa(dst, state["id_spi"]))
        for link in self._ip.leftovers():
            self._ip.delete(link.name)
        try:
            nft.apply(nft.render([]), self._netns)
        except nft.NftError as exc:  # no nft: we cannot have left a table either
            log.info("nftables cleanup skipped: %s", exc)

    def _ignore_gone(self, request: rq.Request) -> None:
        try:
            self._sock.request(request)
        except NetlinkError as exc:
            if not _is_gone(exc):
                raise

    # -- interfaces ----------------------------------------------------------------
    async def create_interface(self, spec: InterfaceSpec) -> None:
        if spec.name in self._interfaces:
            raise DataplaneError(f"interface {spec.name}: already created")

        def create() -> None:
            self._ip.create(spec)
            try:
                if spec.address is not None:
                    self._ip.add_address(spec.name, spec.address)
                self._apply_nft({**self._interfaces, spec.name: spec})
            except BaseException:
                self._ip.delete(spec.name)
                raise

        await self._run(f"creating interface {spec.name}", create)
        self._interfaces[spec.name] = spec
        self._routes[spec.name] = set()

    async def update_interface(self, spec: InterfaceSpec) -> None:
        old = self._spec(spec.name)

        def update() -> None:
            try:
                self._reconfigure(old, spec)
            except BaseException:
                self._reconfigure(spec, old)
                raise

        await self._run(f"updating interface {spec.name}", update)
        self._interfaces[spec.name] = spec

    def _reconfigure(self, old: InterfaceSpec, new: InterfaceSpec) -> None:
        if old.mtu != new.mtu:
            self._ip.set_mtu(new.name, new.mtu)
        if old.address != new.address:
            if old.address is not None:
                self._ip.delete_address(new.name, old.address)
            if new.address is not None:
                self._ip.add_address(new.name, new.address)
        if old.borrowed_source != new.borrowed_source and self._ip.is_up(new.name):
            for prefix in self._routes.get(new.name, ()):
                self._ip.replace_route(new.name, prefix, new.borrowed_source)
        if old.tcp_mss != new.tcp_mss:
            self._apply_nft({**self._interfaces, new.name: new})

    async def delete_interface(self, name: str) -> None:
        remaining = {key: spec for key, spec in self._interfaces.items() if key != name}

        def delete() -> None:
            self._ip.delete(name)
            self._apply_nft(remaining)

        await self._run(f"deleting interface {name}", delete)
        self._interfaces.pop(name, None)
        self._routes.pop(name, None)

    def _apply_nft(self, interfaces: dict[str, InterfaceSpec]) -> None:
        try:
            nft.apply(nft.render(interfaces.values()), self._netns)
        except nft.NftError:
            if any(spec.tcp_mss is not None for spec in interfaces.values()):
                raise
            log.warning("nftables unavailable: IPv6 forwarding not blocked on ipsecN")

    async def set_link(self, name: str, up: bool) -> None:
        spec = self._spec(name)

        def set_link() -> None:
            self._ip.set_up(name, up)
            if not up:
                return  # the kernel drops the routes itself; we keep them for later
            try:
                for prefix in sorted(self._routes.get(name, ())):
                    self._ip.replace_route(name, prefix, spec.borrowed_source)
            except BaseException:
                self._ip.set_up(name, False)
                raise

        await self._run(f"setting interface {name} {'up' if up else 'down'}", set_link)

    async def add_route(self, name: str, prefix: ipaddress.IPv4Network) -> None:
        spec = self._spec(name)

        def add() -> None:
            if self._ip.is_up(name):
                self._ip.replace_route(name, prefix, spec.borrowed_source)

        await self._run(f"adding route {prefix} via {name}", add)
        self._routes[name].add(prefix)

    async def delete_route(self, name: str, prefix: ipaddress.IPv4Network) -> None:
        routes = self._routes.get(name)
        if routes is None or prefix not in routes:
            return

        def delete() -> None:
            try:
                self._ip.delete_route(name, prefix)
            except Pyroute2NetlinkError as exc:
                if not _is_gone(exc):
                    raise

        await self._run(f"deleting route {prefix} via {name}", delete)
        routes.discard(prefix)

    def _spec(self, name: str) -> InterfaceSpec:
        spec = self._interfaces.get(name)
        if spec is None:
            raise DataplaneError(f"interface {name}: not created by this dataplane")
        return spec

    # -- SAs -----------------------------------------------------------------------
    async def add_sa(self, sa: SaSpec) -> None:
        key: SaKey = (sa.spi, sa.direction, sa.if_id)
        label = f"SA {sa.spi:#010x} ({sa.direction.value}, if_id {sa.if_id:#x})"

        def add() -> None:
            request = rq.newsa(sa)
            try:
                self._sock.request(request)
            except NetlinkError as exc:
                if exc.errno != errno.EEXIST:
                    raise
                self._ignore_gone(rq.delsa(sa.dst, sa.spi))
                self._sock.request(request)
            self._sas[key] = sa
            try:
                self._sync_policies(sa.if_id)
            except BaseException:
                self._sas.pop(key, None)
                self._ignore_gone(rq.delsa(sa.dst, sa.spi))
                raise

        await self._run(f"installing {label}", add)

    async def delete_sa(self, spi: int, direction: Direction, if_id: int) -> None:
        def delete() -> None:
            sa = self._sas.get((spi, direction, if_id))
            dst = sa.dst if sa is not None else self._find_sa_dst(spi, if_id)
            if dst is not None:
                self._ignore_gone(rq.delsa(dst, spi))
            self._sas.pop((spi, direction, if_id), None)

        await self._run(f"deleting SA {spi:#010x} ({direction.value}, if_id {if_id:#x})", delete)

    def _find_sa_dst(
        self, spi: int, if_id: int
    ) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        for state in self._sock.request(rq.dump_sas()):
            if state["id_spi"] == spi and (state.get_attr("XFRMA_IF_ID") or 0) == if_id:
                return m.unpack_address(state["id_daddr"], state["family"])
        return None

    async def sa_counters(self, spi: int, direction: Direction, if_id: int) -> SaCounters:
        label = f"SA {spi:#010x} ({direction.value}, if_id {if_id:#x})"

        def read() -> Any:
            sa = self._sas.get((spi, direction, if_id))
            dst = sa.dst if sa is not None else self._find_sa_dst(spi, if_id)
            if dst is None:
                raise LookupError("no such SA")
            replies = self._sock.request(rq.getsa(dst, spi))
            if not replies:
                raise LookupError("the kernel returned no SA")
            return replies[0]

        state = await self._run(f"reading counters of {label}", read)
        return _sa_counters(state)

    # -- policies ------------------------------------------------------------------
    async def add_policies(self, if_id: int) -> None:
        def add() -> None:
            self._policy_if_ids.add(if_id)
            try:
                self._sync_policies(if_id)
            except BaseException:
                self._policy_if_ids.discard(if_id)
                self._remove_policies(if_id)
                raise

        await self._run(f"installing policies for if_id {if_id:#x}", add)

    async def delete_policies(self, if_id: int) -> None:
        def delete() -> None:
            self._policy_if_ids.discard(if_id)
            self._remove_policies(if_id)

        await self._run(f"deleting policies for if_id {if_id:#x}", delete)

    def _templates(self, if_id: int) -> tuple[rq.PolicyTemplate, rq.PolicyTemplate] | None:
        """(inbound, outbound) templates from the newest SA of this interface."""
        newest: dict[Direction, SaSpec] = {}
        for (_spi, direction, sa_if_id), sa in list(self._sas.items()):
            if sa_if_id == if_id:
                newest[direction] = sa
        out = newest.get(Direction.OUT)
        ref = out or newest.get(Direction.IN)
        if ref is None:
            return None
        family = m.address_family(ref.dst)
        src, dst = (out.src, out.dst) if out is not None else (ref.dst, ref.src)
        inbound = rq.PolicyTemplate(ref.mode, family)  # any outer address: NAT may move it
        return inbound, rq.PolicyTemplate(ref.mode, family, src, dst)

    def _sync_policies(self, if_id: int) -> None:
        if if_id not in self._policy_if_ids:
            return
        templates = self._templates(if_id)
        if templates is None or self._installed_templates.get(if_id) == templates:
            return
        inbound, outbound = templates
        for direction in rq.POLICY_DIRECTIONS:
            tmpl = outbound if direction == m.XFRM_POLICY_OUT else inbound
            self._sock.request(rq.newpolicy(direction, if_id, tmpl, update=True))
        self._installed_templates[if_id] = templates

    def _remove_policies(self, if_id: int) -> None:
        self._installed_templates.pop(if_id, None)
        for direction in rq.POLICY_DIRECTIONS:
            self._ignore_gone(rq.delpolicy(direction, if_id))

    # -- ESP in UDP ----------------------------------------------------------------
    def register_encap_socket(self, sock: socket.socket) -> None:
        try:
            sock.setsockopt(SOL_UDP, UDP_ENCAP, m.UDP_ENCAP_ESPINUDP)
        except OSError as exc:
            raise DataplaneError(f"UDP_ENCAP_ESPINUDP on {sock.getsockname()}: {exc}") from exc

    def handle_encapsulated_esp(
        self, packet: bytes, local: tuple[str, int], remote: tuple[str, int]
    ) -> None:
        """The kernel takes ESP off the socket itself; nothing reaches the daemon."""

    # -- counters ------------------------------------------------------------------
    async def interface_counters(self, name: str) -> InterfaceCounters:
        stats = await self._run(f"reading counters of {name}", lambda: self._ip.stats(name))
        return InterfaceCounters(
            rx_bytes=stats.get("rx_bytes", 0),
            rx_packets=stats.get("rx_packets", 0),
            tx_bytes=stats.get("tx_bytes", 0),
            tx_packets=stats.get("tx_packets", 0),
            rx_errors=stats.get("rx_errors", 0),
            tx_errors=stats.get("tx_errors", 0),
            # xfrmi counts packets it could not encrypt (no policy or no SA) here.
            tx_dropped_down=stats.get("tx_carrier_errors", 0),
        )

    # -- events --------------------------------------------------------------------
    def _read_events(self) -> None:
        if self._events is None:
            return
        try:
            received = self._events.receive_events()
        except OSError:
            log.exception("reading XFRM events failed")
            return
        for msg_type, msg in received:
            event = self._to_event(msg_type, msg)
            if event is not None:
                self._on_event(event)

    def _to_event(self, msg_type: int, msg: Any) -> DataplaneEvent | None:
        if_id = int(msg.get_attr("XFRMA_IF_ID") or 0)
        if not is_our_if_id(if_id):
            return None
        if msg_type == m.XFRM_MSG_EXPIRE:
            spi = int(msg["id_spi"])
            hard = bool(msg["hard"])
            for direction in (Direction.IN, Direction.OUT):
                if (spi, direction, if_id) in self._sas:
                    if hard:  # the kernel deletes the SA itself
                        self._sas.pop((spi, direction, if_id))
                    kind = ExpiryKind.HARD if hard else ExpiryKind.SOFT
                    return SaExpired(spi, direction, kind, if_id)
            return None
        if msg_type == m.XFRM_MSG_ACQUIRE:
            for spec in self._interfaces.values():
                if spec.if_id == if_id:
                    return TrafficWhileDown(if_id, spec.name)
        return None


def _sa_counters(state: Any) -> SaCounters:
    last_used: float | None = None
    # XFRMA_LASTUSED where the kernel sends it; otherwise curlft.use_time, the first use
    # (Linux 6.1 sends no LASTUSED for SAs).  Both are wall-clock seconds; the model
    # wants the monotonic clock.
    used_at = state.get_attr("XFRMA_LASTUSED") or state["curlft_use_time"]
    if used_at:
        last_used = time.monotonic() - max(0.0, time.time() - float(used_at))
    return SaCounters(
        bytes=int(state["curlft_bytes"]),
        packets=int(state["curlft_packets"]),
        replay_errors=int(state["stats_replay"]) + int(state["stats_replay_window"]),
        integrity_errors=int(state["stats_integrity_failed"]),
        last_used=last_used,
    )
