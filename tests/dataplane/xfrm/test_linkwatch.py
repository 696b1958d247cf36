"""linkwatch.py: RTM_NEWLINK parsing (no root), and the socket on a real kernel (root)."""

from __future__ import annotations

import errno
import os
import struct
import time

import pytest

from core.dataplane.nlframes import NLMSGHDR
from core.dataplane.xfrm.linkwatch import EVERY_DEVICE, RTM_NEWLINK, LinkWatch, new_link_names
from tests.integration.netlab import scratch_namespace, sh

RTM_DELLINK, IFLA_MTU, IFLA_IFNAME = 17, 4, 3


def attribute(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + bytes(-len(raw) % 4)


def link_message(msg_type: int, *attributes: bytes) -> bytes:
    body = struct.pack("=BxHiII", 0, 1, 7, 0, 0) + b"".join(attributes)
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type, 0, 0, 0) + body


def test_names_of_new_links_are_read_after_other_attributes() -> None:
    datagram = link_message(RTM_NEWLINK, attribute(IFLA_MTU, struct.pack("=I", 1500)),
                            attribute(IFLA_IFNAME, b"wwan0\0")) + \
        link_message(RTM_DELLINK, attribute(IFLA_IFNAME, b"gone0\0")) + \
        link_message(RTM_NEWLINK, attribute(IFLA_IFNAME, b"outer1\0"))  # fmt: skip
    assert new_link_names(datagram) == {"wwan0", "outer1"}


@pytest.mark.parametrize("cut", [1, 5, 9, 20, 30])
def test_a_cut_or_damaged_message_yields_no_false_names(cut: int) -> None:
    whole = link_message(RTM_NEWLINK, attribute(IFLA_MTU, bytes(4)),
                         attribute(IFLA_IFNAME, b"wwan0\0"))  # fmt: skip
    assert new_link_names(whole[:cut]) == set()  # the header's length no longer fits
    damaged = bytearray(whole)
    struct.pack_into("=H", damaged, NLMSGHDR.size + 16, 2)  # an attribute length < 4
    assert new_link_names(bytes(damaged)) == set()


def test_a_name_attribute_running_past_its_message_is_not_read() -> None:
    attributes = attribute(IFLA_MTU, bytes(4)) + attribute(IFLA_IFNAME, b"wwan0\0")
    message = bytearray(link_message(RTM_NEWLINK, attributes))
    name_at = NLMSGHDR.size + 16 + 8  # after the ifinfomsg and the MTU attribute
    struct.pack_into("=H", message, name_at, 64)  # the message itself ends sooner
    assert new_link_names(bytes(message)) == set()


class Overrun:
    """A socket whose receive buffer overran once: ENOBUFS, then one message, then empty."""

    def __init__(self) -> None:
        self.answers: list[bytes | OSError] = [
            OSError(errno.ENOBUFS, "No buffer space available"),
            link_message(RTM_NEWLINK, attribute(IFLA_IFNAME, b"wwan0\0")),
        ]

    def recv(self, size: int) -> bytes:
        if not self.answers:
            raise BlockingIOError
        answer = self.answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer


def test_lost_events_are_reported_as_every_device() -> None:
    watch = LinkWatch.__new__(LinkWatch)
    watch._sock = Overrun()  # type: ignore[assignment]
    assert watch.drain() == {EVERY_DEVICE, "wwan0"}


@pytest.mark.root
@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
def test_a_device_created_in_the_namespace_is_heard_of() -> None:
    with scratch_namespace("rblw") as namespace:
        watch = LinkWatch(namespace)
        try:
            assert watch.drain() == set()
            sh("ip", "-n", namespace, "link", "add", "new0", "type", "veth", "peer", "name", "new1")
            deadline = time.monotonic() + 5
            heard: set[str] = set()
            while not {"new0", "new1"} <= heard and time.monotonic() < deadline:
                heard |= watch.drain()
                time.sleep(0.02)
            assert {"new0", "new1"} <= heard
        finally:
            watch.close()
