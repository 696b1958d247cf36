"""A small blocking NETLINK_ROUTE client: the few link, address, route and rule requests
the userspace dataplane makes, without pyroute2.

Importing pyroute2 costs ~60 ms and ~10 MiB per daemon (its package imports every
family it supports), and encoding one request through it ~0.3 ms of CPU.  Here each
request is a few `struct.pack` calls, and requests go out together: `transact` sends a
batch (up to BATCH_SIZE requests) in one datagram and then reads the acknowledgements, so
configuring an interface is one round trip.  rtnetlink handles a request inside the sender's
`send()`, so the answers are already queued when it returns and a blocking read never
waits on the loop's behalf.

Layouts from linux/netlink.h, rtnetlink.h, if_link.h and if_addr.h.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from core.dataplane.nlframes import NLMSGHDR, parse_messages

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP_FILTERED = 0x20  # in a dump's answers: the kernel applied the request's filters
SOL_NETLINK = 270
NETLINK_GET_STRICT_CHK = 12
RTM_F_FIB_MATCH = 0x2000  # a route lookup answers with the matching table entry

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTM_NEWRULE = 32
RTM_DELRULE = 33
RTM_GETRULE = 34

IFF_UP = 0x1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINKINFO = 18
IFLA_GROUP = 27
IFLA_INFO_KIND = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
RTA_DST = 1
RTA_OIF = 4
RTA_PRIORITY = 6
RTA_PREFSRC = 7
RTA_MULTIPATH = 9
RTA_TABLE = 15
RTN_UNICAST = 1
RTN_UNREACHABLE = 7
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255  # in a delete request: any scope matches
FRA_PRIORITY = 6
FRA_FWMARK = 10
FRA_TABLE = 15
FRA_FWMASK = 16
FR_ACT_TO_TBL = 1
FIB_RULE_INVERT = 0x2  # the rule matches what its selector does not

_NLMSGERR = struct.Struct("=i")
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBi")  # family, prefix length, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst len, src len, tos, table, proto, scope,
#                                       type, flags
_FIB_RULE_HDR = struct.Struct("=BBBBBBBBI")  # family, dst len, src len, tos, table, 2 reserved,
#                                              action, flags
_RTNEXTHOP = struct.Struct("=HBBi")  # length, flags, hops, ifindex
_RTATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_RECV_SIZE = 1 << 16
BATCH_SIZE = 64  # requests per datagram: their acknowledgements fit the receive buffer
RCVBUF_BYTES = 1 << 20
SO_RCVBUFFORCE = 33  # asm-generic/socket.h: SO_RCVBUF past net.core.rmem_max, as root


# A route look-up finding nothing (no route, unreachable/prohibit/blackhole entries).
_NO_ROUTE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES, errno.EINVAL)


class NetlinkError(OSError):
    """The kernel refused a request (errno and its text)."""


def _socket_error(doing: str, error: OSError) -> NetlinkError:
    """A failure of the socket itself (ENOBUFS: answers were lost) as a NetlinkError."""
    code = error.errno if error.errno is not None else errno.EIO
    what = "answers lost, the receive buffer overflowed" if code == errno.ENOBUFS else (
        error.strerror or os.strerror(code))  # fmt: skip
    return NetlinkError(code, f"rtnetlink socket: {doing}: {what}")


def _attr(kind: int, payload: bytes) -> bytes:
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * (-length & 3)


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, _U32.pack(value))


def _attrs(data: bytes, offset: int) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each attribute from `offset` on; a truncated one ends the walk."""
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > len(data):
            return
        yield kind & 0x3FFF, data[offset + _RTATTR.size : offset + length]  # no NLA_F_ flags
        offset += (length + 3) & ~3


def _string(payload: bytes) -> str:
    return payload.split(b"\0", 1)[0].decode(errors="replace")


@dataclass(frozen=True)
class Message:
    """A request without its header: type, flags beyond REQUEST and the body."""

    kind: int
    flags: int
    body: bytes


def set_link(
    index: int, *, up: bool | None = None, mtu: int | None = None, group: int | None = None
) -> Message:
    flags = IFF_UP if up else 0
    change = IFF_UP if up is not None else 0
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)
    if mtu is not None:
        body += _u32(IFLA_MTU, mtu)
    if group is not None:
        body += _u32(IFLA_GROUP, group)
    return Message(RTM_NEWLINK, NLM_F_ACK, body)


