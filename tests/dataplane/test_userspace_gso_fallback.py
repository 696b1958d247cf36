"""When the kernel refuses a GSO packet: a UDP GSO send too large for one path's MTU
does not switch UDP GSO off for all, and a UDP GSO write the TUN refuses (Linux < 6.2)
loses no datagram.  No root: a recording socket and a recording writev."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from core.dataplane.model import InterfaceSpec, if_id_for
from core.dataplane.userspace.backend import UserspaceDataplane, _Interface
from core.dataplane.userspace.gro import GSO_UDP_L4, PLAIN
from tests.dataplane.test_gro import datagram
from tests.dataplane.test_userspace_segments import (
    DESTINATION,
    RecordingSocket,
    backend_with,
    send_batch,
)

PATH_MTU = 1200
HEADERS = 28  # IPv4 + UDP


class MtuSocket(RecordingSocket):
    """A UDP GSO send fails with EINVAL when its segments do not fit PATH_MTU, as
    udp_send_skb does; `refuse_all` makes every one fail so."""

    family = socket.AF_INET

    def __init__(self, refuse_all: bool = False) -> None:
        super().__init__()
        self.refuse_all = refuse_all
        self.gso_attempts: list[int] = []  # segment size of each UDP GSO send tried

    def sendmsg(
        self, buffers: list[bytes], ancillary: list[tuple[int, int, bytes]], flags: int,
        destination: tuple[str, int],
    ) -> int:  # fmt: skip
        size = int.from_bytes(ancillary[0][2], "little")
        self.gso_attempts.append(size)
        if self.refuse_all or size + HEADERS > PATH_MTU:
            raise OSError(errno.EINVAL, "Invalid argument")
        return super().sendmsg(buffers, ancillary, flags, destination)


def path_mtu(sock: Any, destination: tuple[str, int]) -> int:
    assert destination == DESTINATION
    return PATH_MTU


def test_a_run_too_large_for_the_path_goes_singly_and_gso_stays_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(UserspaceDataplane, "_path_mtu", staticmethod(path_mtu))
    sock = MtuSocket()
    backend, interface = backend_with(sock)
    large = send_batch(backend, interface, [1400] * 5)
    assert sock.sent == [(segment, None) for segment in large]  # sent after all, singly
    assert backend._udp_segmentation and sock.gso_attempts == [1400]
    sock.sent.clear()
    send_batch(backend, interface, [100] * 5 + [1400] * 3)
    assert [(len(data), size) for data, size in sock.sent] == [(500, 100)] + [(1400, None)] * 3
    assert sock.gso_attempts == [1400, 100]  # the path's limit is known: no failing try
    assert (interface.tx_packets, interface.tx_errors) == (13, 0)


def test_einval_for_segments_that_fit_switches_gso_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(UserspaceDataplane, "_path_mtu", staticmethod(path_mtu))
    sock = MtuSocket(refuse_all=True)
    backend, interface = backend_with(sock)
    small = send_batch(backend, interface, [100] * 5)
    assert sock.sent == [(segment, None) for segment in small]
    assert not backend._udp_segmentation and interface.tx_errors == 0


def test_the_path_mtu_comes_from_the_route() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        lo_mtu = int(Path("/sys/class/net/lo/mtu").read_text())
        assert UserspaceDataplane._path_mtu(sock, ("127.0.0.1", 4500)) == min(lo_mtu, 0xFFFF)
        sock.close()
        assert UserspaceDataplane._path_mtu(sock, ("127.0.0.1", 4500)) is None


def test_a_refused_udp_gso_write_writes_the_datagrams_again_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written: list[tuple[bytes, bytes]] = []

    def writev(fd: int, buffers: tuple[bytes, bytes]) -> int:
        vnet_header, packet = buffers
        if vnet_header[1] == GSO_UDP_L4:
            raise OSError(errno.EINVAL, "Invalid argument")  # a kernel before 6.2
        written.append((vnet_header, packet))
        return len(vnet_header) + len(packet)

    monkeypatch.setattr(os, "writev", writev)  # as the backend calls it
    backend = UserspaceDataplane()
    interface = _Interface(InterfaceSpec(name="ipsec1", if_id=if_id_for(1)), -1, 1)
    backend._interfaces["ipsec1"] = interface
    first = [datagram(bytes([n]) * 100) for n in range(40)]
    second = [datagram(bytes([n]) * 100, sport=40001) for n in range(30)]
    backend._pending = {interface: first + second}
    backend._flush()
    assert written == [(PLAIN, packet) for packet in first + second]
    assert (interface.rx_packets, interface.rx_errors) == (70, 0)
    assert not backend._udp_gso
