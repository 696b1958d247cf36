"""UDP 500 and 4500 for IKE and ESP-in-UDP (RFC 7296 2.23, RFC 3948), IPv4 and IPv6.

One socket per port and address family, bound to the wildcard address so that local
addresses may come and go (dynamic local addresses).  Each datagram's local address is
learnt from IP_PKTINFO / IPV6_PKTINFO, and replies leave from that address the same way,
so a peer always sees the address it talked to.

The transport only moves bytes: the non-ESP marker demultiplexing on 4500 is the
daemon's (`core.daemon.service`), which also hands the 4500 sockets to the dataplane.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Iterable
from typing import Protocol

from core.dataplane.model import BYPASS_MARK
from core.ike.constants import NAT_T_PORT
from core.ike.events import Address

log = logging.getLogger("rbipsec.transport")

IKE_PORT = 500
IP_PKTINFO = 8  # linux/in.h; the socket module does not export it
RECEIVE_BATCH = 64  # datagrams per reader callback on port 4500 (ESP in UDP among them)
# Port 500 carries only IKE, each message far dearer than a callback: smaller batches let
# the worker install the SAs of the first messages of a burst and send their answers
# before the rest of the burst is processed (64 peers starting: peers' first answers
# ~30 ms sooner, both daemons busy at once).
IKE_RECEIVE_BATCH = 8
MAX_DATAGRAM = 65535
ADDRESS_CACHE_SIZE = 1024  # parsed local/remote addresses kept per transport
_IN_PKTINFO_SIZE = 12  # struct in_pktinfo {int ifindex; in_addr spec_dst; in_addr addr}
_IN6_PKTINFO_SIZE = 20  # struct in6_pktinfo {in6_addr addr; unsigned int ifindex}
_ANCILLARY_SPACE = socket.CMSG_SPACE(_IN6_PKTINFO_SIZE)


class TransportError(OSError):
    """A socket could not be opened; the message names the port and the reason."""


class DatagramSink(Protocol):
    def datagram_received(self, data: bytes, local: Address, remote: Address) -> None: ...


class Transport(Protocol):
    """What the daemon needs to send and receive UDP datagrams."""

    async def open(self, sink: DatagramSink) -> None: ...

    def send(self, data: bytes, local: Address, remote: Address) -> None:
        """Send `data` from `local` (its host may be unspecified: the kernel picks)."""

    def encap_sockets(self) -> list[socket.socket]:
        """The port-4500 sockets, one per address family, for the dataplane."""
        ...

    def close(self) -> None: ...


class UdpTransport:
    """`Transport` on real sockets in the current network namespace."""

    def __init__(
        self,
        ports: Iterable[int] = (IKE_PORT, NAT_T_PORT),
        families: Iterable[socket.AddressFamily] = (socket.AF_INET, socket.AF_INET6),
    ) -> None:
        self._ports = tuple(ports)
        self._families = tuple(families)
        self._sockets: dict[tuple[int, int], socket.socket] = {}  # (family, port) -> socket
        self._loop: asyncio.AbstractEventLoop | None = None
        self._locals: dict[tuple[int, bytes], Address] = {}
        self._remotes: dict[tuple[str, int], Address] = {}
        self.send_errors = 0

    async def open(self, sink: DatagramSink) -> None:
        self._loop = asyncio.get_running_loop()
        for family in self._families:
            try:
                opened = [_open_socket(family, port) for port in self._ports]
            except TransportError as error:
                if family == socket.AF_INET6 and self._sockets:
                    log.warning("IPv6 outer addresses unavailable: %s", error)
                    continue
                self.close()
                raise
            for sock in opened:
                port = sock.getsockname()[1]
                self._sockets[(family, port)] = sock
                self._loop.add_reader(sock.fileno(), self._on_readable, sock, port, sink)

    def close(self) -> None:
        for sock in self._sockets.values():
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()

    def encap_sockets(self) -> list[socket.socket]:
        return [sock for (_family, port), sock in self._sockets.items() if port == NAT_T_PORT]

    def bound(self) -> list[str]:
        """Human-readable list of what is open, for the start-up log line."""
        return [
            f"{'udp6' if family == socket.AF_INET6 else 'udp4'}/{port}"
            for family, port in self._sockets
        ]

    def send(self, data: bytes, local: Address, remote: Address) -> None:
        try:
            family = (
                socket.AF_INET6
                if ipaddress.ip_address(remote.host).version == 6
                else (socket.AF_INET)
            )
        except ValueError:
            self.send_errors += 1
            log.debug("not sending to %s: not an IP address", remote)
            return
        sock = self._sockets.get((family, local.port)) or self._sockets.get((family, IKE_PORT))
        if sock is None:
            self.send_errors += 1
            log.debug("not sending to %s: no socket for that family", remote)
            return
        try:
            sock.sendmsg([data], _source_pktinfo(family, local.host), 0, (remote.host, remote.port))
        except OSError as error:  # no route, address gone, buffer full: like a lost packet
            self.send_errors += 1
            log.debug("sending to %s from %s failed: %s", remote, local, error)

    def _on_readable(self, sock: socket.socket, port: int, sink: DatagramSink) -> None:
        for _ in range(RECEIVE_BATCH if port == NAT_T_PORT else IKE_RECEIVE_BATCH):
            try:
                data, ancillary, _flags, source = sock.recvmsg(MAX_DATAGRAM, _ANCILLARY_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # e.g. a queued ICMP error
                log.debug("receive on port %d: %s", port, error)
                continue
            sink.datagram_received(data, self._local(sock.family, ancillary, port),
                                   self._remote(source))  # fmt: skip

    def _local(self, family: int, ancillary: list[tuple[int, int, bytes]], port: int) -> Address:
        """The datagram's destination, parsed once per distinct PKTINFO (ESP in UDP arrives
        at a few addresses; parsing each datagram's cost ~2 us of an ~8 us forward)."""
        key = (port, ancillary[0][2] if ancillary else b"")
        address = self._locals.get(key)
        if address is None:
            if len(self._locals) >= ADDRESS_CACHE_SIZE:
                self._locals.clear()
            address = self._locals[key] = Address(_destination_of(family, ancillary), port)
        return address

    def _remote(self, source: tuple[str, int]) -> Address:
        """The sender as an Address, reused per (host, port); the cache is bounded, so a
        flood of spoofed sources only empties it now and then."""
        address = self._remotes.get(source)
        if address is None:
            if len(self._remotes) >= ADDRESS_CACHE_SIZE:
                self._remotes.clear()
            address = self._remotes[source] = Address(source[0], source[1])
        return address


