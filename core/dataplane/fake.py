"""An in-memory `Dataplane` for the daemon's unit tests.

It keeps the state a real backend would (interfaces with link state, addresses and routes;
SAs; policies; counters), enforces the same rules (unknown interface or if_id, duplicate
names, bad key material raise `DataplaneError`), logs every call, and lets a test bump
counters, simulate traffic, inject events and make the next call of a method fail.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from core.dataplane.api import DataplaneError
from core.dataplane.model import (
    DataplaneEvent,
    Direction,
    ExpiryKind,
    InterfaceCounters,
    InterfaceSpec,
    IPAddress,
    SaCounters,
    SaExpired,
    SaSpec,
    TrafficWhileDown,
)
from core.dataplane.userspace.esp import EspSa, EspSaError

_NAME = re.compile(r"ipsec([0-9]|[1-5][0-9]|6[0-3])")

SaKey = tuple[int, Direction, int]  # spi, direction, if_id


@dataclass
class FakeInterface:
    spec: InterfaceSpec
    up: bool = False
    routes: set[ipaddress.IPv4Network] = field(default_factory=set)
    counters: InterfaceCounters = field(default_factory=InterfaceCounters)


@dataclass
class FakeSa:
    spec: SaSpec
    counters: SaCounters = field(default_factory=SaCounters)


class FakeDataplane:
    """The Dataplane protocol in memory; see the module docstring."""

    name = "fake"

    def __init__(self) -> None:
        self.started = False
        self.interfaces: dict[str, FakeInterface] = {}
        self.sas: dict[SaKey, FakeSa] = {}
        self.policies: set[int] = set()
        self.encap_sockets: list[socket.socket] = []
        self.encapsulated_received: list[tuple[bytes, tuple[str, int], tuple[str, int]]] = []
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.events: list[DataplaneEvent] = []
        self._on_event: Callable[[DataplaneEvent], None] | None = None
        self._fail_next: dict[str, DataplaneError] = {}

    # -- test controls ------------------------------------------------------------
    def fail_next(self, method: str, message: str = "injected failure") -> None:
        """Make the next call of `method` raise DataplaneError(message), changing nothing."""
        self._fail_next[method] = DataplaneError(message)

    def emit(self, event: DataplaneEvent) -> None:
        """Deliver an event to the daemon as a real backend would."""
        self.events.append(event)
        if self._on_event is not None:
            self._on_event(event)

    def expire(self, spi: int, direction: Direction, if_id: int, kind: ExpiryKind) -> None:
        self._sa(spi, direction, if_id)
        self.emit(SaExpired(spi=spi, direction=direction, kind=kind, if_id=if_id))

    def bump_sa(
        self,
        spi: int,
        direction: Direction,
        if_id: int,
        *,
        now: float | None = None,
        **deltas: int,
    ) -> None:
        """Add to SA counters, e.g. bump_sa(..., packets=3, bytes=300, now=12.0)."""
        sa = self._sa(spi, direction, if_id)
        sa.counters = _bumped(sa.counters, deltas)
        if now is not None:
            sa.counters = replace(sa.counters, last_used=now)

    def bump_interface(self, name: str, **deltas: int) -> None:
        interface = self._interface(name)
        interface.counters = _bumped(interface.counters, deltas)

    def simulate_outbound(self, name: str, packets: int = 1, size: int = 100) -> None:
        """Packets routed into `name`: dropped while down, an event when up but no SA."""
        interface = self._interface(name)
        if not interface.up:
            self.bump_interface(name, tx_dropped_down=packets)
            return
        if_id = interface.spec.if_id
        outbound = [sa for key, sa in self.sas.items() if key[1:] == (Direction.OUT, if_id)]
        if not outbound:
            self.bump_interface(name, tx_dropped_down=packets)
            self.emit(TrafficWhileDown(if_id=if_id, interface=name))
            return
        sa = outbound[-1]
        sa.counters = _bumped(sa.counters, {"packets": packets, "bytes": packets * size})
        self.bump_interface(name, tx_packets=packets, tx_bytes=packets * size)

    def transport_peers(self) -> dict[str, IPAddress]:
        """Interface name -> the outer address whose traffic it protects (transport mode)."""
        return {
            name: interface.spec.transport.remote
            for name, interface in self.interfaces.items()
            if interface.spec.transport is not None
        }

    # -- lifecycle -----------------------------------------------------------------
    async def start(self, on_event: Callable[[DataplaneEvent], None]) -> None:
        self._call("start")
        self._on_event = on_event
        self.started = True

    async def stop(self) -> None:
        self._call("stop", require_started=False)
        self.interfaces.clear()
        self.sas.clear()
        self.policies.clear()
        self.encap_sockets.clear()
        self.started = False

    # -- interfaces ----------------------------------------------------------------
    async def create_interface(self, spec: InterfaceSpec) -> None:
        self._call("create_interface", spec)
        if not _NAME.fullmatch(spec.name):
            raise DataplaneError(f"{spec.name}: interface names are ipsec0..ipsec63")
        if spec.name in self.interfaces:
            raise DataplaneError(f"{spec.name}: exists already")
        if any(i.spec.if_id == spec.if_id for i in self.interfaces.values()):
            raise DataplaneError(f"{spec.name}: if_id {spec.if_id:#x} is in use")
        _check_interface(spec)
        self.interfaces[spec.name] = FakeInterface(spec=spec)

    async def update_interface(self, spec: InterfaceSpec) -> None:
        self._call("update_interface", spec)
        interface = self._interface(spec.name)
        if spec.if_id != interface.spec.if_id:
            raise DataplaneError(f"{spec.name}: if_id cannot change in place")
        _check_interface(spec)
        interface.spec = spec

    async def delete_interface(self, name: str) -> None:
        self._call("delete_interface", name)
        self.interfaces.pop(name, None)

    async def set_link(self, name: str, up: bool) -> None:
        self._call("set_link", name, up)
        self._interface(name).up = up

    async def add_route(self, name: str, prefix: ipaddress.IPv4Network) -> None:
        self._call("add_route", name, prefix)
        self._interface(name).routes.add(prefix)

    async def delete_route(self, name: str, prefix: ipaddress.IPv4Network) -> None:
        self._call("delete_route", name, prefix)
        if name in self.interfaces:
            self.interfaces[name].routes.discard(prefix)

    # -- SAs and policies -----------------------------------------------------------
    async def add_sa(self, sa: SaSpec) -> None:
        self._call("add_sa", sa)
        if not any(i.spec.if_id == sa.if_id for i in self.interfaces.values()):
            raise DataplaneError(f"SA {sa.spi:#010x}: no interface has if_id {sa.if_id:#x}")
        try:
            EspSa(sa, 0.0)  # the same key-length and combination checks as userspace
        except EspSaError as error:
            raise DataplaneError(str(error)) from None
        self.sas[(sa.spi, sa.direction, sa.if_id)] = FakeSa(spec=sa)

    async def delete_sa(self, spi: int, direction: Direction, if_id: int) -> None:
        self._call("delete_sa", spi, direction, if_id)
        self.sas.pop((spi, direction, if_id), None)

    async def add_policies(self, if_id: int) -> None:
        self._call("add_policies", if_id)
        if not any(i.spec.if_id == if_id for i in self.interfaces.values()):
            raise DataplaneError(f"policies: no interface has if_id {if_id:#x}")
        self.policies.add(if_id)

    async def delete_policies(self, if_id: int) -> None:
        self._call("delete_policies", if_id)
        self.policies.discard(if_id)

    # -- ESP in UDP -------------------------------------------------------------------
    def register_encap_socket(self, sock: socket.socket) -> None:
        self._call("register_encap_socket", sock)
        self.encap_sockets.append(sock)

    def handle_encapsulated_esp(
        self, packet: bytes, local: tuple[str, int], remote: tuple[str, int]
    ) -> None:
        self._call("handle_encapsulated_esp", packet, local, remote)
        self.encapsulated_received.append((packet, local, remote))

    # -- counters -------------------------------------------------------------------
    async def sa_counters(self, spi: int, direction: Direction, if_id: int) -> SaCounters:
        self._call("sa_counters", spi, direction, if_id)
        return self._sa(spi, direction, if_id).counters

    async def interface_counters(self, name: str) -> InterfaceCounters:
        self._call("interface_counters", name)
        return self._interface(name).counters

    # -- helpers ----------------------------------------------------------------------
    def _call(self, method: str, *args: Any, require_started: bool = True) -> None:
        self.calls.append((method, args))
        failure = self._fail_next.pop(method, None)
        if failure is not None:
            raise failure
        if require_started and not self.started and method != "start":
            raise DataplaneError(f"{method}: the dataplane is not started")

    def _interface(self, name: str) -> FakeInterface:
        try:
            return self.interfaces[name]
        except KeyError:
            raise DataplaneError(f"{name}: no such interface") from None

    def _sa(self, spi: int, direction: Direction, if_id: int) -> FakeSa:
        try:
            return self.sas[(spi, direction, if_id)]
        except KeyError:
            raise DataplaneError(
                f"SA {spi:#010x} {direction.value} if_id {if_id:#x}: no such SA"
            ) from None


def _check_interface(spec: InterfaceSpec) -> None:
    if not 68 <= spec.mtu <= 65535:
        raise DataplaneError(f"{spec.name}: MTU {spec.mtu} outside 68..65535")
    if spec.tcp_mss is not None and not 88 <= spec.tcp_mss <= 65495:
        raise DataplaneError(f"{spec.name}: TCP MSS {spec.tcp_mss} outside 88..65495")
    transport = spec.transport
    local = transport.local if transport is not None else None
    if transport is not None and local is not None and local.version != transport.remote.version:
        raise DataplaneError(f"{spec.name}: transport-mode addresses of two families")


_Counters = TypeVar("_Counters", SaCounters, InterfaceCounters)


def _bumped(counters: _Counters, deltas: dict[str, int]) -> _Counters:
    try:
        changes = {name: getattr(counters, name) + delta for name, delta in deltas.items()}
    except AttributeError as error:
        raise DataplaneError(f"no such counter: {error.name}") from None
    return replace(counters, **changes)
