"""The userspace dataplane: TUN devices + ESP in Python, driven by asyncio.

Outbound: the kernel routes a packet into TUN ipsecN; `loop.add_reader` drains up to 64
packets per callback, clamps the TCP MSS, protects each with the interface's newest
outbound SA and sends it -- in UDP from the daemon's port-4500 socket (RFC 3948) or as raw
ESP (IP protocol 50) from a raw socket bound to the SA's local address (one per address,
opened with its first SA, closed with its last).  ESP in UDP waits for the end of the
batch: runs of equal-sized packets then leave in one UDP GSO send each (UDP_SEGMENT), so
the kernel routes and builds one datagram per run and cuts it up as late as it can; a
lone packet still leaves at once.  The kernel builds the outer header, so its ToS stays 0
whatever the inner packet carries.

Inbound: raw ESP arrives on the same raw sockets (IPv4 ones include the IP header, which
is skipped, not copied); UDP-encapsulated ESP is handed over by the daemon through
`handle_encapsulated_esp`.  The SA is found by SPI and the packet decapsulated.  TCP
segments and UDP datagrams are queued until the end of the batch and written coalesced
into GSO packets (gro.py), which spares the kernel most per-packet work (one write, one
routing decision and one wake-up of the receiving socket per merged packet) and the
tunnel most ACKs; other packets are written at once.  Bad packets are counted, never
raised.

A one-second tick reports SA expiry and notes last use.  The module runs in the current
network namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import ipaddress
import logging
import os
import socket
import struct
import termios
from collections.abc import Callable, Iterator

from core.dataplane.api import DataplaneError
from core.dataplane.bypass import TransportRoutes, set_bypass_mark
from core.dataplane.model import (
    DataplaneEvent,
    Direction,
    InterfaceCounters,
    InterfaceSpec,
    IPAddress,
    SaCounters,
    SaExpired,
    SaSpec,
    TrafficWhileDown,
)
from core.dataplane.mss import clamp_mss
from core.dataplane.userspace.esp import DropKind, EspDropped, EspSa, EspSaError, EspSendRefused
from core.dataplane.userspace.gro import (
    GSO_UDP_L4,
    MAX_UDP_SEGMENTS,
    PLAIN,
    VNET_HEADER_SIZE,
    coalesce,
)
from core.dataplane.userspace.packet import PROTO_TCP, PROTO_UDP
from core.dataplane.userspace.rtnl import NetlinkError as RtnlError
from core.dataplane.userspace.tun import (
    TUN_NAME,
    LinkConfig,
    disable_ipv6_forwarding,
    open_tun,
)

log = logging.getLogger(__name__)
DRAIN_BATCH = 64  # packets per reader callback (NOTES.md: as fast as a selectors loop)
TICK_SECONDS = 1.0
IPPROTO_ESP = 50
IP_FREEBIND = 15  # linux/in.h: bind to an address not (yet) configured
IPV6_FREEBIND = 78  # linux/in6.h
_MAX_PACKET = 65535
_TUN_READ_SIZE = VNET_HEADER_SIZE + _MAX_PACKET
_IPV6_FROM_TUN = VNET_HEADER_SIZE + 40  # the shortest IPv6 packet read from a TUN
RCVBUF_BYTES = 4 << 20
RCVBUF_FORCE_OPTION = 33  # SO_RCVBUFFORCE: as root, past net.core.rmem_max

_SPI = struct.Struct("!I")
UDP_SEGMENT = 103  # linux/udp.h: the GSO segment size of a UDP send, as a SOL_UDP cmsg
_SEGMENT_SIZE = struct.Struct("=H")
_NO_BYTES = bytes(4)  # FIONREAD's answer (an int) for an empty socket
_MAX_UDP_GSO_PAYLOAD = 0xFFFF - 48  # all segments' UDP payload: within one IPv6/IPv4 packet
# Errors of a UDP GSO send that mean it cannot work here (no UDP GSO before Linux 4.18,
# no checksum offload on the outgoing device, an XFRM policy on the route):
_NO_UDP_GSO = frozenset((errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP))
_IP_MTU = 14  # linux/in.h: a connected socket's route MTU
_IPV6_MTU = 24  # linux/in6.h

SaKey = tuple[int, Direction, int]


class _Interface:
    __slots__ = (
        "fd",
        "index",
        "last_down_event",
        "outbound",
        "routes",
        "rx_bytes",
        "rx_errors",
        "rx_packets",
        "spec",
        "tcp_mss",
        "tx_bytes",
        "tx_dropped_down",
        "tx_errors",
        "tx_packets",
        "up",
    )

    def __init__(self, spec: InterfaceSpec, fd: int, index: int) -> None:
        self.spec = spec
        self.tcp_mss = spec.tcp_mss or 0  # 0: no clamping (a plain int for the packet path)
        self.fd = fd
        self.index = index
        self.up = False
        self.routes: set[ipaddress.IPv4Network] = set()
        self.outbound: _Sa | None = None
        self.last_down_event = float("-inf")
        self.rx_bytes = self.rx_packets = self.rx_errors = 0
        self.tx_bytes = self.tx_packets = self.tx_errors = self.tx_dropped_down = 0

    def counters(self) -> InterfaceCounters:
        return InterfaceCounters(
            rx_bytes=self.rx_bytes,
            rx_packets=self.rx_packets,
            tx_bytes=self.tx_bytes,
            tx_packets=self.tx_packets,
            rx_errors=self.rx_errors,
            tx_errors=self.tx_errors,
            tx_dropped_down=self.tx_dropped_down,
        )


class _Sa:
    """An installed SA: its ESP state, its interface and how to reach the peer."""

    __slots__ = ("destination", "esp", "family", "interface", "sock")

    def __init__(self, esp: EspSa, interface: _Interface) -> None:
        self.esp = esp
        self.interface = interface
        spec = esp.spec
        self.family = socket.AF_INET if spec.dst.version == 4 else socket.AF_INET6
        # Set by the backend: the raw socket bound to the SA's local address, or the
        # daemon's port-4500 socket (None until the daemon registers it).
        self.sock: socket.socket | None = None
        port = spec.encap.dport if spec.encap is not None else 0
        self.destination = (str(spec.dst), port)


class UserspaceDataplane:
    """`Dataplane` over TUN devices with ESP in Python; see the module docstring."""

    name = "userspace"
    _udp_gso = True  # merge UDP datagrams into GSO packets; off once the kernel refuses one
    _udp_segmentation = True  # send ESP in UDP with UDP_SEGMENT; off once the kernel refuses

    def __init__(self) -> None:
        self._links = LinkConfig()
        self._transport = TransportRoutes()  # transport mode: peers routed into their TUN
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_event: Callable[[DataplaneEvent], None] = lambda event: None
        self._interfaces: dict[str, _Interface] = {}
        self._by_if_id: dict[int, _Interface] = {}
        self._sas: dict[SaKey, _Sa] = {}
        self._inbound: dict[int, _Sa] = {}  # by SPI
        self._raw_sockets: dict[IPAddress, socket.socket] = {}  # by local address
        self._encap_sockets: dict[int, socket.socket] = {}
        # Per destination: the largest ESP-in-UDP packet sent as a UDP GSO segment, where a
        # send with larger ones failed for the route's MTU (_udp_gso_refused).
        self._gso_segment_limits: dict[tuple[str, int], int] = {}
        self._tick_handle: asyncio.TimerHandle | None = None
        # TCP segments decapsulated in the current batch, per interface, written by
        # _flush() at its end (coalesced); ESP in UDP schedules that flush.
        self._pending: dict[_Interface, list[bytes]] = {}
        self._flush_handle: asyncio.Handle | None = None
        self.unknown_spi_drops = 0  # inbound ESP for no installed SA

    # -- lifecycle -------------------------------------------------------------------
    async def start(self, on_event: Callable[[DataplaneEvent], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_event = on_event
        if not os.path.exists("/dev/net/tun"):
            raise DataplaneError("userspace dataplane: /dev/net/tun is missing")
        await self._links.open()
        await self._transport.open()
        with _netlink_errors("removing leftovers of an earlier run"):
            await self._transport.adopt_leftovers()  # kept until this run's replace them
            with contextlib.suppress(*_NETLINK_ERRORS):  # else one by one, just below
                await self._links.delete_our_links()
            for index, _name in await self._links.our_tun_links():
                await self._links.delete_link(index)
            for prefix in await self._links.our_guards():
                await self._links.delete_guard(prefix)
        self._tick_handle = self._loop.call_later(TICK_SECONDS, self._tick)

    async def stop(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._pending.clear()
        if self._interfaces:  # all devices at once; else each goes as its fd is closed
            with contextlib.suppress(*_NETLINK_ERRORS):
                await self._links.delete_our_links()
        for name in list(self._interfaces):
            await self.delete_interface(name)
        self._sas.clear()
        self._inbound.clear()
        for raw in self._raw_sockets.values():
            self._require_loop().remove_reader(raw.fileno())
            raw.close()
        self._raw_sockets.clear()
        self._encap_sockets.clear()
        with _netlink_errors("removing the transport-mode rule and routes"):
            await self._transport.remove_all()
        self._transport.close()
        self._links.close()

    # -- interfaces ------------------------------------------------------------------
    async def create_interface(self, spec: InterfaceSpec) -> None:
        loop = self._require_loop()
        if not TUN_NAME.fullmatch(spec.name):
            raise DataplaneError(f"{spec.name}: interface names are ipsec0..ipsec63")
        if spec.name in self._interfaces or spec.if_id in self._by_if_id:
            raise DataplaneError(f"{spec.name}: name or if_id {spec.if_id:#x} in use")
        _check_interface(spec)
        try:
            fd = open_tun(spec.name)
        except OSError as error:
            raise DataplaneError(f"{spec.name}: cannot create the TUN device: {error}") from None
        index = 0
        try:
            with _netlink_errors(f"{spec.name}: configuring the new interface"):
                index = await self._links.ifindex(spec.name)
                interface = _Interface(spec, fd, index)
                await self._configure(interface, spec, set_address=True, fresh=True)
                disable_ipv6_forwarding(spec.name)
                if spec.transport is not None:
                    await self._transport.add(interface.index, spec.transport)
        except BaseException:
            os.close(fd)  # the device and everything on it disappear with the fd
            with contextlib.suppress(*_NETLINK_ERRORS, DataplaneError):
                await self._remove_guards_of(spec, set())
            with contextlib.suppress(RtnlError):
                await self._transport.remove(index)
            raise
        self._interfaces[spec.name] = interface
        self._by_if_id[spec.if_id] = interface
        loop.add_reader(fd, self._on_tun_readable, interface)

    async def update_interface(self, spec: InterfaceSpec) -> None:
        interface = self._interface(spec.name)
        if spec.if_id != interface.spec.if_id:
            raise DataplaneError(f"{spec.name}: if_id cannot change in place")
        _check_interface(spec)
        with _netlink_errors(f"{spec.name}: updating"):
            old = interface.spec
            if old.address != spec.address and old.address and old.address.network.prefixlen < 32:
                # tolerant: a retry after a later step failed finds the guard gone
                await self._links.delete_guards([old.address.network])
            await self._configure(interface, spec, set_address=old.address != spec.address)
            # The new transport peer is stored only once it is protected: a failed step
            # is retried by the next update with the same spec.
            interface.spec = dataclasses.replace(spec, transport=old.transport)
            interface.tcp_mss = spec.tcp_mss or 0
            if interface.up and old.borrowed_source != spec.borrowed_source:
                await self._install_routes(interface)
            if old.transport != spec.transport and spec.transport is None:
                await self._transport.remove(interface.index)
            elif old.transport != spec.transport and spec.transport is not None:
                await self._transport.add(interface.index, spec.transport)
            interface.spec = spec

    async def delete_interface(self, name: str) -> None:
        interface = self._interfaces.pop(name, None)
        if interface is None:
            return
        del self._by_if_id[interface.spec.if_id]
        self._require_loop().remove_reader(interface.fd)
        os.close(interface.fd)
        for key in [key for key, sa in self._sas.items() if sa.interface is interface]:
            self._forget_sa(key)
        self._close_unused_raw_sockets()
        with _netlink_errors(f"{name}: removing its guard routes"):
            await self._remove_guards_of(interface.spec, interface.routes)
            await self._transport.remove(interface.index)

    async def set_link(self, name: str, up: bool) -> None:
        interface = self._interface(name)
        with _netlink_errors(f"{name}: setting the link {'up' if up else 'down'}"):
            await self._links.set_up(interface.index, up)
            interface.up = up
            if up:  # Linux dropped the device routes when the link went down
                await self._install_routes(interface)
                await self._transport.restore(interface.index)

    async def add_route(self, name: str, prefix: ipaddress.IPv4Network) -> None:
        interface = self._interface(name)
        with _netlink_errors(f"{name}: adding the route {prefix}"):
            await self._links.replace_guard(prefix)
            if interface.up:
                await self._links.replace_route(
                    interface.index, prefix, interface.spec.borrowed_source
                )
        interface.routes.add(prefix)

    async def delete_route(self, name: str, prefix: ipaddress.IPv4Network) -> None:
        interface = self._interfaces.get(name)
        if interface is None or prefix not in interface.routes:
            return
        interface.routes.discard(prefix)
        with contextlib.suppress(*_NETLINK_ERRORS):
            await self._links.delete_route(interface.index, prefix)
        with contextlib.suppress(*_NETLINK_ERRORS):
            await self._links.delete_guard(prefix)

    # -- SAs and policies ------------------------------------------------------------
    async def add_sa(self, sa: SaSpec) -> None:
        loop = self._require_loop()
        interface = self._by_if_id.get(sa.if_id)
        if interface is None:
            raise DataplaneError(f"SA {sa.spi:#010x}: no interface has if_id {sa.if_id:#x}")
        other = self._inbound.get(sa.spi)
        if sa.direction is Direction.IN and other and other.interface is not interface:
            raise DataplaneError(f"SA {sa.spi:#010x}: SPI in use by {other.interface.spec.name}")
        try:
            state = _Sa(EspSa(sa, loop.time()), interface)
        except EspSaError as error:
            raise DataplaneError(str(error)) from None
        if sa.encap is None:
            state.sock = self._raw_socket(sa.src if sa.direction is Direction.OUT else sa.dst)
        else:
            state.sock = self._encap_sockets.get(state.family)
        key = (sa.spi, sa.direction, sa.if_id)
        self._forget_sa(key)
        self._sas[key] = state
        if sa.direction is Direction.IN:
            self._inbound[sa.spi] = state
        else:
            interface.outbound = state  # the newest outbound SA carries the traffic
        self._close_unused_raw_sockets()  # the SA it replaced may have used another

    async def delete_sa(self, spi: int, direction: Direction, if_id: int) -> None:
        self._forget_sa((spi, direction, if_id))
        self._close_unused_raw_sockets()

    async def add_policies(self, if_id: int) -> None:
        # Routing into the TUN is the policy here: nothing to install, only checked.
        if if_id not in self._by_if_id:
            raise DataplaneError(f"policies: no interface has if_id {if_id:#x}")

    async def delete_policies(self, if_id: int) -> None:
        return None

    # -- ESP in UDP ------------------------------------------------------------------
    def register_encap_socket(self, sock: socket.socket) -> None:
        self._encap_sockets[sock.family] = sock
        # ESP arrives in bursts while the loop is busy: the default buffer (~200 KiB,
        # a few ms of traffic) overflows and TCP inside the tunnel collapses.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, RCVBUF_FORCE_OPTION, RCVBUF_BYTES)
        for state in self._sas.values():
            if state.esp.spec.encap is not None and state.family == sock.family:
                state.sock = sock

    def handle_encapsulated_esp(
        self, packet: bytes, local: tuple[str, int], remote: tuple[str, int]
    ) -> None:
        self._receive(packet)
        # The daemon hands datagrams over one at a time: queued TCP segments and UDP
        # datagrams are written at the loop's next turn, after the rest of the daemon's
        # batch -- or at once when no datagram waits behind this one (a lone packet).
        if self._pending and self._flush_handle is None:
            if self._encap_socket_drained(local):
                self._flush()
            else:
                self._flush_handle = self._require_loop().call_soon(self._flush)

    def _encap_socket_drained(self, local: tuple[str, int]) -> bool:
        """True when the port-4500 socket `local` belongs to has no datagram queued."""
        sock = self._encap_sockets.get(socket.AF_INET6 if ":" in local[0] else socket.AF_INET)
        if sock is None:
            return True
        try:
            queued = fcntl.ioctl(sock.fileno(), termios.FIONREAD, _NO_BYTES)
        except OSError:
            return False
        return queued == _NO_BYTES

    # -- counters --------------------------------------------------------------------
    async def sa_counters(self, spi: int, direction: Direction, if_id: int) -> SaCounters:
        state = self._sas.get((spi, direction, if_id))
        if state is None:
            raise DataplaneError(f"SA {spi:#010x} {direction.value} if_id {if_id:#x}: no such SA")
        return state.esp.counters()

    async def interface_counters(self, name: str) -> InterfaceCounters:
        return self._interface(name).counters()

    # -- the packet paths --------------------------------------------------------------
    # These run once per packet, so they read plain slots set up in advance (the
    # interface's MSS, the SA's socket and destination) and call no more functions
    # than needed.  A lone packet is handled as soon as it is readable: nothing waits
    # for a batch, batching only drains what is already queued.  TUN reads and writes
    # start with a virtio_net_hdr (see gro.py).
    def _on_tun_readable(self, interface: _Interface) -> None:
        fd = interface.fd
        # ESP in UDP is sent at the end of the batch, runs of equal size in one call
        # (_send_segments); raw ESP leaves at once.
        segments: list[bytes] | None = [] if self._udp_segmentation else None
        for _ in range(DRAIN_BATCH):
            try:
                data = os.read(fd, _TUN_READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                interface.tx_errors += 1
                break
            self._send(interface, data, segments)
        if segments:
            self._send_segments(interface, segments)

    def _send(self, interface: _Interface, data: bytes, segments: list[bytes] | None) -> None:
        if (
            len(data) <= VNET_HEADER_SIZE or data[VNET_HEADER_SIZE] >> 4 != 4
        ) and not _to_ipv6_transport_peer(interface.spec, data):
            return  # other IPv6 (link-local chatter) is not carried through the tunnel
        state = interface.outbound
        if state is None:
            interface.tx_dropped_down += 1
            self._traffic_while_down(interface)
            return
        sock = state.sock
        if sock is None or data[1]:  # no encap socket registered yet; or a GSO packet,
            interface.tx_errors += 1  # which the device never offers (no TUNSETOFFLOAD)
            return
        packet = data[VNET_HEADER_SIZE:]
        if interface.tcp_mss:
            packet = clamp_mss(packet, interface.tcp_mss)
        try:
            esp = state.esp.encapsulate(packet)
            if segments is not None and state.destination[1]:  # a UDP port: ESP in UDP
                segments.append(esp)
            else:
                sock.sendto(esp, state.destination)
        except (EspSendRefused, OSError):
            interface.tx_errors += 1
            return
        interface.tx_packets += 1
        interface.tx_bytes += len(packet)

    def _send_segments(self, interface: _Interface, segments: list[bytes]) -> None:
        """Send a batch's ESP-in-UDP packets (one SA's, counted as sent already): each run
        of equal-sized ones, the last maybe shorter, as one UDP GSO send (UDP_SEGMENT), so
        the kernel routes and builds one datagram and cuts it up as late as it can."""
        state = interface.outbound
        sock = state.sock if state is not None else None
        if state is None or sock is None:
            interface.tx_packets -= len(segments)
            interface.tx_errors += len(segments)
            return
        destination = state.destination
        start, count = 0, len(segments)
        while start < count:
            size = len(segments[start])
            end, total = start + 1, size
            while end < count and end - start < MAX_UDP_SEGMENTS:
                length = len(segments[end])
                if length > size or total + length > _MAX_UDP_GSO_PAYLOAD:
                    break
                end += 1
                total += length
                if length < size:
                    break
            run = segments[start:end]
            start = end
            if len(run) > 1 and size > self._gso_segment_limits.get(destination, size):
                for esp in run:  # larger than this path's MTU allows as GSO segments
                    self._send_one(interface, sock, esp, destination)
                continue
            try:
                if len(run) == 1:
                    sock.sendto(run[0], destination)
                else:
                    sock.sendmsg(
                        [b"".join(run)],
                        [(socket.SOL_UDP, UDP_SEGMENT, _SEGMENT_SIZE.pack(size))],
                        0,
                        destination,
                    )
            except OSError as error:
                if len(run) > 1 and error.errno in _NO_UDP_GSO:
                    self._udp_gso_refused(sock, destination, size, error.errno)
                    for esp in run:
                        self._send_one(interface, sock, esp, destination)
                else:
                    interface.tx_packets -= len(run)
                    interface.tx_errors += len(run)

    def _udp_gso_refused(
        self, sock: socket.socket, destination: tuple[str, int], size: int, code: int
    ) -> None:
        """A UDP GSO send failed with `code`.  EINVAL also means a segment longer than the
        route's MTU allows (udp_send_skb), which holds for that path only: then larger
        segments to `destination` go one by one; any other refusal, and EINVAL for a
        segment that fits, switch UDP GSO off for good."""
        if code == errno.EINVAL:
            mtu = self._path_mtu(sock, destination)
            headers = 28 if sock.family == socket.AF_INET else 48  # IP + UDP
            if mtu is not None and size + headers > mtu:
                self._gso_segment_limits[destination] = mtu - headers
                return
        self._udp_segmentation = False  # never again; these go one by one

    @staticmethod
    def _path_mtu(sock: socket.socket, destination: tuple[str, int]) -> int | None:
        """The MTU of `sock`'s route to `destination` (IP_MTU of a connected socket with
        the same mark and source; nothing is sent); None when it cannot be told."""
        ipv4 = sock.family == socket.AF_INET
        try:
            with socket.socket(sock.family, socket.SOCK_DGRAM) as probe:
                mark = sock.getsockopt(socket.SOL_SOCKET, socket.SO_MARK)
                if mark:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
                probe.bind((sock.getsockname()[0], 0))
                probe.connect(destination)
                if ipv4:
                    return probe.getsockopt(socket.IPPROTO_IP, _IP_MTU)
                return probe.getsockopt(socket.IPPROTO_IPV6, _IPV6_MTU)
        except OSError:
            return None

    def _send_one(
        self, interface: _Interface, sock: socket.socket, esp: bytes, destination: tuple[str, int]
    ) -> None:
        try:
            sock.sendto(esp, destination)
        except OSError:
            interface.tx_packets -= 1
            interface.tx_errors += 1

    def _on_raw_readable(self, raw: socket.socket) -> None:
        ipv4 = raw.family == socket.AF_INET  # IPv4 raw sockets deliver the IP header too
        for _ in range(DRAIN_BATCH):
            try:
                data = raw.recv(_MAX_PACKET)
            except OSError:  # BlockingIOError included: drained
                break
            if data:
                self._receive(data, (data[0] & 0x0F) * 4 if ipv4 else 0)
        if self._pending:
            self._flush()

    def _receive(self, data: bytes, offset: int = 0) -> None:
        """Decapsulate the ESP packet at `data[offset:]` and hand it to its interface."""
        if len(data) < offset + 8:
            self.unknown_spi_drops += 1
            return
        state = self._inbound.get(_SPI.unpack_from(data, offset)[0])
        if state is None:
            self.unknown_spi_drops += 1
            return
        interface = state.interface
        try:
            packet = state.esp.decapsulate(data, offset)
        except EspDropped as dropped:
            if dropped.kind is not DropKind.DUMMY:
                interface.rx_errors += 1
            return
        if interface.tcp_mss:
            packet = clamp_mss(packet, interface.tcp_mss)
        protocol = packet[9]
        if protocol != PROTO_TCP and protocol != PROTO_UDP:  # nothing to merge: no waiting
            if self._pending:
                self._flush()  # what came before goes first
            self._write(interface, PLAIN, packet, 1)
            return
        pending = self._pending.get(interface)
        if pending is None:
            self._pending[interface] = [packet]
        else:
            pending.append(packet)
            if len(pending) >= DRAIN_BATCH:  # a long batch: do not hold the segments back
                self._flush()

    def _flush(self) -> None:
        """Write the packets queued during a batch, merging what GRO would merge."""
        self._flush_handle = None
        pending, self._pending = self._pending, {}
        for interface, packets in pending.items():
            if self._interfaces.get(interface.spec.name) is not interface:
                continue  # deleted meanwhile
            if len(packets) == 1:
                self._write(interface, PLAIN, packets[0], 1)
                continue
            self._write_coalesced(interface, packets)

    def _write_coalesced(self, interface: _Interface, packets: list[bytes]) -> None:
        done = 0  # coalesce() merges neighbours only: each output holds the next `count`
        for vnet_header, packet, count in coalesce(packets, udp=self._udp_gso):
            if not self._write(interface, vnet_header, packet, count):
                # UDP GSO refused (now switched off): this one's datagrams and the rest
                for vnet_header, packet, count in coalesce(packets[done:], udp=False):
                    self._write(interface, vnet_header, packet, count)
                return
            done += count

    def _write(self, interface: _Interface, vnet_header: bytes, packet: bytes, count: int) -> bool:
        """Write one packet to the TUN; False only when the kernel refused a UDP GSO
        packet (before 6.2), which then switches UDP merging off: nothing was counted,
        the caller writes its datagrams one by one."""
        try:
            os.writev(interface.fd, (vnet_header, packet))
        except OSError as error:  # link down (EIO) or the queue is full
            if error.errno == errno.EINVAL and vnet_header[1] == GSO_UDP_L4:
                self._udp_gso = False  # a kernel before 6.2: UDP datagrams go one by one
                return False
            interface.rx_errors += count
            return True
        interface.rx_packets += count
        interface.rx_bytes += len(packet)
        return True

    def _traffic_while_down(self, interface: _Interface) -> None:
        now = self._require_loop().time()
        if now - interface.last_down_event >= TICK_SECONDS:  # like the kernel's ACQUIRE
            interface.last_down_event = now
            self._on_event(
                TrafficWhileDown(if_id=interface.spec.if_id, interface=interface.spec.name)
            )

    def _tick(self) -> None:
        loop = self._require_loop()
        now = loop.time()
        for state in list(self._sas.values()):
            spec = state.esp.spec
            for kind in state.esp.poll(now):
                self._on_event(
                    SaExpired(spi=spec.spi, direction=spec.direction, kind=kind, if_id=spec.if_id)
                )
        self._tick_handle = loop.call_later(TICK_SECONDS, self._tick)

    # -- helpers ---------------------------------------------------------------------
    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise DataplaneError("the userspace dataplane is not started")
        return self._loop

    def _interface(self, name: str) -> _Interface:
        try:
            return self._interfaces[name]
        except KeyError:
            raise DataplaneError(f"{name}: no such interface") from None

    def _raw_socket(self, local: IPAddress) -> socket.socket:
        """The raw ESP socket of one local address, for both directions.

        Bound to the address, it sends from it with a plain sendto() (no IP_PKTINFO
        ancillary data to build and parse per packet) and receives only ESP sent to it.
        """
        raw = self._raw_sockets.get(local)
        if raw is not None:
            return raw
        if local.version == 4:
            family, freebind = socket.AF_INET, (socket.IPPROTO_IP, IP_FREEBIND)
        else:
            family, freebind = socket.AF_INET6, (socket.IPPROTO_IPV6, IPV6_FREEBIND)
        try:
            raw = socket.socket(family, socket.SOCK_RAW, IPPROTO_ESP)
        except OSError as error:
            raise DataplaneError(f"cannot open a raw ESP socket: {error}") from None
        try:
            raw.setsockopt(*freebind, 1)  # the address may be configured after the SA
            raw.bind((str(local), 0))
        except OSError as error:
            raw.close()
            raise DataplaneError(f"cannot bind a raw ESP socket to {local}: {error}") from None
        raw.setblocking(False)
        try:  # ESP leaves outside the tunnels (bypass.py)
            set_bypass_mark(raw)
        except OSError as error:  # (transport-mode interfaces are refused then)
            log.warning("raw ESP socket on %s: no bypass mark (SO_MARK): %s", local, error)
        with contextlib.suppress(OSError):  # absorb bursts while the loop is busy
            raw.setsockopt(socket.SOL_SOCKET, RCVBUF_FORCE_OPTION, RCVBUF_BYTES)
        self._raw_sockets[local] = raw
        self._require_loop().add_reader(raw.fileno(), self._on_raw_readable, raw)
        return raw

    def _close_unused_raw_sockets(self) -> None:
        used = {id(state.sock) for state in self._sas.values()}
        for local, raw in list(self._raw_sockets.items()):
            if id(raw) not in used:
                self._require_loop().remove_reader(raw.fileno())
                raw.close()
                del self._raw_sockets[local]

    def _forget_sa(self, key: SaKey) -> None:
        state = self._sas.pop(key, None)
        if state is None:
            return
        if self._inbound.get(key[0]) is state:
            del self._inbound[key[0]]
        interface = state.interface
        if interface.outbound is state:
            remaining = [
                other for other in self._sas.values()
                if other.interface is interface and other.esp.spec.direction is Direction.OUT
            ]  # fmt: skip
            interface.outbound = remaining[-1] if remaining else None

    async def _configure(
        self, interface: _Interface, spec: InterfaceSpec, *, set_address: bool, fresh: bool = False
    ) -> None:
        """MTU, address and the guard of the address's prefix: one rtnetlink batch."""
        guard = None
        if spec.address is not None and spec.address.network.prefixlen < 32:
            guard = spec.address.network
        await self._links.configure(
            interface.index, spec.mtu, spec.address, set_address=set_address, fresh=fresh,
            guard=guard,
        )  # fmt: skip

    async def _install_routes(self, interface: _Interface) -> None:
        await self._links.replace_routes(
            interface.index, interface.routes, interface.spec.borrowed_source
        )

    async def _remove_guards_of(
        self, spec: InterfaceSpec, routes: set[ipaddress.IPv4Network]
    ) -> None:
        prefixes = set(routes)
        if spec.address is not None and spec.address.network.prefixlen < 32:
            prefixes.add(spec.address.network)
        await self._links.delete_guards(prefixes)