def _open_socket(family: socket.AddressFamily, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            sock.bind(("::", port))
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.bind(("0.0.0.0", port))
        sock.setblocking(False)
        _mark_as_bypass(sock)
    except OSError as error:
        sock.close()
        kind = "udp6" if family == socket.AF_INET6 else "udp4"
        raise TransportError(f"cannot bind {kind} port {port}: {error.strerror or error}") from None
    return sock


def _mark_as_bypass(sock: socket.socket) -> None:
    """IKE (and ESP in UDP) to a transport-mode peer must not enter its tunnel.

    Unmarked traffic to such a peer is steered into ipsecN (core/dataplane/bypass.py);
    the mark keeps ours on the outer link.  Setting it needs CAP_NET_ADMIN: without it
    (unprivileged tests) there are no tunnels to avoid either, and both dataplanes refuse
    transport-mode interfaces; the warning names the socket."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, BYPASS_MARK)
    except OSError as error:
        host, port = sock.getsockname()[:2]
        log.warning("IKE socket %s port %s: no bypass mark (SO_MARK): %s", host, port, error)


def _destination_of(family: int, ancillary: list[tuple[int, int, bytes]]) -> str:
    """The datagram's destination address from its PKTINFO control message."""
    for level, kind, data in ancillary:
        if (level, kind) == (socket.IPPROTO_IP, IP_PKTINFO) and len(data) >= _IN_PKTINFO_SIZE:
            return str(ipaddress.IPv4Address(data[8:12]))
        if (level, kind) == (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO) and (
            len(data) >= _IN6_PKTINFO_SIZE
        ):
            return str(ipaddress.IPv6Address(data[:16]))
    return "::" if family == socket.AF_INET6 else "0.0.0.0"


def _source_pktinfo(family: int, host: str) -> list[tuple[int, int, bytes]]:
    """Ancillary data that makes the kernel send from `host` (nothing for a wildcard)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return []
    if address.is_unspecified:
        return []
    if family == socket.AF_INET and address.version == 4:
        return [(socket.IPPROTO_IP, IP_PKTINFO, bytes(4) + address.packed + bytes(4))]
    if family == socket.AF_INET6 and address.version == 6:
        return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, address.packed + bytes(4))]
    return []
