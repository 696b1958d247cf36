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
import threading
import time
from collections.abc import Callable
from dataclasses import replace
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
    SaMode,
    SaSpec,
    TrafficWhileDown,
    is_our_if_id,
)
from core.dataplane.xfrm import messages as m
from core.dataplane.xfrm import nft
from core.dataplane.xfrm import requests as rq
from core.dataplane.xfrm.interfaces import Interfaces, InterfaceStateError
from core.dataplane.xfrm.links import Links
from core.dataplane.xfrm.linkwatch import EVERY_DEVICE, LinkWatch
from core.dataplane.xfrm.netlink import NetlinkError, XfrmSocket
from core.dataplane.xfrm.redirect import RedirectError, Redirects

log = logging.getLogger(__name__)

COVER_RETRIES = 3  # a failed redirect onto a new device is tried again this often,
COVER_RETRY_SECONDS = 2.0  # this far apart

T = TypeVar("T")
SaKey = tuple[int, Direction, int]  # spi, direction, if_id

SOL_UDP = 17
UDP_ENCAP = 100
_GONE = (errno.ENOENT, errno.ESRCH)
_FAILURES = (
    OSError,
    Pyroute2NetlinkError,
    nft.NftError,
    LookupError,
    InterfaceStateError,
    rq.InvalidSaError,
    RedirectError,
)


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
        self._link_watch: LinkWatch | None = None  # new devices get transport redirects
        self._new_devices: set[str] = set()  # heard of, not yet covered by the worker
        self._covering: asyncio.Task[None] | None = None
        self._links: Links | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_event: Callable[[DataplaneEvent], None] = lambda _event: None
        self._interfaces: Interfaces | None = None
        self._redirects = Redirects(netns)  # transport mode: traffic to the peer into ipsecN
        self._sas: dict[SaKey, SaSpec] = {}
        self._policy_if_ids: set[int] = set()
        self._work_lock = threading.Lock()
        self._installed_templates: dict[int, tuple[rq.PolicyTemplate, rq.PolicyTemplate]] = {}

    # -- plumbing ------------------------------------------------------------------
    async def _run(self, what: str, work: Callable[[], T], *, started: bool = True) -> T:
        if started and self._xfrm is None:
            raise DataplaneError(f"{what}: kernel dataplane used before start()")

        def serialized() -> T:
            # One call at a time: multi-step changes (nft renders, policy syncs) read and
            # write shared state, and concurrent daemon calls must not interleave them.
            with self._work_lock:
                return work()

        try:
            return await asyncio.to_thread(serialized)
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

    @property
    def _ifs(self) -> Interfaces:
        if self._interfaces is None:
            raise DataplaneError("kernel dataplane used before start()")
        return self._interfaces

    # -- lifecycle -----------------------------------------------------------------
    async def start(self, on_event: Callable[[DataplaneEvent], None]) -> None:
        self._on_event = on_event
        self._loop = asyncio.get_running_loop()

        def open_all() -> None:
            self._xfrm = XfrmSocket(self._netns)
            self._events = XfrmSocket(self._netns, groups=m.XFRMGRP_ACQUIRE | m.XFRMGRP_EXPIRE)
            self._links = Links(self._netns)
            self._interfaces = Interfaces(self._links, self._netns)
            self._link_watch = LinkWatch(self._netns)

        await self._run("opening netlink sockets", open_all, started=False)
        await self._run("removing state an earlier run left", self._remove_all_ours_at_start)
        assert self._events is not None
        self._loop.add_reader(self._events.fileno(), self._read_events)
        assert self._link_watch is not None
        self._loop.add_reader(self._link_watch.fileno(), self._read_link_events)

    async def stop(self) -> None:
        if self._loop is not None:
            for watched in (self._events, self._link_watch):
                if watched is not None:
                    self._loop.remove_reader(watched.fileno())
        if self._covering is not None:
            self._covering.cancel()
            self._covering = None
        if self._xfrm is not None:
            await self._run("removing our interfaces, SAs and policies", self._remove_all_ours)
        for closable in (self._xfrm, self._events, self._links, self._link_watch):
            if closable is not None:
                closable.close()
        self._xfrm = self._events = None
        self._link_watch = None
        self._links = None
        self._interfaces = None
        self._sas.clear()
        self._policy_if_ids.clear()
        self._installed_templates.clear()

    def _remove_all_ours_at_start(self) -> None:
        """As `_remove_all_ours`, but a crashed run's tc redirects stay until this run's
        replace them: they keep dropping the traffic to the peers meanwhile."""
        self._remove_all_ours(redirects=False)
        self._redirects.adopt_leftovers()

    def _remove_all_ours(self, *, redirects: bool = True) -> None:
        """Policies, SAs, interfaces with our if_ids, and our tc redirects."""
        for policy in self._sock.request(rq.dump_policies()):
            if_id = policy.get_attr("XFRMA_IF_ID") or 0
            if is_our_if_id(if_id):
                self._ignore_gone(rq.delpolicy(policy["dir"], if_id))
        for state in self._sock.request(rq.dump_sas()):
            if_id = state.get_attr("XFRMA_IF_ID") or 0
            if is_our_if_id(if_id) and state["id_spi"]:
                dst = m.unpack_address(state["id_daddr"], state["family"])
                self._ignore_gone(rq.delsa(dst, state["id_spi"]))
        self._ifs.remove_all()
        if redirects:
            self._redirects.remove_all()

    def _ignore_gone(self, request: rq.Request) -> None:
        try:
            self._sock.request(request)
        except NetlinkError as exc:
            if not _is_gone(exc):
                raise

    # -- interfaces ----------------------------------------------------------------
    async def create_interface(self, spec: InterfaceSpec) -> None:
        def create() -> None:
            self._ifs.create(spec)
            try:
                self._redirect(spec)
            except BaseException:
                self._ifs.delete(spec.name)
                raise

        await self._run(f"creating interface {spec.name}", create)

    async def update_interface(self, spec: InterfaceSpec) -> None:
        def update() -> None:
            old = self._ifs.spec(spec.name)
            # The new transport peer is stored only once redirected: the next update
            # with the same spec tries again.
            self._ifs.update(replace(spec, transport=old.transport))
            if old.transport != spec.transport:
                self._redirect(spec)
            self._ifs.specs[spec.name] = spec

        await self._run(f"updating interface {spec.name}", update)

    async def delete_interface(self, name: str) -> None:
        def delete() -> None:
            self._redirects.remove(name)
            self._ifs.delete(name)

        await self._run(f"deleting interface {name}", delete)

    async def set_link(self, name: str, up: bool) -> None:
        def set_link() -> None:
            self._ifs.set_link(name, up)
            if up:  # a device may have appeared, or an earlier installation failed
                self._redirects.refresh(name)

        await self._run(f"setting interface {name} {'up' if up else 'down'}", set_link)

    def _redirect(self, spec: InterfaceSpec) -> None:
        if spec.transport is None:
            self._redirects.remove(spec.name)
        elif spec.transport.remote.version == 6:
            # The tc redirect carried no IPv6 traffic in the QEMU guest (the peer never came
            # up); refused rather than left to fail silently.  The userspace dataplane does.
            raise RedirectError(
                f"{spec.name}: transport mode with IPv6 outer addresses is not supported on "
                "the kernel dataplane yet (use tunnel mode, or dataplane = \"userspace\")"
            )
        else:
            self._redirects.add(spec.name, spec.if_id, spec.transport)

    async def add_route(self, name: str, prefix: ipaddress.IPv4Network) -> None:
        label = f"adding route {prefix} via {name}"
        await self._run(label, lambda: self._ifs.add_route(name, prefix))

    async def delete_route(self, name: str, prefix: ipaddress.IPv4Network) -> None:
        label = f"deleting route {prefix} via {name}"
        await self._run(label, lambda: self._ifs.delete_route(name, prefix))

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
                name = self._ifs.name_for_if_id(sa.if_id)
                if name is not None and sa.mode is SaMode.TRANSPORT:
                    self._redirects.refresh(name)
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
    def _read_link_events(self) -> None:
        """Devices appeared or changed: the worker puts the transport-mode redirects onto
        them again (one job at a time; names heard meanwhile wait for the next)."""
        if self._link_watch is None or self._loop is None:
            return
        try:
            names = self._link_watch.drain()
        except OSError as exc:  # not expected of netlink: stop watching rather than spin
            log.warning("link events unreadable, new devices get transport-mode redirects "
                        "only at the next SA installation: %s", exc)  # fmt: skip
            self._loop.remove_reader(self._link_watch.fileno())
            return
        if not names:
            return
        self._new_devices |= names
        if self._covering is None or self._covering.done():
            self._covering = self._loop.create_task(self._cover_new_devices())

    async def _cover_new_devices(self) -> None:
        failures = 0
        while self._new_devices and self._xfrm is not None:
            names, self._new_devices = self._new_devices, set()

            def cover(names: set[str] = names) -> None:
                self._redirects.cover(names - {EVERY_DEVICE}, every=EVERY_DEVICE in names)

            try:
                await self._run("transport-mode redirect onto new devices", cover)
                failures = 0
            except DataplaneError as exc:
                failures += 1
                if failures > COVER_RETRIES:  # the next link event or SA installation
                    log.warning("%s", exc)
                    return
                log.debug("%s (trying again in %s s)", exc, COVER_RETRY_SECONDS)
                self._new_devices |= names
                await asyncio.sleep(COVER_RETRY_SECONDS)

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
        if msg_type == m.XFRM_MSG_ACQUIRE and self._interfaces is not None:
            name = self._interfaces.name_for_if_id(if_id)
            if name is not None:
                return TrafficWhileDown(if_id, name)
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