def delete_link(index: int) -> Message:
    return Message(RTM_DELLINK, NLM_F_ACK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0))


def delete_link_group(group: int) -> Message:
    """Every device of link group `group` at once (one unregistration for all: closing
    a TUN fd waits for the kernel's RCU grace periods once per device)."""
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _u32(IFLA_GROUP, group)
    return Message(RTM_DELLINK, NLM_F_ACK, body)


def ipv4_address(index: int, address: str, prefixlen: int, *, add: bool) -> Message:
    packed = socket.inet_aton(address)
    body = _IFADDRMSG.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
    body += _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
    if add:
        return Message(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, body)
    return Message(RTM_DELADDR, NLM_F_ACK, body)


def ip_route(
    destination: str,
    prefixlen: int,
    *,
    table: int,
    replace: bool,
    oif: int | None = None,
    unreachable: bool = False,
    priority: int | None = None,
    protocol: int = 0,
    prefsrc: str | None = None,
) -> Message:
    """A route replace (create or overwrite) or delete; a device route when `oif` is set.
    IPv4 or IPv6, after the destination's notation."""
    family = socket.AF_INET6 if ":" in destination else socket.AF_INET
    kind = RTN_UNREACHABLE if unreachable else RTN_UNICAST
    if not replace:
        scope = RT_SCOPE_NOWHERE
    else:  # as iproute2 does: a unicast route without a gateway is on-link
        scope = RT_SCOPE_LINK if kind == RTN_UNICAST else RT_SCOPE_UNIVERSE
    body = _RTMSG.pack(family, prefixlen, 0, 0, table if table < 256 else 252,
                       protocol, scope, kind, 0)  # fmt: skip
    body += _attr(RTA_DST, socket.inet_pton(family, destination)) + _u32(RTA_TABLE, table)
    if oif is not None:
        body += _u32(RTA_OIF, oif)
    if priority is not None:
        body += _u32(RTA_PRIORITY, priority)
    if prefsrc is not None:
        body += _attr(RTA_PREFSRC, socket.inet_pton(family, prefsrc))
    if replace:
        return Message(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, body)
    return Message(RTM_DELROUTE, NLM_F_ACK, body)


def fwmark_rule(
    family: int, *, table: int, priority: int, fwmark: int, fwmask: int, invert: bool,
    add: bool,
) -> Message:  # fmt: skip
    """`[not] fwmark MARK/MASK lookup TABLE pref PRIORITY`, added or deleted."""
    flags = FIB_RULE_INVERT if invert else 0
    body = _FIB_RULE_HDR.pack(family, 0, 0, 0, table if table < 256 else 252, 0, 0,
                              FR_ACT_TO_TBL, flags)  # fmt: skip
    body += _u32(FRA_TABLE, table) + _u32(FRA_PRIORITY, priority)
    body += _u32(FRA_FWMARK, fwmark) + _u32(FRA_FWMASK, fwmask)
    if add:
        return Message(RTM_NEWRULE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)
    return Message(RTM_DELRULE, NLM_F_ACK, body)


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str | None  # IFLA_INFO_KIND ("tun", "veth", ...), None for plain devices
    group: int = 0  # IFLA_GROUP


@dataclass(frozen=True)
class Ipv4Address:
    index: int
    address: str
    prefixlen: int


@dataclass(frozen=True)
class Rule:
    family: int
    table: int
    priority: int | None
    flags: int  # FIB_RULE_*


@dataclass(frozen=True)
class Route:
    family: int
    destination: str
    prefixlen: int
    table: int
    protocol: int
    kind: int  # RTN_*
    oif: int | None  # of a multipath route: its first next hop's
    priority: int | None


def _parse_link(raw: bytes) -> Link:
    _family, _type, index, _flags, _change = _IFINFOMSG.unpack_from(raw, NLMSGHDR.size)
    name, kind, group = "", None, 0
    for attr, payload in _attrs(raw, NLMSGHDR.size + _IFINFOMSG.size):
        if attr == IFLA_IFNAME:
            name = _string(payload)
        elif attr == IFLA_GROUP and len(payload) >= 4:
            group = int.from_bytes(payload[:4], "little")
        elif attr == IFLA_LINKINFO:
            for inner, value in _attrs(payload, 0):
                if inner == IFLA_INFO_KIND:
                    kind = _string(value)
    return Link(index, name, kind, group)


