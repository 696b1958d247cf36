"""A small blocking NETLINK_XFRM socket: requests with ACK, dumps, multicast events.

A plain `socket.socket` keeps this simple and predictable; pyroute2 is used only for
the message classes (messages.py).  A socket opened inside a named network namespace stays
bound to it, so callers may use it from any thread afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pyroute2.netlink import NLM_F_DUMP, nlmsg

from core.dataplane.nlframes import NLMSGHDR, parse_messages
from core.dataplane.xfrm import messages as m
from core.dataplane.xfrm.requests import Request

NETLINK_XFRM = 6
NLMSG_ERROR = 2
NLMSG_DONE = 3
_CLONE_NEWNET = 0x40000000
_RECV_SIZE = 1 << 16

T = TypeVar("T")


class NetlinkError(OSError):
    """The kernel answered a request with an error (errno and its text)."""


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def in_netns(netns: str | None, make: Callable[[], T]) -> T:
    """Run `make` with this thread inside the named namespace (/run/netns/NAME), then return.

    setns(2) changes only the calling thread; objects bound to a namespace at creation
    (sockets) stay there."""
    if netns is None:
        return make()
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            return make()
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def decode(msg_type: int, raw: bytes) -> nlmsg | None:
    """A decoded XFRM message, or None for types we do not model."""
    cls = m.MESSAGE_CLASSES.get(msg_type)
    if cls is None:
        return None
    msg = cls(raw)
    msg.decode()
    return msg


class XfrmSocket:
    """One NETLINK_XFRM socket; thread-safe for requests (one at a time)."""

    def __init__(
        self, netns: str | None = None, groups: int = 0, *, sock: socket.socket | None = None
    ) -> None:
        """A new bound socket, or `sock` as it is (tests pass a scripted one)."""

        def make() -> socket.socket:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)

        if sock is None:
            sock = in_netns(netns, make)
            sock.bind((0, groups))
        self._sock = sock
        self._lock = threading.Lock()
        self._seq = itertools.count(1)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def request(self, request: Request) -> list[Any]:
        """Send one request; return the decoded replies (empty for a bare ACK).

        Raises NetlinkError when the kernel answers with an error."""
        with self._lock:
            seq = next(self._seq)
            self._sock.send(request.encode(seq=seq))
            return self._collect(seq, dump=bool(request.flags & NLM_F_DUMP))

    def _collect(self, seq: int, dump: bool) -> list[Any]:
        replies: list[Any] = []
        while True:
            data = self._sock.recv(_RECV_SIZE)
            for msg_type, msg_seq, raw in parse_messages(data):
                if msg_seq != seq:
                    continue  # a stale answer to an earlier, abandoned request
                if msg_type == NLMSG_DONE:
                    return replies
                if msg_type == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", raw, NLMSGHDR.size)
                    if code:
                        raise NetlinkError(-code, os.strerror(-code))
                    return replies
                msg = decode(msg_type, raw)
                if msg is not None:
                    replies.append(msg)
                if not dump:
                    return replies

    def receive_events(self) -> list[Any]:
        """Non-blocking read of queued multicast messages (EXPIRE, ACQUIRE, ...)."""
        events: list[Any] = []
        while True:
            try:
                data = self._sock.recv(_RECV_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return events
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # overrun: events were lost, keep going
                    continue
                raise
            for msg_type, _seq, raw in parse_messages(data):
                msg = decode(msg_type, raw)
                if msg is not None:
                    events.append((msg_type, msg))


@contextlib.contextmanager
def xfrm_socket(netns: str | None = None, groups: int = 0) -> Iterator[XfrmSocket]:
    sock = XfrmSocket(netns, groups)
    try:
        yield sock
    finally:
        sock.close()