def _to_ipv6_transport_peer(spec: InterfaceSpec, data: bytes) -> bool:
    """Whether `data` (virtio_net_hdr and packet) is IPv6 between the outer addresses of a
    transport-mode interface: the only IPv6 an interface carries."""
    transport = spec.transport
    if transport is None or transport.remote.version != 6 or len(data) < _IPV6_FROM_TUN:
        return False
    header = data[VNET_HEADER_SIZE : VNET_HEADER_SIZE + 40]
    return (
        header[0] >> 4 == 6
        and header[24:40] == transport.remote.packed
        and (transport.local is None or header[8:24] == transport.local.packed)
    )


def _check_interface(spec: InterfaceSpec) -> None:
    if not 68 <= spec.mtu <= 65535:
        raise DataplaneError(f"{spec.name}: MTU {spec.mtu} outside 68..65535")
    if spec.tcp_mss is not None and not 88 <= spec.tcp_mss <= 65495:
        raise DataplaneError(f"{spec.name}: TCP MSS {spec.tcp_mss} outside 88..65495")


# rtnl.py's: interfaces, addresses, routes and the transport-mode rules (bypass.py)
_NETLINK_ERRORS: tuple[type[Exception], ...] = (RtnlError,)


@contextlib.contextmanager
def _netlink_errors(what: str) -> Iterator[None]:
    """Turn a netlink error into a DataplaneError that names what failed."""
    try:
        yield
    except _NETLINK_ERRORS as error:
        raise DataplaneError(f"{what}: {error}") from None