def _parse_address(raw: bytes) -> Ipv4Address | None:
    family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(raw, NLMSGHDR.size)
    if family != socket.AF_INET:
        return None
    found = {kind: payload for kind, payload in _attrs(raw, NLMSGHDR.size + _IFADDRMSG.size)}
    packed = found.get(IFA_LOCAL, found.get(IFA_ADDRESS))  # local: the peer's on ptp links
    if packed is None or len(packed) != 4:
        return None
    return Ipv4Address(index, socket.inet_ntoa(packed), prefixlen)


def _parse_route(raw: bytes) -> Route | None:
    fields = _RTMSG.unpack_from(raw, NLMSGHDR.size)
    family, dst_len, _src, _tos, table, protocol, _scope, kind, _flags = fields
    size = {socket.AF_INET: 4, socket.AF_INET6: 16}.get(family)
    if size is None:
        return None
    destination, oif, priority = "0.0.0.0" if size == 4 else "::", None, None
    for attr, payload in _attrs(raw, NLMSGHDR.size + _RTMSG.size):
        if attr == RTA_DST and len(payload) == size:
            destination = socket.inet_ntop(family, payload)
        elif attr == RTA_TABLE and len(payload) == 4:
            (table,) = _U32.unpack(payload)
        elif attr == RTA_OIF and len(payload) == 4:
            (oif,) = _U32.unpack(payload)
        elif attr == RTA_PRIORITY and len(payload) == 4:
            (priority,) = _U32.unpack(payload)
        elif attr == RTA_MULTIPATH and oif is None and len(payload) >= _RTNEXTHOP.size:
            oif = _RTNEXTHOP.unpack_from(payload)[3]
    return Route(family, destination, dst_len, table, protocol, kind, oif, priority)


def _parse_rule(raw: bytes) -> Rule:
    family, _dst, _src, _tos, table, _r1, _r2, _action, flags = _FIB_RULE_HDR.unpack_from(
        raw, NLMSGHDR.size
    )
    priority = None
    for attr, payload in _attrs(raw, NLMSGHDR.size + _FIB_RULE_HDR.size):
        if attr == FRA_TABLE and len(payload) == 4:
            (table,) = _U32.unpack(payload)
        elif attr == FRA_PRIORITY and len(payload) == 4:
            (priority,) = _U32.unpack(payload)
    return Rule(family, table, priority, flags)


class RtnlSocket:
    """One NETLINK_ROUTE socket in the current network namespace."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   socket.NETLINK_ROUTE)  # fmt: skip
        try:  # past net.core.rmem_max when allowed (CAP_NET_ADMIN)
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
        except OSError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        self._sock.bind((0, 0))
        self._seq = 0
        self.kernel_filtered = False  # the last filtered route dump was filtered by the kernel

    def close(self) -> None:
        self._sock.close()

    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFFFFFF + 1  # 1 .. 2**32 - 1: nlmsg_seq is a u32
        return self._seq

    def transact(self, messages: Sequence[Message]) -> list[NetlinkError | None]:
        """Send the requests, BATCH_SIZE to a datagram; each one's outcome (None: done),
        in order.

        The kernel runs them one after the other, so a later one sees the earlier ones'
        effect; a failed one does not stop the rest.  Each datagram's acknowledgements
        are read before the next goes out, so they fit in the receive buffer.  A socket
        failure raises NetlinkError; the requests sent before it have run."""
        outcomes: list[NetlinkError | None] = []
        for start in range(0, len(messages), BATCH_SIZE):
            outcomes += self._transact_batch(messages[start : start + BATCH_SIZE])
        return outcomes

    def _transact_batch(self, messages: Sequence[Message]) -> list[NetlinkError | None]:
        outcome: dict[int, NetlinkError | None] = {}
        data = bytearray()
        for message in messages:
            seq = self._next_seq()
            outcome[seq] = None
            length = NLMSGHDR.size + len(message.body)
            data += NLMSGHDR.pack(length, message.kind, NLM_F_REQUEST | message.flags, seq, 0)
            data += message.body
        self._send(bytes(data))
        pending = set(outcome)
        while pending:
            for msg_type, seq, raw in self._receive():
                if msg_type == NLMSG_ERROR and seq in pending:
                    pending.discard(seq)
                    (code,) = _NLMSGERR.unpack_from(raw, NLMSGHDR.size)
                    if code:
                        outcome[seq] = NetlinkError(-code, os.strerror(-code))
        return list(outcome.values())  # in insertion order: the requests'

    def request(self, *messages: Message) -> None:
        """Send the requests together; raise the first failure (after all have run)."""
        for error in self.transact(messages):
            if error is not None:
                raise error

    def _dump(self, kind: int, body: bytes) -> Iterator[bytes]:
        seq = self._next_seq()
        length = NLMSGHDR.size + len(body)
        self._send(NLMSGHDR.pack(length, kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
        while True:
            for msg_type, msg_seq, raw in self._receive():
                if msg_seq != seq:
                    continue  # a stale answer to an earlier, abandoned request
                if msg_type == NLMSG_DONE:
                    return
                if msg_type == NLMSG_ERROR:
                    (code,) = _NLMSGERR.unpack_from(raw, NLMSGHDR.size)
                    if code:
                        raise NetlinkError(-code, os.strerror(-code))
                    return
                yield raw

    def links(self) -> list[Link]:
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        return [_parse_link(raw) for raw in self._dump(RTM_GETLINK, body)]

    def ipv4_addresses(self) -> list[Ipv4Address]:
        body = _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)
        parsed = (_parse_address(raw) for raw in self._dump(RTM_GETADDR, body))
        return [address for address in parsed if address is not None]

    def routes(
        self, family: int = socket.AF_INET, *, table: int = 0, protocol: int = 0, kind: int = 0
    ) -> list[Route]:
        """The routes of `family`; those of `table`, `protocol` and type `kind` (RTN_*)
        only, where given (0: any).  A kernel with strict checking of dump requests
        (NETLINK_GET_STRICT_CHK, Linux 4.20) filters them itself, so a full routing
        table (BGP) is not copied over to be thrown away; else they are filtered here."""
        filters = bool(table or protocol or kind)
        body = _RTMSG.pack(family, 0, 0, 0, table if table < 256 else 252, protocol, 0, kind, 0)
        if table:
            body += _u32(RTA_TABLE, table)
        strict = filters and self._set_strict(True)
        try:
            raws = list(self._dump(RTM_GETROUTE, body if strict else body[: _RTMSG.size]))
        finally:
            if strict:
                self._set_strict(False)
        self.kernel_filtered = bool(raws) and all(
            NLMSGHDR.unpack_from(raw)[2] & NLM_F_DUMP_FILTERED for raw in raws
        )
        parsed = (_parse_route(raw) for raw in raws)
        return [
            route
            for route in parsed
            if route is not None
            and (not table or route.table == table)
            and (not protocol or route.protocol == protocol)
            and (not kind or route.kind == kind)
        ]

    def _set_strict(self, on: bool) -> bool:
        """Strict checking of get/dump requests on or off; False: the kernel has none."""
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, int(on))
        except OSError:
            return False
        return True

    def lookup_route(self, destination: str) -> Route | None:
        """The routing table entry the kernel uses toward `destination` (`ip route get
        DESTINATION fibmatch`: one request, no dump); None when nothing routes it."""
        family = socket.AF_INET6 if ":" in destination else socket.AF_INET
        packed = socket.inet_pton(family, destination)
        body = _RTMSG.pack(family, len(packed) * 8, 0, 0, 0, 0, 0, 0, RTM_F_FIB_MATCH)
        body += _attr(RTA_DST, packed)
        seq = self._next_seq()
        self._send(NLMSGHDR.pack(NLMSGHDR.size + len(body), RTM_GETROUTE, NLM_F_REQUEST,
                                  seq, 0) + body)  # fmt: skip
        while True:
            for msg_type, msg_seq, raw in self._receive():
                if msg_seq != seq:
                    continue
                if msg_type == NLMSG_ERROR:
                    (code,) = _NLMSGERR.unpack_from(raw, NLMSGHDR.size)
                    if -code in _NO_ROUTE:
                        return None
                    raise NetlinkError(-code, os.strerror(-code))
                if msg_type == RTM_NEWROUTE:
                    return _parse_route(raw)

    def rules(self, family: int) -> list[Rule]:
        body = _FIB_RULE_HDR.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        return [_parse_rule(raw) for raw in self._dump(RTM_GETRULE, body)]

    def _send(self, data: bytes) -> None:
        try:
            self._sock.send(data)
        except OSError as error:
            raise _socket_error("sending", error) from None

    def _receive(self) -> Iterator[tuple[int, int, bytes]]:
        try:
            data = self._sock.recv(_RECV_SIZE)
        except OSError as error:
            raise _socket_error("receiving", error) from None
        yield from parse_messages(data)
